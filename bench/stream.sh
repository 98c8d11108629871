#!/usr/bin/env bash
# Streamed answers (#12) under `wrangler dev`, in one run: the time to first token through the edge
# next to the fake's own, on the Groq path and on the Ollama path (bench/stream_ttft.py), and in
# headless Chromium the time from Ask to the planchette's first move, streamed vs the JSON ask
# (bench/stream_board.mjs). The fakes take 300 ms to the first token, then 30 words 40 ms apart.
# Three edges, limits and memory off: one with Groq, one whose Groq answers whole when the stream
# would have ended (for the JSON ask), one without a Groq key (so Ollama answers).
# Prints markdown tables and writes bench/results/stream.md. Needs `make build` and
# `make page-tools` first. TTFT_ASKS (30) asks per series, BOARD_ASKS (10) per way on the board.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
cargo build --quiet --release --example fake_upstream

answer="Yes, the old moon says so, and the stars agree: wait one more day, keep your word, \
and you will see it come to pass before the next full moon."
[ "$(wc -w <<<"$answer")" -eq 30 ] || { echo "the fakes' answer is not 30 words"; exit 1; }

fake() { # fake NAME KIND LATENCY_MS: a fake upstream; its URL in $work/NAME.url
  setsid target/release/examples/fake_upstream "$2" "$3" "$answer" --stream-gap 40 >"$work/$1.url" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 1 50); do [ -s "$work/$1.url" ] && break; sleep 0.1; done
  [ -s "$work/$1.url" ] || { echo "the fake $1 did not start"; exit 1; }
}
# Streamed, the first word comes 300 ms after the ask (260 ms, then one 40 ms gap), the last at
# 1460 ms. Asked for a whole answer (the edge's JSON ask), a fake answers after its latency alone:
# the JSON ask's own fake Groq answers at 1460 ms, when the streamed answer would have ended.
fake groq groq 260
fake ollama ollama 260
fake groq-whole groq 1460

edge() { # edge NAME [--var ...]: a wrangler dev edge on a free port; its URL in $work/NAME.url
  local name=$1 port
  shift
  port=$(free_port)
  "$WRANGLER" d1 migrations apply DB --local --persist-to "$work/$name-d1" >/dev/null
  setsid "$WRANGLER" dev --config "$config" --ip 127.0.0.1 --port "$port" --inspector-port "$(free_port)" \
    --show-interactive-dev-session=false --persist-to "$work/$name-d1" \
    --var "OLLAMA_URL:$(cat "$work/ollama.url")" --var ASK_LIMITS:off --var MEMORY_TTL_S:0 \
    --var ASKER_KEY:bench-asker-key-0123 "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  echo "http://127.0.0.1:$port" >"$work/$name.url"
}
wait_edge() {
  for _ in $(seq 1 600); do curl -s -o /dev/null "$(cat "$work/$1.url")/health" && return; sleep 0.1; done
  echo "the $1 edge did not start:"; cat "$work/$1.log"; exit 1
}
# Groq's minute binding opened up (the run asks Groq more than 30 times a minute), as lib.sh's
# unlimited_groq_config does but under a name of this script's own: another benchmark running in
# this checkout may be using wrangler.bench.toml.
config=wrangler.stream-bench.toml
trap 'cleanup; rm -f "$config"' EXIT
sed 's/^simple = { limit = 30, period = 60 }$/simple = { limit = 1000000, period = 60 }/' wrangler.toml >"$config"
grep -q 'limit = 1000000' "$config" || { echo "wrangler.toml's GROQ_MINUTE binding not found"; exit 1; }
edge edge-groq --var GROQ_API_KEY:bench --var GROQ_RPM:100000 --var "GROQ_BASE_URL:$(cat "$work/groq.url")"
edge edge-json --var GROQ_API_KEY:bench --var GROQ_RPM:100000 --var "GROQ_BASE_URL:$(cat "$work/groq-whole.url")"
edge edge-ollama --var GROQ_API_KEY: --var "GROQ_BASE_URL:$(cat "$work/groq.url")"
for name in edge-groq edge-json edge-ollama; do wait_edge "$name"; done

load=$(cut -d' ' -f1-3 /proc/loadavg)
ttft=$(python3 bench/stream_ttft.py "$(cat "$work/edge-groq.url")" "$(cat "$work/edge-ollama.url")" \
  "$(cat "$work/groq.url")" "$(cat "$work/ollama.url")" "${TTFT_ASKS:-30}" 2>&1) || { echo "$ttft"; exit 1; }
board=$(CHROMIUM="${CHROMIUM:-/usr/bin/chromium}" node bench/stream_board.mjs "$(cat "$work/edge-groq.url")" \
  "$(cat "$work/edge-json.url")" "${BOARD_ASKS:-10}" 2>&1) || { echo "$board"; exit 1; }

mkdir -p bench/results
cat <<EOF | tee bench/results/stream.md
# Streamed answers: time to first token and the planchette's first move

\`bash bench/stream.sh\` ($(date -u +%Y-%m-%d), $(nproc) cores, load average $load at the start,
\`wrangler dev\` with local D1, limits and memory off). Fakes on 127.0.0.1: the first word 300 ms after the ask, then 30 words 40 ms apart.
p95 is nearest-rank; each series starts with one uncounted warm-up ask.

## Time to first token: the fake's own vs through the edge

The fake's: its chat endpoint asked with \`stream: true\`, until its first chunk with content. The
edge's: \`POST /api/ouija\` with \`Accept: text/event-stream\`, until the first \`token\` event (the
Ollama path on an edge without a Groq key). Goal: the edge adds under 20 ms p50.

$ttft

## The board in Chromium: Ask → the planchette's first move

Streamed as the board asks, and as a JSON ask (the request's Accept header turned to
\`application/json\` by the browser's interception; both ways go through it). On the Groq path; the
JSON ask asks Groq for a whole answer, so it goes to an edge whose fake Groq gives it at 1460 ms,
when the streamed one ends. For the JSON ask the token column is when the whole JSON arrived. Goal
when streamed: the first move within 100 ms of the first token reaching the page.

$board
EOF
