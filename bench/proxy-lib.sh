# shellcheck shell=sh disable=SC2034 # its variables are read by the scripts that source it
# Shared by bench/proxy-vs-nginx.sh and ollama-proxy/scripts/syscalls.sh (POSIX sh, sourced):
# the edge's JSON POSTs as wrk scripts, and the fake Ollama, nginx and ollama-proxy started on
# 127.0.0.1 the way the benchmark runs them. The caller sets BENCH (this folder), BIN (the folder of
# the release fake-ollama and ollama-proxy), KEY (the bearer key) and pids (background pids to stop).

# The edge's call shape: one JSON POST, one JSON answer (no stream), as Lua string literals.
CHAT_JSON_BODY="'{\"model\":\"qwen2.5:0.5b\",\"stream\":false,\"messages\":[{\"role\":\"user\",\"content\":\"Will it rain?\"}]}'"
OPENAI_JSON_BODY="'{\"model\":\"qwen2.5:0.5b\",\"messages\":[{\"role\":\"user\",\"content\":\"Will it rain?\"}]}'"

json_post() { # file body: a wrk script POSTing body as JSON
    printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "$2" > "$1"
}

wait_port() {
    for _ in $(seq 1 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 never opened" >&2; exit 1
}

start_backend() { # port chunk-delay-ms
    "$BIN/fake-ollama" --listen "127.0.0.1:$1" --chunk-delay-ms "$2" >/dev/null 2>&1 &
    pids="$pids $!"
    wait_port "$1"
}

start_proxy() { # port upstream-port log-level [binary] -> echoes pid
    OLLAMA_UPSTREAM="http://127.0.0.1:$2" PROXY_API_KEYS="$KEY" PORT="$1" PROXY_BIND=127.0.0.1 \
        PROXY_MAX_IN_FLIGHT=1024 PROXY_WORKERS=2 RUST_LOG="$3" "${4:-$BIN/ollama-proxy}" >/dev/null 2>&1 &
    echo $!
}

start_nginx() { # dir port upstream-port
    mkdir -p "$1"
    sed -e "s#@DIR@#$1#g" -e "s#@PORT@#$2#g" -e "s#@UPSTREAM@#$3#g" -e "s#@KEY@#$KEY#g" \
        "$BENCH/proxy-nginx.conf" > "$1/nginx.conf"
    nginx -p "$1" -c "$1/nginx.conf" -e "$1/error.log"
    wait_port "$2"
}
