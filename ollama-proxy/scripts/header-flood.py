#!/usr/bin/env python3
"""RSS of the proxy under the unfinished-header-block flood of issue #14, on 127.0.0.1 only.

Starts the proxy binary (no Ollama needed), opens CONNECTIONS connections that each send a request
line, `Host`, then LINES `X-` header lines of LINE_BYTES bytes and never the blank line that ends
the block, and holds them. Prints the proxy's VmRSS before, the highest VmRSS seen while the
connections are open, VmRSS after they are closed, and VmHWM, from /proc/PID/status. Stops by
itself (every socket has a timeout; the proxy is killed at the end).

    python3 scripts/header-flood.py [--bin target/debug/ollama-proxy] [--connections 1300]
        [--lines 100] [--line-bytes 4000] [--hold 3]
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import time


def kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="target/debug/ollama-proxy")
    parser.add_argument("--connections", type=int, default=1300)
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--line-bytes", type=int, default=4000)
    parser.add_argument("--hold", type=float, default=3.0, help="seconds to hold the connections open")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PROXY_API_KEYS": "header-flood-key-0123456789",
        "OLLAMA_UPSTREAM": "http://127.0.0.1:9",
        "PROXY_BIND": "127.0.0.1",
        "PORT": str(port),
        "PROXY_WORKERS": "2",
        "RUST_LOG": "warn",
    }
    proxy = subprocess.Popen([args.bin], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("the proxy did not start")
                time.sleep(0.05)
        time.sleep(0.3)
        before = kib(proxy.pid, "VmRSS")
        block = b"GET /livez HTTP/1.1\r\nHost: flood.test\r\n" + b"".join(
            b"X-Pad-%d: %s\r\n" % (n, b"a" * args.line_bytes) for n in range(args.lines)
        )
        sockets, refused, peak = [], 0, before
        started = time.time()
        for n in range(args.connections):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(block)
                sockets.append(s)
            except OSError:
                refused += 1
            if n % 50 == 0:
                peak = max(peak, kib(proxy.pid, "VmRSS"))
        sent_in = time.time() - started
        end = time.time() + args.hold
        while time.time() < end:
            peak = max(peak, kib(proxy.pid, "VmRSS"))
            time.sleep(0.1)
        answers = {}
        for s in sockets:
            s.setblocking(False)
            try:
                status = s.recv(12)[9:12].decode() or "closed"
            except BlockingIOError:
                status = "open"
            except OSError:
                status = "reset"
            answers[status] = answers.get(status, 0) + 1
            s.close()
        time.sleep(3)
        after = kib(proxy.pid, "VmRSS")
        hwm = kib(proxy.pid, "VmHWM")
        print(
            f"{args.connections} connections x {len(block)} header bytes ({args.bin}): "
            f"sent in {sent_in:.1f} s, {refused} refused while sending, then {answers}; "
            f"VmRSS before {before // 1024} MiB, peak while open {peak // 1024} MiB, "
            f"3 s after closing {after // 1024} MiB; VmHWM {hwm // 1024} MiB"
        )
    finally:
        proxy.kill()
        proxy.wait()


if __name__ == "__main__":
    main()
