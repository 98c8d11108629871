#!/usr/bin/env bash
# Builds what running the edge on Spin needs, into target/spin/:
#   ouija_edge.wasm  the component (release, wasm32-wasip2, feature `spin`), rebuilt by cargo as needed;
#   spin-host        the wasmtime test host, built once per version of its sources and cached in
#                    $OUIJA_TOOLS (default ~/.cache/ouija-tools), so `cargo clean` and reruns skip it.
# `spin-host/build.sh lint` instead runs clippy on spin-host and its unit tests, also once per
# version of its sources.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${OUIJA_TOOLS:-$HOME/.cache/ouija-tools}"
OUT=target/spin
mkdir -p "$OUT" "$TOOLS/bin"

# The host's identity: its sources, its resolved dependencies, the spin-sdk whose WIT it binds
# (build.rs) and the compiler, not where the clone lives (cargo tree's local paths are dropped).
# Dependency changes elsewhere in the workspace do not rebuild it.
key=$( { cat spin-host/Cargo.toml spin-host/build.rs spin-host/src/*.rs
         cargo tree --locked -p spin-host --prefix none | sed 's/ (\/[^)]*)$//' | sort -u
         grep -A1 '^name = "spin-sdk"$' Cargo.lock; rustc -V; } | sha256sum | cut -c1-16)
cached="$TOOLS/bin/spin-host-$key"

if [[ "${1:-}" == lint ]]; then
    if [[ ! -e "$cached.checked" ]]; then
        cargo clippy --locked --quiet -p spin-host --profile spin-host --all-targets -- -D warnings
        cargo test --locked --quiet -p spin-host --profile spin-host
        touch "$cached.checked"
    fi
    exit 0
fi

cargo build --locked --quiet --release --target wasm32-wasip2 --features spin --lib
cp target/wasm32-wasip2/release/ouija_edge.wasm "$OUT/ouija_edge.wasm"

if [[ ! -x "$cached" ]]; then
    echo "building spin-host (wasmtime: once per change of its sources, ~10 min on 2 cores)" >&2
    cargo build --locked --quiet -p spin-host --profile spin-host
    find "$TOOLS/bin" -name 'spin-host-*' ! -name "spin-host-$key*" -delete   # older builds
    cp target/spin-host/spin-host "$cached.tmp"
    mv "$cached.tmp" "$cached"
fi
ln -sf "$cached" "$OUT/spin-host"
