# shellcheck shell=bash
# Shared start-up of the edge benchmarks (bash; sourced by edge.sh and spin-vs-workers.sh from the
# repo root): wrangler without telemetry or downloads, wrk installed when missing, a scratch
# directory, and a clean-up that stops every process group started into `pids`.
export WRANGLER=node_modules/.bin/wrangler
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false OUIJA_SKIP_BUILD=1

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

work=$(mktemp -d)
pids=()
# Next to wrangler.toml (whose relative paths it keeps), named for this run, so two benchmarks in
# one checkout never remove each other's.
bench_config="wrangler.bench.$$.toml"
cleanup() {
  for pid in "${pids[@]}"; do kill -s TERM -- "-$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${pids[@]}"; do kill -s KILL -- "-$pid" 2>/dev/null || true; done
  rm -rf "$work" "$bench_config"
}

# $bench_config: wrangler.toml with Groq's minute binding opened up, for benchmarks that
# measure the chain at a rate no free tier allows (it sits next to wrangler.toml, whose relative
# paths it keeps; git-ignored, removed on exit).
unlimited_groq_config() {
  sed 's/^simple = { limit = 30, period = 60 }$/simple = { limit = 1000000, period = 60 }/' wrangler.toml >"$bench_config"
  grep -q 'limit = 1000000' "$bench_config" || { echo "wrangler.toml's GROQ_MINUTE binding not found"; exit 1; }
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
