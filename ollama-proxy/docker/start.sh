#!/bin/sh
# Starts Ollama best-effort, waits up to OLLAMA_WAIT_SECS for it to answer, then execs the proxy
# whether or not it did: on a 512 MB instance Ollama may never come up, and the proxy must still
# serve /health (degraded) and /livez. Needs no curl: the proxy binary probes Ollama itself.
set -u

: "${OLLAMA_HOST:=127.0.0.1:11434}"
: "${OLLAMA_UPSTREAM:=http://${OLLAMA_HOST}}"
: "${OLLAMA_WAIT_SECS:=30}"
: "${PROXY_BIN:=ollama-proxy}"
export OLLAMA_HOST OLLAMA_UPSTREAM

log() {
    # Same shape as the proxy's JSON log lines.
    printf '{"level":"%s","message":"%s","target":"start.sh"}\n' "$1" "$2"
}

if command -v ollama >/dev/null 2>&1; then
    # Ollama's own text logs go to stderr so stdout stays JSON.
    ollama serve 1>&2 &
    ollama_pid=$!
    log INFO "started ollama (pid ${ollama_pid}) on ${OLLAMA_HOST}; waiting up to ${OLLAMA_WAIT_SECS} s"
    waited=0
    while :; do
        if "${PROXY_BIN}" healthcheck --url "${OLLAMA_UPSTREAM}/api/version" --timeout-ms 1000 >/dev/null 2>&1; then
            log INFO "ollama answers after ${waited} s"
            break
        fi
        if ! kill -0 "${ollama_pid}" 2>/dev/null; then
            log WARN "ollama exited early (out of memory?); continuing without it"
            break
        fi
        if [ "${waited}" -ge "${OLLAMA_WAIT_SECS}" ]; then
            log WARN "ollama not ready after ${OLLAMA_WAIT_SECS} s; continuing without it"
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
else
    log WARN "no ollama binary on PATH; proxying to ${OLLAMA_UPSTREAM}"
fi

exec "${PROXY_BIN}" "$@"
