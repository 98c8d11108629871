#!/bin/sh
# Benchmark: the same fake Ollama (answers from memory) reached directly, through nginx (Debian
# nginx-light, same bearer keys and allow-list) and through ollama-proxy, in one run on loopback.
# ollama-proxy runs twice: the glibc build (`cargo build`) and the static musl build that the
# images ship (`proxy-musl`), when the musl target is installed (`make -C ollama-proxy bench` does).
# Reports req/s, p50/p99 latency (wrk), each proxy's CPU time per request and peak RSS, for a plain
# JSON answer (GET /api/tags), a streamed NDJSON answer (POST /api/chat, 6 chunks) sent in one burst,
# the edge's own call shape (a JSON POST answered with one JSON body: POST /api/chat with
# "stream": false, and POST /v1/chat/completions), the stream paced 2 ms per chunk (like a model
# emitting tokens), and the time to the first streamed chunk. Load only targets 127.0.0.1; every run
# is bounded by DURATION.
#   usage: sh bench/proxy-vs-nginx.sh            (from the repo root; `make -C ollama-proxy bench`)
# Each cell is run ROUNDS times, the paths taking turns, and the table shows the median of
# each column (the machines here are shared and noisy), with nginx's CPU and direct's p99 as the
# yardsticks of the two goals.
#   env:   DURATION=5s CONNECTIONS="32 64" ROUNDS=3 THREADS=1 FIRST_CHUNK_RUNS=40
#          WORKLOADS="plain stream chat-json openai-json paced" (any subset, in that spelling)
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
CRATE="$HERE/../ollama-proxy"
DURATION="${DURATION:-5s}"
CONNECTIONS="${CONNECTIONS:-32 64}"
THREADS="${THREADS:-1}"
ROUNDS="${ROUNDS:-3}"
[ "$ROUNDS" -ge 1 ] 2>/dev/null || { echo "ROUNDS must be a whole number, at least 1" >&2; exit 2; }
FIRST_CHUNK_RUNS="${FIRST_CHUNK_RUNS:-40}"
WORKLOADS="${WORKLOADS:-plain stream chat-json openai-json paced}"
KEY="bench-key-0123456789abcdef"
BACKEND_PORT=18801 NGINX_PORT=18802 PROXY_PORT=18803 SLOW_BACKEND_PORT=18804 SLOW_NGINX_PORT=18805 SLOW_PROXY_PORT=18806
MUSL_PORT=18807 SLOW_MUSL_PORT=18808
PACE_MS=2
WORK="$(mktemp -d /tmp/proxy-bench.XXXXXX)"
pids=""

for tool in wrk nginx python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run make -C ollama-proxy bench (installs wrk, nginx-light)"; exit 1; }
done

cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    [ -f "$WORK/slow/nginx.pid" ] && kill "$(cat "$WORK/slow/nginx.pid")" 2>/dev/null || true
    sleep 0.3
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# shellcheck disable=SC2034 # read by proxy-lib.sh
BENCH="$HERE" BIN="$CRATE/target/release"
# shellcheck source=bench/proxy-lib.sh
. "$HERE/proxy-lib.sh"
json_post "$WORK/chat-json.lua" "$CHAT_JSON_BODY"
json_post "$WORK/openai-json.lua" "$OPENAI_JSON_BODY"

echo "building release binaries..." >&2
build() { # cargo build arguments; its output is shown only when it fails
    (cd "$CRATE" && cargo build --release --locked "$@" >"$WORK/build.log" 2>&1) \
        || { cat "$WORK/build.log" >&2; echo "build failed: cargo build $*" >&2; exit 1; }
}
build --bins
MUSL_BIN=""
if rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl && command -v musl-gcc >/dev/null; then
    build --target x86_64-unknown-linux-musl --bin ollama-proxy
    MUSL_BIN="$CRATE/target/x86_64-unknown-linux-musl/release/ollama-proxy"
else
    echo "no musl target or musl-gcc: the image's static build is not measured" >&2
fi

# sum_proc PID FILE AWK: one number read by the awk program AWK from /proc/<pid>/FILE, summed
# over the process and its children (nginx workers).
sum_proc() {
    total=0
    for pid in $1 $(pgrep -P "$1" 2>/dev/null || true); do
        n="$(awk "$3" "/proc/$pid/$2" 2>/dev/null || echo 0)"
        total=$((total + n))
    done
    echo "$total"
}

# utime+stime, in clock ticks.
# shellcheck disable=SC2016 # an awk program, not a shell expansion
cpu_ticks() { sum_proc "$1" stat '{print $14 + $15}'; }

# Peak RSS (VmHWM), in KiB.
# shellcheck disable=SC2016 # an awk program, not a shell expansion
peak_rss_kib() { sum_proc "$1" status '/VmHWM/ {print $2}'; }

