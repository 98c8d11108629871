#!/bin/sh
# Syscalls per proxied request, counted by `perf stat` on the syscall tracepoints while wrk drives
# the proxy (or nginx) the way bench/proxy-vs-nginx.sh does: the release fake Ollama behind it,
# PROXY_WORKERS=2 and the access log on (nginx: the bench's config, 2 workers), `wrk -t1` on
# keep-alive connections. Counts are divided by the requests wrk made; reads that found nothing
# (recvfrom returning EAGAIN) are counted apart. Needs perf, wrk and nginx; run as root (or with
# kernel.perf_event_paranoid low enough for tracepoints). Everything stays on 127.0.0.1.
#   usage: sh scripts/syscalls.sh [proxy|nginx] [plain|chat-json|openai-json|stream|paced] [conns]
#   env:   BIN_DIR=target/release  SECONDS_COUNTED=3
set -eu
WHO="${1:-proxy}" WORKLOAD="${2:-chat-json}" CONNS="${3:-32}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN_DIR="${BIN_DIR:-$HERE/../target/release}"
KEY=syscalls-key-0123456789abcdef
BACKEND=18911 PORT=18912
WORK="$(mktemp -d /tmp/proxy-syscalls.XXXXXX)"
pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# shellcheck disable=SC2034 # read by proxy-lib.sh
BENCH="$HERE/../../bench" BIN="$BIN_DIR"
# shellcheck source=bench/proxy-lib.sh
. "$BENCH/proxy-lib.sh"
case "$WORKLOAD" in
    plain) path=/api/tags ;;
    chat-json) path=/api/chat; json_post "$WORK/script.lua" "$CHAT_JSON_BODY" ;;
    openai-json) path=/v1/chat/completions; json_post "$WORK/script.lua" "$OPENAI_JSON_BODY" ;;
    stream | paced) path=/api/chat; cp "$BENCH/proxy-chat.lua" "$WORK/script.lua" ;;
    *) echo "unknown workload $WORKLOAD" >&2; exit 2 ;;
esac
drive() { # seconds -> requests made
    script=""
    [ -f "$WORK/script.lua" ] && script="$WORK/script.lua"
    wrk -t1 -c"$CONNS" -d"$1" -H "Authorization: Bearer $KEY" ${script:+-s "$script"} \
        "http://127.0.0.1:$PORT$path" | awk '/requests in/ {print $1}'
}
# paced: the bench's stream with 2 ms between chunks.
delay=0
[ "$WORKLOAD" = paced ] && delay=2
start_backend "$BACKEND" "$delay"
if [ "$WHO" = nginx ]; then
    start_nginx "$WORK" "$PORT" "$BACKEND"
    targets="$(pgrep -P "$(cat "$WORK/nginx.pid")" | paste -sd, -)"
else
    targets="$(start_proxy "$PORT" "$BACKEND" info)"
    pids="$pids $targets"
    wait_port "$PORT"
fi
drive 1s >/dev/null # warm up: connections open, pools filled
events=""
for call in recvfrom writev write epoll_wait futex getsockopt ioctl; do
    events="$events -e syscalls:sys_enter_$call"
done
# shellcheck disable=SC2086 # one word per event
perf stat -x, -o "$WORK/perf.txt" $events -e raw_syscalls:sys_enter \
    -e syscalls:sys_exit_recvfrom --filter 'ret == -11' -p "$targets" &
perf=$!
sleep 0.3
requests="$(drive "${SECONDS_COUNTED:-3}s")"
kill -INT "$perf"
wait "$perf" || true
echo "$WHO $WORKLOAD c=$CONNS: syscalls per request over $requests requests"
awk -F, -v n="$requests" '$3 ~ /sys/ {
    name = $3; sub(/.*sys_enter_?/, "", name)
    if ($3 ~ /sys_exit_recvfrom/) name = "recvfrom EAGAIN"
    if (name == "") name = "all"
    printf "  %-16s %6.3f\n", name, $1 / n
}' "$WORK/perf.txt"
