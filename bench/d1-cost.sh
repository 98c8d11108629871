#!/usr/bin/env bash
# What an ask costs D1, per path, under `wrangler dev` with local D1 (#13): round trips, rows read
# and rows written, summed from D1's own per-statement `meta` (the Worker logs them with
# LOG_D1_ROWS=1), and the asks a day D1's free tier then allows. Also the chain's added latency
# over the fake Groq in the same run. Prints a markdown table and writes bench/results/d1-cost.md.
# Needs `make build` first. ASKS (20) asks per path.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
cargo build --quiet --release --example fake_upstream

"$WRANGLER" d1 migrations apply DB --local --persist-to "$work/d1" >/dev/null

fake() { # fake NAME KIND: a fake upstream whose mode is read from $work/NAME.mode
  echo ok >"$work/$1.mode"
  setsid target/release/examples/fake_upstream "$2" 5 --mode-file "$work/$1.mode" >"$work/$1.url" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 1 50); do [ -s "$work/$1.url" ] && break; sleep 0.1; done
}
fake groq groq
fake ollama ollama

# Groq's minute still goes through the binding (no D1 row), opened up for more than 30 asks a minute.
unlimited_groq_config
port=$(free_port)
setsid "$WRANGLER" dev --config "$bench_config" --ip 127.0.0.1 --port "$port" --inspector-port "$(free_port)" \
  --show-interactive-dev-session=false --log-level log --persist-to "$work/d1" \
  --var LOG_D1_ROWS:1 --var GROQ_API_KEY:bench --var "GROQ_BASE_URL:$(cat "$work/groq.url")" \
  --var "OLLAMA_URL:$(cat "$work/ollama.url")" --var "ASK_LIMITS:3/1s,20/10s,100/60s" \
  --var MEMORY_TTL_S:3600 --var ASKER_KEY:bench-asker-key-0123 >"$work/edge.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done

mkdir -p bench/results
python3 bench/d1_cost.py "http://127.0.0.1:$port" "$(cat "$work/groq.url")" "$work/edge.log" \
  "$work/groq.mode" "$work/ollama.mode" "${ASKS:-20}" | tee bench/results/d1-cost.md
