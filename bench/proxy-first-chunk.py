"""Time to the first streamed NDJSON chunk of /api/chat, over raw sockets (median and p90 of N runs).

usage: proxy-first-chunk.py HOST:PORT KEY N
"""

import socket
import statistics
import sys
import time

BODY = b'{"model":"qwen2.5:0.5b","messages":[{"role":"user","content":"hi"}]}'


def first_chunk_ms(host, port, key):
    request = (
        b"POST /api/chat HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
        + b"Authorization: Bearer " + key.encode() + b"\r\n"
        + b"Content-Type: application/json\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        sock.sendall(request)
        seen = b""
        while b'"done":false' not in seen:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("closed before the first chunk")
            seen += data
        elapsed = (time.perf_counter() - started) * 1000
        while sock.recv(65536):
            pass
    return elapsed


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    key, runs = sys.argv[2], int(sys.argv[3])
    samples = sorted(first_chunk_ms(host, int(port), key) for _ in range(runs))
    p90 = samples[int(len(samples) * 0.9) - 1]
    print(f"{statistics.median(samples):.3f} {p90:.3f}")


if __name__ == "__main__":
    main()
