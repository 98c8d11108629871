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

post() { # body
    printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "$1" > "$WORK/script.lua"
}
case "$WORKLOAD" in
    plain) path=/api/tags ;;
    chat-json) path=/api/chat; post "'{\"model\":\"qwen2.5:0.5b\",\"stream\":false,\"messages\":[{\"role\":\"user\",\"content\":\"Will it rain?\"}]}'" ;;
    openai-json) path=/v1/chat/completions; post "'{\"model\":\"qwen2.5:0.5b\",\"messages\":[{\"role\":\"user\",\"content\":\"Will it rain?\"}]}'" ;;
    stream | paced) path=/api/chat; cp "$HERE/../../bench/proxy-chat.lua" "$WORK/script.lua" ;;
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
wait_port() {
    for _ in $(seq 1 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 never opened" >&2; exit 1
}

"$BIN_DIR/fake-ollama" --listen "127.0.0.1:$BACKEND" --chunk-delay-ms "$delay" >/dev/null 2>&1 &
pids="$pids $!"
wait_port "$BACKEND"
if [ "$WHO" = nginx ]; then
    sed -e "s#@DIR@#$WORK#g" -e "s#@PORT@#$PORT#g" -e "s#@UPSTREAM@#$BACKEND#g" -e "s#@KEY@#$KEY#g" \
        "$HERE/../../bench/proxy-nginx.conf" > "$WORK/nginx.conf"
    nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/error.log"
    wait_port "$PORT"
    targets="$(pgrep -P "$(cat "$WORK/nginx.pid")" | paste -sd, -)"
else
    OLLAMA_UPSTREAM="http://127.0.0.1:$BACKEND" PROXY_API_KEYS="$KEY" PORT="$PORT" PROXY_BIND=127.0.0.1 \
        PROXY_MAX_IN_FLIGHT=1024 PROXY_WORKERS=2 RUST_LOG=info "$BIN_DIR/ollama-proxy" >/dev/null 2>&1 &
    targets=$!
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