to_ms() { # wrk latency like 1.23ms / 456.00us / 1.02s
    echo "$1" | awk '/us$/ {sub("us","");printf "%.3f", $0/1000; exit} /ms$/ {sub("ms","");printf "%.3f", $0; exit} /s$/ {sub("s","");printf "%.3f", $0*1000}'
}

run_wrk() { # label port workload conns pid
    case "$3" in
        plain) script="" path=/api/tags ;;
        stream) script="$HERE/proxy-chat.lua" path=/api/chat ;;
        chat-json) script="$WORK/chat-json.lua" path=/api/chat ;;
        openai-json) script="$WORK/openai-json.lua" path=/v1/chat/completions ;;
        *) echo "unknown workload $3" >&2; exit 2 ;;
    esac
    out="$(wrk -t"$THREADS" -c"$4" -d"$DURATION" --latency -H "Authorization: Bearer $KEY" \
        ${script:+-s "$script"} "http://127.0.0.1:$2$path")"
    echo "$out" > "$WORK/wrk-$1-$3-$4.txt"
    rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
    reqs="$(echo "$out" | awk '/requests in/ {print $1}')"
    errors="$(echo "$out" | awk '/Non-2xx|Socket errors/ {printf "%s ", $0}')"
    p50="$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")"
    p99="$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")"
    echo "$rps $p50 $p99 $reqs" > "$WORK/last"
    [ -z "$errors" ] || echo "  $1 $3 c=$4: $errors" >&2
}

measure() { # label port pid(or -) workload conns [shown-workload]
    before=0
    [ "$3" = - ] || before="$(cpu_ticks "$3")"
    run_wrk "$1-$2" "$2" "$4" "$5"
    read -r rps p50 p99 reqs < "$WORK/last"
    cpu_us="-"
    if [ "$3" != - ]; then
        after="$(cpu_ticks "$3")"
        hz="$(getconf CLK_TCK)"
        cpu_us="$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')"
    fi
    echo "$1 ${6:-$4} $5 $rps $p50 $p99 $cpu_us" >> "$WORK/rows"
    echo "  $1 ${6:-$4} c=$5: $rps req/s, p50 $p50 ms, p99 $p99 ms, $cpu_us us/req" >&2
}

start_backend "$BACKEND_PORT" 0
start_nginx "$WORK" "$NGINX_PORT" "$BACKEND_PORT"
NGINX_PID="$(cat "$WORK/nginx.pid")"
PROXY_PID="$(start_proxy "$PROXY_PORT" "$BACKEND_PORT" info)"
pids="$pids $PROXY_PID"
wait_port "$PROXY_PORT"
start_backend "$SLOW_BACKEND_PORT" "$PACE_MS"
start_nginx "$WORK/slow" "$SLOW_NGINX_PORT" "$SLOW_BACKEND_PORT"
SLOW_NGINX_PID="$(cat "$WORK/slow/nginx.pid")"
SLOW_PROXY_PID="$(start_proxy "$SLOW_PROXY_PORT" "$SLOW_BACKEND_PORT" info)"
pids="$pids $SLOW_PROXY_PID"
wait_port "$SLOW_PROXY_PORT"
if [ -n "$MUSL_BIN" ]; then
    MUSL_PID="$(start_proxy "$MUSL_PORT" "$BACKEND_PORT" info "$MUSL_BIN")"
    SLOW_MUSL_PID="$(start_proxy "$SLOW_MUSL_PORT" "$SLOW_BACKEND_PORT" info "$MUSL_BIN")"
    pids="$pids $MUSL_PID $SLOW_MUSL_PID"
    wait_port "$MUSL_PORT"
    wait_port "$SLOW_MUSL_PORT"
fi

# Sanity: every path answers 200 with the key and refuses without it.
for port in "$NGINX_PORT" "$PROXY_PORT" ${MUSL_BIN:+"$MUSL_PORT"}; do
    code="$(python3 -c "import urllib.request as u; print(u.urlopen(u.Request('http://127.0.0.1:$port/api/tags', headers={'Authorization': 'Bearer $KEY'})).status)")"
    [ "$code" = 200 ] || { echo "port $port answered $code" >&2; exit 1; }
    python3 -c "import urllib.request as u, urllib.error as e
try: u.urlopen('http://127.0.0.1:$port/api/tags'); raise SystemExit('no 401 on $port')
except e.HTTPError as x: assert x.code == 401, x.code" || exit 1
done

