#!/usr/bin/env bash
# Writes wrangler.toml for the tests' `wrangler dev --config OUT`: the same Worker, bindings and
# variables, without the [build] section and with its paths made absolute.
#
# Why: with a custom build, wrangler 4.86 builds once at start and again when its watcher on
# watch_dir is ready, so every `wrangler dev` starts workerd twice; now and then the second start
# finds the first still holding the port ("Address already in use") and the runtime never comes
# up. Tests build the Worker themselves first and never change src/ under a running server, so
# they need no watcher. `make dev` keeps the build and the watcher.
#
# Usage: bash scripts/wrangler-test-config.sh OUT
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: wrangler-test-config.sh OUT}"
mkdir -p "$(dirname "$out")"
tmp="$(mktemp "$out.XXXXXX")"
awk -v root="$root" '
  /^\[/ { skip = ($0 == "[build]") }
  skip { next }
  /^(main|directory|migrations_dir) = "/ { i = index($0, "\""); $0 = substr($0, 1, i) root "/" substr($0, i + 1) }
  { print }
' "$root/wrangler.toml" >"$tmp"
grep -q '^main = "/' "$tmp" || { echo "wrangler-test-config.sh: no main in wrangler.toml" >&2; exit 1; }
if grep -q '^\[build\]' "$tmp"; then echo "wrangler-test-config.sh: [build] left in" >&2; exit 1; fi
# Renamed into place: test processes running side by side each write the same content.
mv -f "$tmp" "$out"
