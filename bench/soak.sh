#!/usr/bin/env bash
# Soak with faults, all on 127.0.0.1, for SOAK_SECONDS (default 600): the edge on both runtimes
# (wrangler dev with local D1, spin-host with the Spin component), Groq pointed at a fake Groq and
# Ollama at the real ollama-proxy in front of a fake Ollama. The fakes are examples/fake_upstream.rs
# behind their mode files (ok, 429, 500, hang, junk, drip, refused); in `ok` the Ollama one hands
# connections to the proxy's fake-ollama, which streams NDJSON. bench/soak.py drives the load, the
# fault schedule, the proxy (and its restart), the attack mix and the report (bench/results/soak.md);
# it exits 1 when a goal fails. Needs `make build` and `make spin-build` first (`make soak` does).
# Knobs: SOAK_SECONDS, SOAK_ASK_RATE (per edge, 4/s), SOAK_PROXY_RATE (2/s), SOAK_ATTACK_EVERY (2 s),
# SOAK_FAULT_SECONDS (20-30), SOAK_GROQ_RPM (30, Groq's free tier), SOAK_PROXY_ENV ("NAME=VALUE ...").
# Logs of the last run are kept in target/soak/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
logs=target/soak
trap 'mkdir -p "$logs" && cp "$work"/*.log "$logs"/ 2>/dev/null; cleanup' EXIT

cargo build --quiet --release --example fake_upstream
cargo build --quiet --release --locked --manifest-path ollama-proxy/Cargo.toml --bins
proxy_bin=ollama-proxy/target/release/ollama-proxy

# wait_url NAME URL: until it answers at all (any status), or fail with the log.
wait_url() {
  for _ in $(seq 1 600); do curl -s -o /dev/null "$2" && return 0; sleep 0.1; done
  echo "$1 did not start:"; cat "$work/$1.log"; exit 1
}
# first_line NAME FILE: waits for the first line a process prints.
first_line() {
  for _ in $(seq 1 100); do [ -s "$2" ] && { head -1 "$2"; return 0; }; sleep 0.1; done
  echo "$1 printed nothing" >&2; exit 1
}

setsid ollama-proxy/target/release/fake-ollama --chunk-delay-ms 200 >"$work/fake-ollama.out" 2>"$work/fake-ollama.log" &
pids+=($!)
streaming_ollama=$(first_line fake-ollama "$work/fake-ollama.out" | sed 's/^listening on //')
setsid target/release/examples/fake_upstream groq 20 --mode-file "$work/groq.mode" >"$work/groq.out" 2>"$work/fake-groq.log" &
pids+=($!)
setsid target/release/examples/fake_upstream ollama 0 --mode-file "$work/ollama.mode" \
  --ok-upstream "$streaming_ollama" >"$work/ollama.out" 2>"$work/fake-ollama-faults.log" &
pids+=($!)
groq_url=$(first_line fake-groq "$work/groq.out")
ollama_url=$(first_line fake-ollama-faults "$work/ollama.out")

proxy_port=$(free_port)
proxy_key="soak-key-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
# Every variable the edge reads is set, unset ones empty, so a developer's .dev.vars never leaks in.
# ASK_LIMITS=off: every ask comes from one address, and per-asker limits are not what this measures;
# every question is new (numbered), so the spirit's memory never answers instead of the chain.
vars=(
  GROQ_API_KEY=soak-groq-key GROQ_MODEL= "GROQ_BASE_URL=$groq_url" GROQ_TIMEOUT_MS= "GROQ_RPM=${SOAK_GROQ_RPM:-30}"
  "OLLAMA_URL=http://127.0.0.1:$proxy_port" OLLAMA_MODEL= "OLLAMA_PROXY_TOKEN=$proxy_key" OLLAMA_TIMEOUT_MS=
  ASK_BUDGET_MS= ENVIRONMENT=soak CORS_ORIGINS= ASK_LIMITS=off MEMORY_TTL_S= ASKER_KEY=
)

workers_vars=(); spin_env=()
for v in "${vars[@]}"; do workers_vars+=(--var "${v%%=*}:${v#*=}"); spin_env+=("SPIN_VARIABLE_$v"); done

"$WRANGLER" d1 migrations apply DB --local --persist-to "$work/d1" >/dev/null
workers_port=$(free_port); spin_port=$(free_port)
setsid "$WRANGLER" dev --ip 127.0.0.1 --port "$workers_port" --inspector-port "$(free_port)" \
  --show-interactive-dev-session=false --log-level warn --persist-to "$work/d1" \
  "${workers_vars[@]}" >"$work/workers.log" 2>&1 &
pids+=($!)
mapfile -t foreign < <(env | sed -n 's/^\(SPIN_VARIABLE_[A-Z0-9_]*\)=.*/\1/p')
setsid env "${foreign[@]/#/--unset=}" "${spin_env[@]}" target/spin/spin-host --listen "127.0.0.1:$spin_port" \
  --sqlite "$work/spin.db" --migrations d1-migrations target/spin/ouija_edge.wasm >"$work/spin.log" 2>&1 &
pids+=($!)
wait_url workers "http://127.0.0.1:$workers_port/health"
wait_url spin "http://127.0.0.1:$spin_port/health"

read -r -a proxy_env <<<"${SOAK_PROXY_ENV:-}"
python3 bench/soak.py --seconds "${SOAK_SECONDS:-600}" --ask-rate "${SOAK_ASK_RATE:-4}" \
  --proxy-rate "${SOAK_PROXY_RATE:-2}" --attack-every "${SOAK_ATTACK_EVERY:-2}" \
  --fault-seconds "${SOAK_FAULT_SECONDS:-20-30}" \
  --edge "workers=http://127.0.0.1:$workers_port=$work/d1" \
  --edge "spin=http://127.0.0.1:$spin_port=$work/spin.db" \
  --mode-file "groq=$work/groq.mode" --mode-file "ollama=$work/ollama.mode" \
  --proxy-bin "$proxy_bin" --proxy-port "$proxy_port" --proxy-upstream "$ollama_url" \
  --proxy-key "$proxy_key" --proxy-log "$work/proxy.log" "${proxy_env[@]/#/--proxy-env=}" \
  --commit "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src ollama-proxy/src spin-host || echo ' + uncommitted changes')"
