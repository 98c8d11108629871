#!/usr/bin/env bash
# Fails when a wasm file, gzipped (-9, as a CDN would serve it), is over a budget in bytes.
#   usage: check-wasm-size.sh FILE BUDGET_BYTES
# Writes the figures to the GitHub job summary when there is one.
set -euo pipefail
file="${1:?usage: check-wasm-size.sh FILE BUDGET_BYTES}"
budget="${2:?usage: check-wasm-size.sh FILE BUDGET_BYTES}"
[ -f "$file" ] || { echo "check-wasm-size: $file does not exist (build it first: make build)" >&2; exit 2; }
raw=$(wc -c < "$file")
gz=$(gzip -9 -c "$file" | wc -c)
line="$file: ${raw} bytes raw, ${gz} bytes gzipped, budget ${budget} bytes gzipped"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    printf '### Wasm size\n%s\n' "$line" >> "$GITHUB_STEP_SUMMARY"
fi
if [ "$gz" -gt "$budget" ]; then
    echo "FAIL $line (over by $((gz - budget)) bytes)" >&2
    exit 1
fi
echo "PASS $line"
