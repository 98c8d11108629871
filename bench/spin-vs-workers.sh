#!/usr/bin/env bash
# Benchmarks the Spin component under spin-host next to the Worker under wrangler dev, in one run
# so the numbers are comparable: asks/s and p50/p99 of the sqlite-only path (no keys), with 16
# connections and with 1, and both wasm files' sizes, raw and gzipped.
# Prints a markdown table and writes it to bench/results/spin.md. Needs `make build` first.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
bash spin-host/build.sh

wait_health() {
  for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$2/health" && return 0; sleep 0.1; done
  echo "$1 did not start:"; cat "$work/$1.log"; exit 1
}

# run URL CONNECTIONS: prints "req/s p50 p99 non-2xx".
run() {
  local out rps p50 p99 bad
  out=$(wrk -t"$(( $2 > 1 ? 2 : 1 ))" -c"$2" -d"$DURATION" --latency -s bench/ask.lua "$1")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$rps $p50 $p99 ${bad:-0}"
}

"$WRANGLER" d1 migrations apply DB --local --persist-to "$work/d1" >/dev/null
workers_port=$(free_port); spin_port=$(free_port)
# wrk asks the same question from one address: no per-asker limit, no memory, on both.
setsid "$WRANGLER" dev --ip 127.0.0.1 --port "$workers_port" --inspector-port "$(free_port)" \
  --show-interactive-dev-session=false --log-level warn --persist-to "$work/d1" \
  --var ASK_LIMITS:off --var MEMORY_TTL_S:0 >"$work/workers.log" 2>&1 &
pids+=($!)
SPIN_VARIABLE_ASK_LIMITS=off SPIN_VARIABLE_MEMORY_TTL_S=0 setsid target/spin/spin-host --listen "127.0.0.1:$spin_port" --sqlite "$work/spin.db" \
  --migrations d1-migrations target/spin/ouija_edge.wasm >"$work/spin.log" 2>&1 &
pids+=($!)
wait_health workers "$workers_port"
wait_health spin "$spin_port"

workers="http://127.0.0.1:$workers_port/api/ouija"
spin="http://127.0.0.1:$spin_port/api/ouija"
echo "warming up..."
wrk -t1 -c4 -d2s -s bench/ask.lua "$workers" >/dev/null
wrk -t1 -c4 -d2s -s bench/ask.lua "$spin" >/dev/null

read -r w16_rps w16_p50 w16_p99 w16_bad < <(run "$workers" 16)
read -r s16_rps s16_p50 s16_p99 s16_bad < <(run "$spin" 16)
read -r w1_rps w1_p50 w1_p99 w1_bad < <(run "$workers" 1)
read -r s1_rps s1_p50 s1_p99 s1_bad < <(run "$spin" 1)
spin_sources=$(curl -s "http://127.0.0.1:$spin_port/dashboard" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("by_source", d))')

size() { echo "$(stat -c %s "$1") bytes raw, $(gzip -9 -c "$1" | wc -c) bytes gzipped"; }

mkdir -p bench/results
{
  echo "Spin vs Workers, sqlite path (no keys), $(date -u +%Y-%m-%d), $(nproc) cores, wrk -d$DURATION;"
  echo "spin-host (wasmtime $(grep -A1 '^name = "wasmtime"$' Cargo.lock | awk -F'"' '/version/ {print $2}'), one instance per request) vs wrangler $("$WRANGLER" --version 2>/dev/null | tail -1) (workerd, local D1)"
  echo
  echo "| runtime | connections | asks/s | p50 | p99 | non-2xx |"
  echo "|---|---|---|---|---|---|"
  echo "| Workers (wrangler dev) | 16 | $w16_rps | $w16_p50 | $w16_p99 | $w16_bad |"
  echo "| Spin (spin-host) | 16 | $s16_rps | $s16_p50 | $s16_p99 | $s16_bad |"
  echo "| Workers (wrangler dev) | 1 | $w1_rps | $w1_p50 | $w1_p99 | $w1_bad |"
  echo "| Spin (spin-host) | 1 | $s1_rps | $s1_p50 | $s1_p99 | $s1_bad |"
  echo
  echo "Spin run sources: $spin_sources"
  echo
  echo "Spin component (target/spin/ouija_edge.wasm): $(size target/spin/ouija_edge.wasm)."
  echo "Worker wasm (build/worker/index_bg.wasm): $(size build/worker/index_bg.wasm)."
} | tee bench/results/spin.md
