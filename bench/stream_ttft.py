"""Time to first token (#12), run by bench/stream.sh: the fake's own (its chat endpoint asked with
`stream: true`, until the first chunk with content) next to the edge's (`POST /api/ouija` with
`Accept: text/event-stream`, until the first `token` event), per path. Every stream is read to
its end before the next ask, so asks never overlap. Prints a markdown table.

usage: stream_ttft.py GROQ_EDGE OLLAMA_EDGE GROQ_FAKE OLLAMA_FAKE ASKS
"""

import http.client
import json
import statistics
import sys
import time
import urllib.parse


def first_chunk_ms(url, body, headers, marker):
    """Milliseconds from sending the request to the first body bytes holding `marker`, and the body."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    started = time.perf_counter()
    connection.request("POST", parts.path, json.dumps(body), {"content-type": "application/json", **headers})
    response = connection.getresponse()
    if response.status != 200:
        sys.exit(f"{url}: HTTP {response.status}: {response.read()[:300]!r}")
    seen, first = b"", None
    while piece := response.read1(65536):
        seen += piece
        if first is None and marker in seen:
            first = (time.perf_counter() - started) * 1000
    connection.close()
    if first is None:
        sys.exit(f"{url}: no {marker!r} in {seen[:300]!r}")
    return first, seen


def done_source(body):
    """The `source` of the edge's `done` event."""
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        if block.startswith("event: done"):
            data = "".join(line[len("data:") :].strip() for line in block.split("\n") if line.startswith("data:"))
            return json.loads(data)["source"]
    sys.exit(f"no done event in {body[:300]!r}")


def percentile(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)]


def series(ask, n):
    ask(-1)  # one warm-up ask (first connection, the Worker's first use), not counted
    return [ask(i) for i in range(n)]


def main():
    groq_edge, ollama_edge, groq_fake, ollama_fake, n = sys.argv[1:6]
    n = int(n)
    question = "Will the moon answer question {}?"

    def fake(url, model, auth):
        headers = {"authorization": "Bearer bench"} if auth else {}

        def ask(i):
            body = {"model": model, "stream": True, "messages": [{"role": "user", "content": question.format(i)}]}
            return first_chunk_ms(url, body, headers, b'"content"')[0]

        return ask

    def edge(base, expected):
        def ask(i):
            body = {"question": question.format(i), "language": "en"}
            ms, seen = first_chunk_ms(f"{base}/api/ouija", body, {"accept": "text/event-stream"}, b"event: token")
            source = done_source(seen)
            if source != expected:
                sys.exit(f"{base}: answered by {source}, not {expected}")
            return ms

        return ask

    rows = []
    for path, direct, through in [
        ("Groq", fake(f"{groq_fake}/chat/completions", "llama-3.1-8b-instant", True), edge(groq_edge, "groq")),
        ("Ollama", fake(f"{ollama_fake}/api/chat", "qwen2.5:0.5b", False), edge(ollama_edge, "ollama")),
    ]:
        fake_ms = series(direct, n)
        edge_ms = series(through, n)
        added = statistics.median(edge_ms) - statistics.median(fake_ms)
        rows.append(
            f"| {path} | {n} | {statistics.median(fake_ms):.1f} / {percentile(fake_ms, 95):.1f} "
            f"| {statistics.median(edge_ms):.1f} / {percentile(edge_ms, 95):.1f} | {added:+.1f} |"
        )
    print("| Path | Asks | Fake's own TTFT p50 / p95 (ms) | Through the edge p50 / p95 (ms) | Edge adds (p50, ms) |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
