#!/usr/bin/env python3
"""Upstream cost of a /health flood (issue #14), on 127.0.0.1 only.

Starts the fake Ollama and the proxy in front of it, sends CALLS concurrent `GET /health`, and
prints how many checks reached the fake (`/api/version` calls) and how many connections it
accepted. Stops by itself (socket timeouts; both processes are killed at the end).

    python3 scripts/health-flood.py [--bin target/debug/ollama-proxy]
        [--fake target/debug/fake-ollama] [--calls 1000]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time


def get(port, path, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def wait_for(port):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="target/debug/ollama-proxy")
    parser.add_argument("--fake", default="target/debug/fake-ollama")
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()

    fake = subprocess.Popen([args.fake], stdout=subprocess.PIPE, text=True)
    proxy = None
    try:
        fake_port = int(fake.stdout.readline().rsplit(":", 1)[1])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PROXY_API_KEYS": "health-flood-key-0123456789",
            "OLLAMA_UPSTREAM": f"http://127.0.0.1:{fake_port}",
            "PROXY_BIND": "127.0.0.1",
            "PORT": str(port),
            "PROXY_WORKERS": "2",
            "RUST_LOG": "warn",
        }
        proxy = subprocess.Popen([args.bin], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(port)
        statuses = []
        lock = threading.Lock()

        def call():
            try:
                status = get(port, "/health")[0]
            except OSError:
                status = 0
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=call) for _ in range(args.calls)]
        started = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.time() - started
        # Client traffic and the proxy's probes (listed apart by the fake) both reach Ollama.
        seen = json.loads(get(fake_port, "/__fake/seen")[1]) + json.loads(get(fake_port, "/__fake/probes")[1])
        connections = json.loads(get(fake_port, "/__fake/connections")[1])["connections"] - 2
        ok = statuses.count(200)
        print(
            f"{args.calls} concurrent /health ({args.bin}): {ok} answered 200 in {took:.1f} s; "
            f"Ollama got {seen.count('/api/version')} version and {seen.count('/api/tags')} tags checks "
            f"over {connections} connections"
        )
    finally:
        for process in (proxy, fake):
            if process:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
