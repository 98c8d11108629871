#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by callgrind (issue #18's measure).

Starts the release fake Ollama and the release proxy (`PROXY_WORKERS=1`, access log on) under
`valgrind --tool=callgrind`, sends REQUESTS requests of one workload over CONNECTIONS keep-alive
connections (a fixed count, not a duration), stops the proxy with SIGTERM and reads callgrind's
total. It runs twice, with WARMUP requests and with WARMUP + REQUESTS, and prints the difference
per request, so start-up and shutdown cancel out. `--nginx` measures nginx the same way instead
(`bench/proxy-nginx.conf`, one worker, `master_process off`). Everything stays on 127.0.0.1.

    cargo build --release --bins   # the binaries measured (BIN_DIR=... to measure others)
    python3 scripts/callgrind.py [--workload chat-json|openai-json|plain] [--requests 8000]
        [--connections 8] [--keep DIR] [--nginx]   # --keep: leave the files for callgrind_annotate
"""

import argparse
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

KEY = "callgrind-key-0123456789abcdef"
HERE = os.path.dirname(os.path.abspath(__file__))
RELEASE = os.environ.get("BIN_DIR", os.path.join(HERE, "..", "target", "release"))
WORKLOADS = {
    "chat-json": ("POST", "/api/chat",
                  b'{"model":"qwen2.5:0.5b","stream":false,"messages":[{"role":"user","content":"Will it rain?"}]}'),
    "openai-json": ("POST", "/v1/chat/completions",
                    b'{"model":"qwen2.5:0.5b","messages":[{"role":"user","content":"Will it rain?"}]}'),
    "plain": ("GET", "/api/tags", None),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=60):
    end = time.time() + seconds
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"port {port} never opened")


def drive(port, workload, total, connections):
    method, path, body = WORKLOADS[workload]
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    failures = []

    def one_connection(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(count):
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            reply.read()
            if reply.status != 200:
                failures.append(reply.status)
        conn.close()

    shares = [total // connections + (1 if i < total % connections else 0) for i in range(connections)]
    threads = [threading.Thread(target=one_connection, args=(n,)) for n in shares if n]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit(f"{len(failures)} requests failed, e.g. {failures[0]}")


def nginx_command(work, port, backend):
    """nginx with the bench's configuration, one worker and no master process."""
    with open(os.path.join(HERE, "..", "..", "bench", "proxy-nginx.conf")) as f:
        conf = f.read()
    for placeholder, value in (("@DIR@", work), ("@PORT@", str(port)), ("@UPSTREAM@", str(backend)),
                               ("@KEY@", KEY)):
        conf = conf.replace(placeholder, value)
    conf = conf.replace("worker_processes 2;", "worker_processes 1;\nmaster_process off;\ndaemon off;")
    path = os.path.join(work, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return ["nginx", "-p", work, "-c", path, "-e", os.path.join(work, "error.log")]


def measure(args, requests, out_file):
    backend, port = free_port(), free_port()
    fake = subprocess.Popen([os.path.join(RELEASE, "fake-ollama"), "--listen", f"127.0.0.1:{backend}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, OLLAMA_UPSTREAM=f"http://127.0.0.1:{backend}", PROXY_API_KEYS=KEY, PORT=str(port),
               PROXY_BIND="127.0.0.1", PROXY_WORKERS="1", RUST_LOG="info", PROXY_MAX_IN_FLIGHT="1024")
    if args.nginx:
        command = nginx_command(tempfile.mkdtemp(prefix="callgrind-nginx-"), port, backend)
    else:
        command = [os.path.join(RELEASE, "ollama-proxy")]
    proxy = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", *command],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(backend)
        wait_port(port)
        drive(port, args.workload, requests, args.connections)
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=300)
        fake.kill()
        fake.wait()
    with open(out_file) as f:
        for line in f:
            found = re.match(r"(?:summary|totals): (\d+)", line)
            if found:
                return int(found.group(1))
    sys.exit(f"no total in {out_file}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="chat-json", choices=sorted(WORKLOADS))
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--keep", help="directory to leave the callgrind files in")
    parser.add_argument("--nginx", action="store_true", help="measure nginx instead of the proxy")
    args = parser.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="callgrind-")
    os.makedirs(work, exist_ok=True)
    name = ("nginx-" if args.nginx else "") + args.workload
    base = measure(args, args.warmup, os.path.join(work, f"{name}-warmup.out"))
    full = measure(args, args.warmup + args.requests, os.path.join(work, f"{name}-full.out"))
    per_request = (full - base) / args.requests
    print(f"{name}: {per_request / 1000:.1f}k instructions per request "
          f"({args.requests} requests over {args.connections} connections; totals {base} and {full})")


if __name__ == "__main__":
    main()
