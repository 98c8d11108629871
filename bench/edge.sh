#!/usr/bin/env bash
# Benchmarks the edge Worker on loopback, all in one run so the numbers are comparable:
#   1. asks/s and p50/p99 of the sqlite-only path vs a hello-world Worker in the same workerd;
#   2. the chain's added latency over a fake Groq's own latency (direct vs through the edge);
#   3. the release wasm's size, raw and gzipped.
# Prints a markdown table and writes it to bench/results/edge.md. Needs `make build` first.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-16}"
MANY=$CONNECTIONS
GROQ_LATENCY_MS="${GROQ_LATENCY_MS:-20}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
cargo build --quiet --release --example fake_upstream

# start NAME PORT ARGS...: a wrangler dev in its own process group, waited for.
start() {
  local name=$1 port=$2; shift 2
  setsid "$WRANGLER" dev --ip 127.0.0.1 --port "$port" --inspector-port "$(free_port)" \
    --show-interactive-dev-session=false --log-level warn "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do curl -fs -o /dev/null "http://127.0.0.1:$port/" -X GET 2>/dev/null && return 0
    curl -s -o /dev/null "http://127.0.0.1:$port/health" && return 0; sleep 0.1; done
  echo "$name did not start:"; cat "$work/$name.log"; exit 1
}

# run LABEL URL [wrk args...]: prints "req/s p50 p99" in ms.
run() {
  local out
  out=$(wrk -t"$(( CONNECTIONS > 1 ? 2 : 1 ))" -c"$CONNECTIONS" -d"$DURATION" --latency "${@:2}" "$1")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local non2xx
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$rps ${p50} ${p99} ${non2xx:-0}"
}

"$WRANGLER" d1 migrations apply DB --local --persist-to "$work/d1" >/dev/null

edge_port=$(free_port); hello_port=$(free_port); chain_port=$(free_port)
# wrk asks the same question from one address: no per-asker limit, no memory (bench/d1-cost.sh
# measures those).
plain=(--var ASK_LIMITS:off --var MEMORY_TTL_S:0)
start edge "$edge_port" --persist-to "$work/d1" "${plain[@]}"
start hello "$hello_port" --config bench/hello-worker/wrangler.toml

setsid target/release/examples/fake_upstream groq "$GROQ_LATENCY_MS" >"$work/groq.url" 2>/dev/null &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$work/groq.url" ] && break; sleep 0.1; done
groq_url=$(cat "$work/groq.url")
cp -r "$work/d1" "$work/d1-chain"
unlimited_groq_config
start chain "$chain_port" --config "$bench_config" --persist-to "$work/d1-chain" "${plain[@]}" --var GROQ_API_KEY:bench --var "GROQ_BASE_URL:$groq_url" \
  --var GROQ_RPM:100000 --var OLLAMA_URL:

echo "warming up..."
wrk -t1 -c4 -d2s -s bench/ask.lua "http://127.0.0.1:$edge_port/api/ouija" >/dev/null
wrk -t1 -c4 -d2s "http://127.0.0.1:$hello_port/" >/dev/null
wrk -t1 -c4 -d2s -s bench/ask.lua "http://127.0.0.1:$chain_port/api/ouija" >/dev/null

read -r h_rps h_p50 h_p99 h_bad < <(run hello "http://127.0.0.1:$hello_port/")
read -r s_rps s_p50 s_p99 s_bad < <(run sqlite "http://127.0.0.1:$edge_port/api/ouija" -s bench/ask.lua)
# One connection: the chain's added latency, not queueing in front of the fake.
CONNECTIONS=1
read -r g_rps g_p50 g_p99 g_bad < <(run groq-direct "$groq_url/chat/completions" -s bench/groq-direct.lua)
read -r c_rps c_p50 c_p99 c_bad < <(run chain "http://127.0.0.1:$chain_port/api/ouija" -s bench/ask.lua)
read -r s1_rps s1_p50 s1_p99 s1_bad < <(run sqlite-single "http://127.0.0.1:$edge_port/api/ouija" -s bench/ask.lua)
sources=$(curl -s "http://127.0.0.1:$chain_port/dashboard" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("by_source", d))')

wasm=build/worker/index_bg.wasm
raw=$(stat -c %s "$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)

mkdir -p bench/results
{
  echo "Edge benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, wrk -d$DURATION with $MANY connections unless noted, wrangler $("$WRANGLER" --version 2>/dev/null | tail -1)"
  echo
  echo "| what | req/s | p50 | p99 | non-2xx |"
  echo "|---|---|---|---|---|"
  echo "| hello-world Worker (JS, same workerd) | $h_rps | $h_p50 | $h_p99 | $h_bad |"
  echo "| edge ask, sqlite path (no keys) | $s_rps | $s_p50 | $s_p99 | $s_bad |"
  echo "| edge ask, sqlite path, 1 connection | $s1_rps | $s1_p50 | $s1_p99 | $s1_bad |"
  echo "| fake Groq direct (${GROQ_LATENCY_MS} ms think time), 1 connection | $g_rps | $g_p50 | $g_p99 | $g_bad |"
  echo "| edge ask via fake Groq, 1 connection | $c_rps | $c_p50 | $c_p99 | $c_bad |"
  echo
  echo "Chain run sources: $sources"
  echo
  echo "Release wasm: $raw bytes raw, $gz bytes gzipped (goal: under 400 KB gzipped)."
} | tee bench/results/edge.md
