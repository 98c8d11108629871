#!/bin/sh
# Installs the workflow linters (.github/requirements.txt) into a venv outside the clone, once;
# skipped while the venv matches the requirements file.
set -eu
cd "$(dirname "$0")/.."
VENV="${CI_VENV:-$HOME/.cache/ouija-tools/ci-venv}"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
echo "tools: installing .github/requirements.txt into $VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
echo "$want" > "$VENV/.requirements.sha256"
