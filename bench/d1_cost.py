"""Drives bench/d1-cost.sh: asks the edge along each path of the chain and sums D1's own `meta`
per ask from the Worker's log lines (`d1 ask: ...` before the response, `d1 record: ...` after
it). Usage: d1_cost.py EDGE_URL GROQ_URL EDGE_LOG GROQ_MODE_FILE OLLAMA_MODE_FILE ASKS"""

import json
import re
import statistics
import sys
import time
import urllib.error
import urllib.request

EDGE, GROQ, LOG, GROQ_MODE, OLLAMA_MODE, ASKS = sys.argv[1:7]
ASKS = int(ASKS)
LINE = re.compile(r"d1 (ask|record) (\S+): round_trips=(\d+) rows_read=(\d+) rows_written=(\d+)")
# D1's free tier, per day (developers.cloudflare.com/d1/platform/pricing).
FREE_READS, FREE_WRITES = 5_000_000, 100_000
asker_number = 0


def post(url, body, address=None):
    headers = {"content-type": "application/json"}
    if address:
        headers["cf-connecting-ip"] = address
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), time.perf_counter() - started
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), time.perf_counter() - started


def ask(question, address):
    return post(f"{EDGE}/api/ouija", {"question": question, "language": "en", "personality": "wise"}, address)


def new_asker():
    global asker_number
    asker_number += 1
    return f"198.51.{asker_number // 250}.{asker_number % 250 + 1}"


def log_lines():
    with open(LOG, encoding="utf-8", errors="replace") as log:
        return [m.groups() for m in LINE.finditer(log.read())]


def measure(name, one_ask, expect):
    """Runs ASKS asks (each `one_ask(i)` returns the measured reply) and sums, for each measured
    ask, its own log lines: `ask` (before the response) and `record` (after), found by the
    consultation's id; a limited ask has no id and no record."""
    totals = {"ask": [0, 0, 0], "record": [0, 0, 0]}
    for i in range(ASKS):
        seen = len(log_lines())
        status, body, _ = one_ask(i)
        got = "remembered" if body.get("remembered") else body.get("source") if status == 200 else status
        assert got == expect, f"{name}: expected {expect}, got {status} {body}"
        wanted = body.get("id", "-")
        for _ in range(50):  # the record is written after the response (wait_until)
            lines = log_lines()[seen:]
            mine = [line for line in lines if line[1] == wanted]
            if wanted == "-":  # the last refused ask's lines: its `ask` and the `record` after it
                last = max((i for i, line in enumerate(mine) if line[0] == "ask"), default=None)
                mine = [] if last is None else mine[last:last + 2]
            if any(line[0] == "record" for line in mine):
                break
            time.sleep(0.1)
        for phase, _, *numbers in mine:
            for k, value in enumerate(numbers):
                totals[phase][k] += int(value)
    return name, {phase: [v / ASKS for v in values] for phase, values in totals.items()}


def groq_answers(i):
    return ask(f"Will question {i} of the groq path come true?", new_asker())


def remembered(i):
    address = new_asker()
    ask(f"Will remembered question {i} come true?", address)
    time.sleep(0.3)
    return ask(f"Will remembered question {i} come true?", address)


def limited(i):
    address = new_asker()
    for n in range(3):
        ask(f"Will limited question {i}.{n} come true?", address)
    return ask(f"Will limited question {i}.3 come true?", address)


def set_mode(path, mode):
    with open(path, "w", encoding="utf-8") as f:
        f.write(mode)
    time.sleep(0.3)  # the fake re-reads its mode every 100 ms


def latency(url, body, headers, n=50):
    samples = []
    for _ in range(n):
        request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), sorted(samples)[int(n * 0.95) - 1]


def fresh_asks(n):
    """n asks one at a time, each from a new asker with a new question (no memory, no limit)."""
    samples = []
    for i in range(n):
        _, body, took = ask(f"Will latency question {i} come true?", new_asker())
        if body.get("source") != "groq":
            with urllib.request.urlopen(f"{EDGE}/dashboard") as response:
                sys.exit(f"ask {i} not answered by Groq: {body}\n{response.read().decode()}")
        samples.append(took * 1000)
    return statistics.median(samples), sorted(samples)[int(n * 0.95) - 1]


# The chain's added latency over the fake Groq, one request at a time, while Groq answers.
direct = latency(f"{GROQ}/chat/completions",
                 {"model": "llama-3.1-8b-instant", "messages": [{"role": "user", "content": "hi"}]},
                 {"content-type": "application/json", "authorization": "Bearer bench"})
through = fresh_asks(50)
rows = [measure("Groq answers", groq_answers, "groq"), measure("remembered", remembered, "remembered"),
        measure("limited (429)", limited, 429)]
# Groq cools down after a 429 (one ask spends it), then Ollama answers.
set_mode(GROQ_MODE, "429:600")
ask("Will Groq cool down?", new_asker())
rows.append(measure("Groq cooling down → Ollama", lambda i: ask(f"Will cooled question {i} be?", new_asker()), "ollama"))
# Ollama refused three times opens its breaker; then canned answers.
set_mode(OLLAMA_MODE, "refused")
for n in range(3):
    ask(f"Will Ollama fail {n}?", new_asker())
rows.append(measure("canned (both held back)", lambda i: ask(f"Will canned question {i} be?", new_asker()), "sqlite"))

print(f"D1 cost per ask under wrangler dev (local D1), {time.strftime('%Y-%m-%d')}, {ASKS} asks per path")
print()
print("| path | round trips before the response | rows read | rows written (ask + record) | asks/day on D1's free tier |")
print("|---|---|---|---|---|")
for name, per in rows:
    trips = per["ask"][0]
    read = per["ask"][1] + per["record"][1]
    written = per["ask"][2] + per["record"][2]
    per_day = min(FREE_READS / read if read else float("inf"), FREE_WRITES / written if written else float("inf"))
    print(f"| {name} | {trips:.2f} | {read:.1f} | {written:.2f} ({per['ask'][2]:.2f} + {per['record'][2]:.2f}) | {per_day:,.0f} |")
print()
print(f"Chain's added latency over the fake Groq (50 asks one at a time, each a new asker and question): "
      f"fake Groq directly p50 {direct[0]:.1f} ms / p95 {direct[1]:.1f} ms; through the edge "
      f"p50 {through[0]:.1f} ms / p95 {through[1]:.1f} ms; added p50 {through[0] - direct[0]:.1f} ms.")
