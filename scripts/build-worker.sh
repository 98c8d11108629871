#!/usr/bin/env bash
# Builds the Cloudflare Worker into build/: the release wasm, wasm-bindgen's JS glue (module
# target, as worker-build does) and our small entry shim. wrangler bundles build/index.js itself,
# so neither worker-build nor a downloaded esbuild is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests build once and then start many `wrangler dev`s: each would otherwise rebuild.
if [ "${OUIJA_SKIP_BUILD:-}" = 1 ] && [ -f build/index.js ]; then exit 0; fi

TOOLS="${OUIJA_TOOLS:-$HOME/.cache/ouija-tools}"
WASM_BINDGEN="${WASM_BINDGEN_BIN:-$TOOLS/bin/wasm-bindgen}"

cargo build --release --target wasm32-unknown-unknown --features cloudflare --quiet
rm -rf build/worker && mkdir -p build/worker
"$WASM_BINDGEN" target/wasm32-unknown-unknown/release/ouija_edge.wasm \
  --out-dir build/worker --out-name index --target module --no-typescript \
  --experimental-reset-state-function
# workerd imports compiled wasm modules with a plain import (worker-build makes the same edit).
sed -i 's/^import source /import /' build/worker/index.js
cp src/platform/cloudflare-entry.mjs build/index.js