echo "machine: $(nproc) cores, $(uname -r); wrk -t$THREADS -d$DURATION; nginx $(nginx -v 2>&1 | sed 's#.*/##'), 2 worker processes; ollama-proxy: 2 worker threads, one event loop each"
echo
for workload in $WORKLOADS; do
    for conns in $CONNECTIONS; do
        for _ in $(seq 1 "$ROUNDS"); do
            if [ "$workload" = paced ]; then
                measure direct "$SLOW_BACKEND_PORT" - stream "$conns" paced
                measure nginx "$SLOW_NGINX_PORT" "$SLOW_NGINX_PID" stream "$conns" paced
                measure "ollama-proxy" "$SLOW_PROXY_PORT" "$SLOW_PROXY_PID" stream "$conns" paced
                [ -z "$MUSL_BIN" ] || measure "proxy-musl" "$SLOW_MUSL_PORT" "$SLOW_MUSL_PID" stream "$conns" paced
            else
                measure direct "$BACKEND_PORT" - "$workload" "$conns"
                measure nginx "$NGINX_PORT" "$NGINX_PID" "$workload" "$conns"
                measure "ollama-proxy" "$PROXY_PORT" "$PROXY_PID" "$workload" "$conns"
                [ -z "$MUSL_BIN" ] || measure "proxy-musl" "$MUSL_PORT" "$MUSL_PID" "$workload" "$conns"
            fi
        done
    done
done
# Medians per cell; "CPU vs nginx" and "p99 added" (over direct, same cell) are the two goals.
python3 - "$WORK/rows" "$ROUNDS" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
cells = {}
for path, workload, conns, *values in rows:
    cells.setdefault((workload, conns), {}).setdefault(path, []).append(values)
def median(runs, i):
    numbers = [float(r[i]) for r in runs if r[i] != "-"]
    return statistics.median(numbers) if numbers else None
print(f"medians of {sys.argv[2]} runs per cell")
print()
print("| path | workload | conns | req/s | p50 (ms) | p99 (ms) | p99 added (ms) | CPU us/req | CPU vs nginx |")
print("|---|---|---|---|---|---|---|---|---|")
for (workload, conns), paths in cells.items():
    direct_p99 = median(paths["direct"], 2)
    nginx_cpu = median(paths["nginx"], 3)
    for path, runs in paths.items():
        rps, p50, p99, cpu = (median(runs, i) for i in range(4))
        added = "-" if path == "direct" else f"{p99 - direct_p99:+.2f}"
        ratio = f"{cpu / nginx_cpu:.2f}x" if cpu is not None and nginx_cpu else "-"
        cpu_text = f"{cpu:.1f}" if cpu is not None else "-"
        print(f"| {path} | {workload} | {conns} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {added} | {cpu_text} | {ratio} |")
PY
echo
nginx_rss=$(($(peak_rss_kib "$NGINX_PID") / 1024)) proxy_rss=$(($(peak_rss_kib "$PROXY_PID") / 1024))
musl_rss="-"
[ -z "$MUSL_BIN" ] || musl_rss=$(($(peak_rss_kib "$MUSL_PID") / 1024))
echo "peak RSS (VmHWM) after all runs: nginx master + 2 workers $nginx_rss MiB; ollama-proxy $proxy_rss MiB; proxy-musl $musl_rss MiB"
# How the work was shared: CPU ticks of each nginx worker process and each ollama-proxy thread.
nginx_split="$(for pid in $(pgrep -P "$NGINX_PID"); do awk '{printf "%s ", $14 + $15}' "/proc/$pid/stat"; done)"
proxy_split="$(for task in /proc/"$PROXY_PID"/task/*; do awk -v n="$(cat "$task/comm")" '{printf "%s=%s ", n, $14 + $15}' "$task/stat"; done)"
echo "CPU ticks by worker: nginx $nginx_split; ollama-proxy $proxy_split"

# Time to first chunk on the paced backend: the first chunk leaves at once, the rest 2 ms apart,
# so a proxy that buffered would show it. FIRST_CHUNK_RUNS=0 skips it.
[ "$FIRST_CHUNK_RUNS" -gt 0 ] || exit 0
echo
echo "| path         | first chunk p50 (ms) | first chunk p90 (ms) |"
echo "|--------------|----------------------|----------------------|"
pairs="direct:$SLOW_BACKEND_PORT nginx:$SLOW_NGINX_PORT ollama-proxy:$SLOW_PROXY_PORT"
[ -z "$MUSL_BIN" ] || pairs="$pairs proxy-musl:$SLOW_MUSL_PORT"
for pair in $pairs; do
    # shellcheck disable=SC2046 # two numbers, split on purpose
    set -- $(python3 "$HERE/proxy-first-chunk.py" "127.0.0.1:${pair#*:}" "$KEY" "$FIRST_CHUNK_RUNS")
    printf "| %-12s | %20s | %20s |\n" "${pair%%:*}" "$1" "$2"
done
