#!/usr/bin/env bash
# Benchmarks the Spin component under spin-host, on Spin's SQLite and on its key-value store
# (STORE=key_value), next to the Worker under wrangler dev, in one run so the numbers are
# comparable: asks/s and p50/p99 of the canned-answer path (no keys), with 16 connections and with
# 1, and both wasm files' sizes, raw and gzipped.
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

# run URL CONNECTIONS NAME: prints "req/s p50 p99 non-2xx"; wrk's output kept in $work/wrk-NAME.txt.
run() {
  local out rps p50 p99 bad
  out=$(wrk -t"$(( $2 > 1 ? 2 : 1 ))" -c"$2" -d"$DURATION" --latency -s bench/ask.lua "$1")
  echo "$out" >>"$work/wrk-$3.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$rps $p50 $p99 ${bad:-0}"
}

"$WRANGLER" d1 migrations apply DB --local --persist-to "$work/d1" >/dev/null
workers_port=$(free_port); spin_port=$(free_port); kv_port=$(free_port)
# wrk asks the same question from one address: no per-asker limit, no memory, on both.
setsid "$WRANGLER" dev --ip 127.0.0.1 --port "$workers_port" --inspector-port "$(free_port)" \
  --show-interactive-dev-session=false --log-level warn --persist-to "$work/d1" \
  --var ASK_LIMITS:off --var MEMORY_TTL_S:0 >"$work/workers.log" 2>&1 &
pids+=($!)
SPIN_VARIABLE_ASK_LIMITS=off SPIN_VARIABLE_MEMORY_TTL_S=0 setsid target/spin/spin-host --listen "127.0.0.1:$spin_port" --sqlite "$work/spin.db" \
  --migrations d1-migrations target/spin/ouija_edge.wasm >"$work/spin.log" 2>&1 &
pids+=($!)
SPIN_VARIABLE_STORE=key_value SPIN_VARIABLE_ASK_LIMITS=off SPIN_VARIABLE_MEMORY_TTL_S=0 setsid target/spin/spin-host \
  --listen "127.0.0.1:$kv_port" --key-value "$work/spin-kv.db" target/spin/ouija_edge.wasm >"$work/spin-kv.log" 2>&1 &
pids+=($!)
wait_health workers "$workers_port"
wait_health spin "$spin_port"
wait_health spin-kv "$kv_port"

workers="http://127.0.0.1:$workers_port/api/ouija"
spin="http://127.0.0.1:$spin_port/api/ouija"
kv="http://127.0.0.1:$kv_port/api/ouija"
echo "warming up..."
wrk -t1 -c4 -d2s -s bench/ask.lua "$workers" >>"$work/wrk-workers.txt"
wrk -t1 -c4 -d2s -s bench/ask.lua "$spin" >>"$work/wrk-spin.txt"
wrk -t1 -c4 -d2s -s bench/ask.lua "$kv" >>"$work/wrk-kv.txt"

read -r w16_rps w16_p50 w16_p99 w16_bad < <(run "$workers" 16 workers)
read -r s16_rps s16_p50 s16_p99 s16_bad < <(run "$spin" 16 spin)
read -r k16_rps k16_p50 k16_p99 k16_bad < <(run "$kv" 16 kv)
read -r w1_rps w1_p50 w1_p99 w1_bad < <(run "$workers" 1 workers)
read -r s1_rps s1_p50 s1_p99 s1_bad < <(run "$spin" 1 spin)
read -r k1_rps k1_p50 k1_p99 k1_bad < <(run "$kv" 1 kv)
sources() { curl -s "http://127.0.0.1:$1/dashboard" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("by_source", d))'; }
spin_sources=$(sources "$spin_port")
kv_sources=$(sources "$kv_port")
# Every request wrk made to a runtime, warm-up included (each answered 200: non-2xx is 0 above).
made() { awk '/requests in/ {n += $1} END {print n}' "$work/wrk-$1.txt"; }
spin_made=$(made spin); kv_made=$(made kv)

size() { echo "$(stat -c %s "$1") bytes raw, $(gzip -9 -c "$1" | wc -c) bytes gzipped"; }

mkdir -p bench/results
{
  echo "Spin vs Workers, canned-answer path (no keys), $(date -u +%Y-%m-%d), $(nproc) cores, wrk -d$DURATION;"
  echo "spin-host (wasmtime $(grep -A1 '^name = "wasmtime"$' Cargo.lock | awk -F'"' '/version/ {print $2}'), one instance per request) vs wrangler $("$WRANGLER" --version 2>/dev/null | tail -1) (workerd, local D1)"
  echo
  echo "| runtime | connections | asks/s | p50 | p99 | non-2xx |"
  echo "|---|---|---|---|---|---|"
  echo "| Workers (wrangler dev) | 16 | $w16_rps | $w16_p50 | $w16_p99 | $w16_bad |"
  echo "| Spin (spin-host, SQLite) | 16 | $s16_rps | $s16_p50 | $s16_p99 | $s16_bad |"
  echo "| Spin (spin-host, key-value) | 16 | $k16_rps | $k16_p50 | $k16_p99 | $k16_bad |"
  echo "| Workers (wrangler dev) | 1 | $w1_rps | $w1_p50 | $w1_p99 | $w1_bad |"
  echo "| Spin (spin-host, SQLite) | 1 | $s1_rps | $s1_p50 | $s1_p99 | $s1_bad |"
  echo "| Spin (spin-host, key-value) | 1 | $k1_rps | $k1_p50 | $k1_p99 | $k1_bad |"
  echo
  echo "Spin run sources (SQLite), $spin_made asks made: $spin_sources"
  echo "Spin run sources (key-value; racing read-modify-writes of the totals lose counts, see DEPLOY.md), $kv_made asks made: $kv_sources"
  echo
  echo "Spin component (target/spin/ouija_edge.wasm): $(size target/spin/ouija_edge.wasm)."
  echo "Worker wasm (build/worker/index_bg.wasm): $(size build/worker/index_bg.wasm)."
} | tee bench/results/spin.md
