#!/usr/bin/env python3
"""The soak's driver (Python 3.11, stdlib only; started by bench/soak.sh, which starts the edges
and the fakes): for --seconds it sends mixed asks at a steady rate to every edge, streamed and
plain calls straight through ollama-proxy (which it runs, and restarts once halfway), and an attack
mix at a low rate; it flips the fake upstreams between faults by writing their mode files; it samples
the proxy's RSS and open fds every 10 s. Then it counts consultations in each edge's database,
prints the report (markdown, also written to --report) and exits 1 when a goal fails.
"""

import argparse
import collections
import glob
import http.client
import json
import os
import random
import select
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.parse

QUESTIONS = [
    ("Will I find love this year?", "en"), ("¿Encontraré trabajo pronto?", "es"),
    ("Should I change my career?", "en"), ("¿Mi familia estará bien?", "es"),
    ("Will my health improve?", "en"), ("¿Qué me depara el futuro?", "es"),
    ("Will I be rich?", "en"), ("¿Hay vida después de la muerte?", "es"),
    ("Is my spirit guide near?", "en"), ("¿Debo confiar en mi intuición?", "es"),
]
PERSONALITIES = ["wise", "cryptic", "dark", "playful", None]
# (groq mode, ollama mode): one step every 20-30 s, cycled. Mode words: examples/fake_upstream.rs.
FAULTS = [
    ("ok", "ok"), ("429:5", "ok"), ("ok", "hang"), ("500", "drip"), ("refused", "ok"), ("junk", "500"),
    ("hang", "refused"), ("drip", "429:5"), ("refused", "refused"), ("ok", "junk"), ("429:10", "garbage"),
    ("500", "hang"), ("hang", "hang"), ("garbage", "ok"),
]
TIMEOUT_S = 15


class Tally:
    """Thread-safe counters by (group, label)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.defaultdict(collections.Counter)
        self.ids = collections.defaultdict(list)
        self.seconds = collections.defaultdict(list)

    def add(self, group, label, ask_id=None, seconds=None):
        with self.lock:
            self.counts[group][label] += 1
            if ask_id is not None:
                self.ids[group].append(ask_id)
            if seconds is not None:
                self.seconds[group].append(seconds)


def log(start, message):
    print(f"[{time.monotonic() - start:6.1f}s] {message}", flush=True)


# --- plain HTTP ---------------------------------------------------------------------------------

def request(base, method, path, body=None, headers=None, timeout=TIMEOUT_S):
    """One request on a fresh connection: (status, headers, body) or raises OSError."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


def transport_label(error):
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        return "reset"
    return type(error).__name__


def status_class(status):
    return "200" if status == 200 else f"{status // 100}xx"


# --- asks through the edge ----------------------------------------------------------------------

def one_ask(edge, n, tally, rng_seed):
    """A mixed ask: plain or streamed (SSE), main route or alias, language and personality varied."""
    rng = random.Random(rng_seed)
    question, language = rng.choice(QUESTIONS)
    body = {"question": f"{question} ({n})"}
    if rng.random() < 0.7:
        body["language"] = language
    personality = rng.choice(PERSONALITIES)
    if personality or rng.random() < 0.5:
        body["personality"] = personality
    path = "/ouija/ask" if n % 5 == 0 else "/api/ouija"
    headers = {"content-type": "application/json"}
    if n % 3 == 0:
        headers["accept"] = "text/event-stream"
    started = time.monotonic()
    try:
        status, content_type, raw = request(edge["url"], "POST", path, json.dumps(body).encode(), headers)
    except (OSError, http.client.HTTPException) as error:
        tally.add(edge["name"], "transport " + transport_label(error))
        return
    if status != 200:
        tally.add(edge["name"], status_class(status))
        if status >= 500:
            tally.add(edge["name"] + " 5xx bodies", raw[:200].decode("utf-8", "replace"))
        return
    answer = parse_answer(content_type, raw)
    if answer is None or answer.get("source") not in ("groq", "ollama", "sqlite") or not answer.get("id"):
        tally.add(edge["name"], "200 unreadable")
        return
    tally.add(edge["name"], "200", ask_id=answer["id"], seconds=time.monotonic() - started)
    tally.add(edge["name"] + " sources", answer["source"])


def parse_answer(content_type, raw):
    """The ask's JSON, from a plain answer or from a stream's `done` event."""
    try:
        if content_type.startswith("text/event-stream"):
            event = None
            for line in raw.decode().splitlines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "done":
                    return json.loads(line[5:])
            return None
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


# --- calls straight through the proxy -----------------------------------------------------------

def one_proxy_call(proxy_url, key, n, tally, sigterm_at):
    """`/api/chat` streamed, `/api/chat` plain or `/api/tags`, with the bearer key. A call that
    was under way when the proxy got SIGTERM (`sigterm_at`, a list) is also counted on its own."""
    started = time.monotonic()
    outcome = proxy_call(proxy_url, key, n)
    tally.add("proxy " + outcome[0], outcome[1])
    if any(started <= t <= time.monotonic() for t in sigterm_at):
        tally.add("proxy in flight at SIGTERM", " ".join(outcome))


def proxy_call(proxy_url, key, n):
    """One call: (kind, outcome)."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    kind = ["chat stream", "chat plain", "tags"][n % 3]
    chat = {"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": f"hello {n}"}],
            "stream": kind == "chat stream"}
    try:
        if kind == "tags":
            status, _, raw = request(proxy_url, "GET", "/api/tags", headers=headers, timeout=10)
        else:
            status, _, raw = request(proxy_url, "POST", "/api/chat", json.dumps(chat).encode(), headers, 10)
    except (OSError, http.client.HTTPException) as error:
        return kind, "transport " + transport_label(error)
    label = str(status)
    if status == 200 and kind == "chat stream":
        lines = [line for line in raw.split(b"\n") if line.strip()]
        try:
            complete = len(lines) > 1 and json.loads(lines[-1]).get("done") is True
        except ValueError:
            complete = False
        label = "200 streamed whole" if complete else "200 not a whole stream"
    return kind, label


# --- the attack mix -----------------------------------------------------------------------------

def raw_exchange(base, parts, pause=0.0, timeout=TIMEOUT_S):
    """Sends `parts` on one connection (`pause` s apart), then reads the status line.
    Returns the status as a string, or `closed` / `reset` / `timeout` and the seconds it took."""
    url = urllib.parse.urlsplit(base)
    started = time.monotonic()
    try:
        with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
            for i, part in enumerate(parts):
                if i and pause:
                    # An answer (or a close) while still sending ends the attack.
                    if select.select([sock], [], [], pause)[0]:
                        break
                sock.sendall(part)
            line = sock.makefile("rb").readline()
    except TimeoutError:
        return "timeout", time.monotonic() - started
    except (ConnectionResetError, BrokenPipeError):
        return "reset", time.monotonic() - started
    elapsed = time.monotonic() - started
    if not line:
        return "closed", elapsed
    fields = line.split()
    return (fields[1].decode() if len(fields) > 1 else "garbled"), elapsed


def big_body(base, path, headers, size, chunked):
    """Sends a `size`-byte body in 64 KiB pieces while the server reads, stopping at the first sign
    of an answer (a server may answer 413 and stop reading long before the end)."""
    url = urllib.parse.urlsplit(base)
    head = f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
    piece = b"x" * 65536
    frame = b"10000\r\n" + piece + b"\r\n" if chunked else piece
    try:
        with socket.create_connection((url.hostname, url.port), timeout=TIMEOUT_S) as sock:
            sock.sendall(head.encode())
            pending, left = b"", size
            while left > 0 or pending:
                readable, writable, _ = select.select([sock], [sock], [], TIMEOUT_S)
                if readable:
                    break
                if not writable:
                    return "timeout"
                if not pending:
                    pending, left = frame, left - len(piece)
                    if chunked and left <= 0:
                        pending += b"0\r\n\r\n"
                pending = pending[sock.send(pending):]
            line = sock.makefile("rb").readline()
    except TimeoutError:
        return "timeout"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    fields = line.split()
    return fields[1].decode() if len(fields) > 1 else "closed"


def attacks(edges, proxy_url, key, header_timeout_s, body_timeout_s):
    """Every attack as (name, target, expected outcomes, fn returning the outcome)."""
    auth = f"Authorization: Bearer {key}\r\n"
    cases = []
    for edge in edges:
        url, name = edge["url"], edge["name"]

        def ask(body, url=url, edge=edge):
            status, content_type, raw = request(url, "POST", "/api/ouija", body, {"content-type": "application/json"})
            if status == 200:
                answer = parse_answer(content_type, raw) or {}
                edge["attack_ids"].append(answer.get("id"))
                if "\u202e" in answer.get("answer", ""):
                    return "200 with U+202E in the answer"
            return str(status)

        host = urllib.parse.urlsplit(url).netloc
        cases += [
            ("zero-width question", name, {"400"},
             lambda ask=ask: ask(json.dumps({"question": "\u200b\u200c\u200d\u2060\ufeff"}).encode())),
            ("U+202E question", name, {"200", "400"},
             lambda ask=ask: ask(json.dumps({"question": "\u202e?hcir eb I lliW"}, ensure_ascii=False).encode())),
            ("body over 8 KiB", name, {"413"},
             lambda ask=ask: ask(json.dumps({"question": "Will I?", "pad": "x" * 9000}).encode())),
            ("invalid JSON", name, {"400"}, lambda ask=ask: ask(b'{"question": "Will I')),
            ("wrong method", name, {"405"},
             lambda url=url: str(request(url, "PUT", "/api/ouija", b"{}", {"content-type": "application/json"})[0])),
            ("broken chunked framing", name, {"400", "closed", "reset"},
             lambda url=url, host=host: raw_exchange(url, [
                 f"POST /api/ouija HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".encode()])[0]),
            ("20 MB body", name, {"413", "reset", "closed"},
             lambda url=url: big_body(url, "/api/ouija", {"Content-Type": "application/json"}, 20 << 20, False)),
        ]
    host = urllib.parse.urlsplit(proxy_url).netloc

    def slowloris():
        head = f"GET /api/tags HTTP/1.1\r\nHost: {host}\r\n".encode()
        drip = [f"X-Slow-{i}: {i}\r\n".encode() for i in range(int(header_timeout_s) + 10)]
        outcome, elapsed = raw_exchange(proxy_url, [head, *drip], pause=1.0, timeout=header_timeout_s + 10)
        return f"{outcome} after header timeout" if elapsed >= header_timeout_s - 1 else f"{outcome} early"

    def slow_body():
        head = (f"POST /api/chat HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n"
                "Content-Length: 200\r\n\r\n").encode()
        outcome, _ = raw_exchange(proxy_url, [head, b'{"model":', b'"qwen'], pause=body_timeout_s + 5,
                                  timeout=body_timeout_s + 15)
        return outcome

    def raw(text):
        return lambda: raw_exchange(proxy_url, [text.encode()])[0]

    cases += [
        ("slowloris headers", "proxy", {"closed after header timeout", "reset after header timeout", "408 after header timeout"}, slowloris),
        ("slow body", "proxy", {"408", "502"}, slow_body),
        ("broken chunked framing", "proxy", {"400", "closed", "reset"},
         raw(f"POST /api/chat HTTP/1.1\r\nHost: {host}\r\n{auth}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n")),
        ("20 MB body", "proxy", {"413", "reset"},
         lambda: big_body(proxy_url, "/api/chat", {"Authorization": f"Bearer {key}"}, 20 << 20, False)),
        ("20 MB chunked body", "proxy", {"413", "reset", "502"},
         lambda: big_body(proxy_url, "/api/chat", {"Authorization": f"Bearer {key}"}, 20 << 20, True)),
        ("wrong method", "proxy", {"405"}, raw(f"POST /health HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n")),
        ("no key", "proxy", {"401"}, raw(f"GET /api/tags HTTP/1.1\r\nHost: {host}\r\n\r\n")),
        ("admin route", "proxy", {"403"}, raw(f"POST /api/pull HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 2\r\n\r\n{{}}")),
    ]
    return cases


def run_attack(case, tally, proxy_down):
    """Runs one attack; while the proxy restarts, any outcome on it is noted as such, not judged."""
    name, target, expected, attack = case
    restarting = target == "proxy" and proxy_down.is_set()
    try:
        outcome = attack()
    except (OSError, http.client.HTTPException) as error:
        outcome = "transport " + transport_label(error)
    if target == "proxy" and (restarting or proxy_down.is_set()):
        outcome, expected = outcome + " (proxy restarting)", {outcome + " (proxy restarting)"}
    tally.add("attacks", (name, target, outcome, outcome in expected))


# --- the proxy process --------------------------------------------------------------------------

class Proxy:
    """ollama-proxy on a fixed port; SIGTERM and start again on the same port."""

    def __init__(self, args):
        self.args = args
        self.process = None
        self.env = {
            "PATH": os.environ.get("PATH", ""), "RUST_LOG": "info,ollama_proxy::access=off",
            "OLLAMA_UPSTREAM": args.proxy_upstream, "PROXY_API_KEYS": args.proxy_key,
            "PORT": str(args.proxy_port), "PROXY_BIND": "127.0.0.1",
            **dict(v.split("=", 1) for v in args.proxy_env),
        }

    def start(self):
        log_file = open(self.args.proxy_log, "ab")
        self.process = subprocess.Popen([self.args.proxy_bin], env=self.env, stdout=log_file, stderr=log_file,
                                        stdin=subprocess.DEVNULL)
        for _ in range(200):
            try:
                request(self.url(), "GET", "/livez", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"ollama-proxy did not start; see {self.args.proxy_log}")

    def stop(self):
        """SIGTERM and wait; returns the seconds the drain took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - started

    def url(self):
        return f"http://127.0.0.1:{self.args.proxy_port}"

    def sample(self):
        """(pid, RSS in KiB, open fds) from /proc, or None when it is not running."""
        pid = self.process.pid
        try:
            with open(f"/proc/{pid}/status") as status:
                rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
            return pid, rss, len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            return None

    def in_flight(self):
        headers = {"authorization": f"Bearer {self.args.proxy_key}"}
        _, _, raw = request(self.url(), "GET", "/metrics", headers=headers, timeout=5)
        for line in raw.decode().splitlines():
            if line.startswith("ollama_proxy_in_flight"):
                return float(line.split()[-1])
        return None


# --- consultations recorded ---------------------------------------------------------------------

def recorded_ids(db_path):
    """Every consultation id in a SQLite file (spin-host's, or local D1's under --persist-to)."""
    candidates = glob.glob(os.path.join(db_path, "**", "*.sqlite"), recursive=True) if os.path.isdir(db_path) else [db_path]
    for path in candidates:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return [row[0] for row in db.execute("SELECT id FROM consultations")]
        except sqlite3.OperationalError:
            continue
        finally:
            db.close()
    raise SystemExit(f"no consultations table under {db_path}")


def dashboard_total(base):
    try:
        status, _, raw = request(base, "GET", "/dashboard", headers={"accept": "application/json"}, timeout=10)
        return json.loads(raw).get("total") if status == 200 else f"HTTP {status}"
    except (OSError, ValueError, http.client.HTTPException) as error:
        return f"unreadable ({error})"


# --- the run ------------------------------------------------------------------------------------

def every(period, until, action, stop):
    """Calls `action(n)` on its own thread every `period` s (open loop: a slow call never delays the next)."""
    def loop():
        n, next_at = 0, time.monotonic()
        while not stop.is_set() and time.monotonic() < until:
            threading.Thread(target=action, args=(n,), daemon=True).start()
            n += 1
            next_at += period
            stop.wait(max(0.0, next_at - time.monotonic()))
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--ask-rate", type=float, default=4, help="asks per second, per edge")
    parser.add_argument("--proxy-rate", type=float, default=2, help="calls per second straight to the proxy")
    parser.add_argument("--attack-every", type=float, default=2, help="seconds between two attacks")
    parser.add_argument("--fault-seconds", default="20-30", help="how long each fault step lasts")
    parser.add_argument("--edge", action="append", default=[], help="NAME=URL=DB (DB: SQLite file or D1 dir)")
    parser.add_argument("--mode-file", action="append", default=[], help="NAME=PATH of a fake's mode file")
    parser.add_argument("--proxy-bin", required=True)
    parser.add_argument("--proxy-port", type=int, required=True)
    parser.add_argument("--proxy-upstream", required=True)
    parser.add_argument("--proxy-key", required=True)
    parser.add_argument("--proxy-log", required=True)
    parser.add_argument("--proxy-env", action="append", default=[], help="NAME=VALUE for the proxy")
    parser.add_argument("--report", default="bench/results/soak.md")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--commit", default="the working tree", help="what is soaked, for the report")
    args = parser.parse_args()

    edges = [dict(zip(("name", "url", "db"), spec.split("=", 2)), attack_ids=[]) for spec in args.edge]
    mode_files = dict(spec.split("=", 1) for spec in args.mode_file)
    proxy_env = dict(v.split("=", 1) for v in args.proxy_env)
    header_timeout = int(proxy_env.get("PROXY_HEADER_TIMEOUT_MS", 10000)) / 1000
    body_timeout = int(proxy_env.get("PROXY_BODY_TIMEOUT_MS", 15000)) / 1000
    rng = random.Random(args.seed)
    tally, stop, samples, health, events = Tally(), threading.Event(), [], collections.defaultdict(list), []
    proxy_down, sigterm_at = threading.Event(), []
    start = time.monotonic()
    until = start + args.seconds

    def set_modes(groq, ollama):
        for name, mode in (("groq", groq), ("ollama", ollama)):
            with open(mode_files[name], "w") as f:
                f.write(mode + "\n")
        events.append(f"{time.monotonic() - start:.0f} s: Groq {groq}, Ollama {ollama}")
        log(start, f"faults: Groq {groq}, Ollama {ollama}")

    set_modes("ok", "ok")
    proxy = Proxy(args)
    proxy.start()
    lo, hi = (float(v) for v in args.fault_seconds.split("-"))
    cases = attacks(edges, proxy.url(), args.proxy_key, header_timeout, body_timeout)
    rng.shuffle(cases)

    workers = [every(1 / args.ask_rate, until, lambda n, e=e: one_ask(e, n, tally, rng.random()), stop) for e in edges]
    workers.append(every(1 / args.proxy_rate, until, lambda n: one_proxy_call(proxy.url(), args.proxy_key, n, tally, sigterm_at), stop))
    workers.append(every(args.attack_every, until, lambda n: run_attack(cases[n % len(cases)], tally, proxy_down), stop))

    restarted = False
    next_fault, step = time.monotonic() + rng.uniform(lo, hi), 1
    next_sample = time.monotonic()
    while time.monotonic() < until:
        now = time.monotonic()
        if now >= next_sample:
            next_sample += 10
            sample = proxy.sample()
            if sample:
                samples.append((now - start, *sample))
            for target, base in [("proxy", proxy.url())] + [(e["name"], e["url"]) for e in edges]:
                t0 = time.monotonic()
                try:
                    status = request(base, "GET", "/health", timeout=5)[0]
                except (OSError, http.client.HTTPException) as error:
                    status = transport_label(error)
                health[target].append((status, time.monotonic() - t0))
        if now >= next_fault:
            set_modes(*FAULTS[step % len(FAULTS)])
            step += 1
            next_fault = now + rng.uniform(lo, hi)
        if not restarted and now - start >= args.seconds / 2:
            restarted = True
            set_modes("ok", "ok")
            time.sleep(3)
            # Three streams (one chunk per 200 ms, about a second each) under way at the signal.
            for _ in range(3):
                threading.Thread(target=one_proxy_call, args=(proxy.url(), args.proxy_key, 0, tally, sigterm_at),
                                 daemon=True).start()
            time.sleep(0.3)
            now = time.monotonic()
            proxy_down.set()
            sigterm_at.append(now)
            drained = proxy.stop()
            proxy.start()
            proxy_down.clear()
            events.append(f"{now - start:.0f} s: proxy restarted (SIGTERM, drained in {drained:.1f} s, up again "
                          f"{time.monotonic() - now:.1f} s after the signal)")
            log(start, events[-1].split(": ", 1)[1])
        time.sleep(0.2)

    log(start, "load stopped; faults off; waiting for the last answers and the post-response writes")
    stop.set()
    set_modes("ok", "ok")
    deadline = time.monotonic() + TIMEOUT_S + 30
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(5)
    final = proxy.sample()
    if final:
        samples.append((time.monotonic() - start, *final))
    in_flight = proxy.in_flight()
    for edge in edges:
        edge["recorded"] = recorded_ids(edge["db"])
        edge["dashboard"] = dashboard_total(edge["url"])
    proxy.stop()

    report, failed = build_report(args, edges, tally, samples, health, events, in_flight)
    print(report)
    os.makedirs(os.path.dirname(args.report), exist_ok=True)
    with open(args.report, "w") as f:
        f.write(report + "\n")
    if failed:
        print("FAILED: " + "; ".join(failed))
        raise SystemExit(1)
    print("all goals met")


def quantile(ordered, q):
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_report(args, edges, tally, samples, health, events, in_flight):
    counts, failed = tally.counts, []
    out = [f"Soak of {args.commit}, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {args.seconds:.0f} s, {os.cpu_count()} cores; "
           f"{args.ask_rate:g} asks/s per edge, {args.proxy_rate:g} proxy calls/s, one attack every {args.attack_every:g} s; "
           f"faults flipped every {args.fault_seconds} s; proxy restarted once halfway (SIGTERM with streams flowing).", ""]

    out += ["## Asks through the edge", "",
            "| runtime | sent | 200 | 4xx | 5xx | transport errors | 200 in p50 / p95 / max | sources | recorded | answered, not recorded | recorded, not answered | answered twice | /dashboard total |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for edge in edges:
        c = counts[edge["name"]]
        transport = sum(v for k, v in c.items() if k.startswith("transport"))
        answered = tally.ids[edge["name"]] + [i for i in edge["attack_ids"] if i]
        recorded = edge["recorded"]
        missing = set(answered) - set(recorded)
        unasked = set(recorded) - set(answered)
        twice = len(answered) - len(set(answered)) + len(recorded) - len(set(recorded))
        sources = ", ".join(f"{k} {v}" for k, v in sorted(counts[edge["name"] + " sources"].items()))
        took = sorted(tally.seconds[edge["name"]]) or [0]
        out.append(f"| {edge['name']} | {sum(c.values())} | {c['200']} | {c['4xx']} | {c['5xx']} | "
                   f"{transport} ({', '.join(f'{k[10:]} {v}' for k, v in c.items() if k.startswith('transport')) or 'none'}) | "
                   f"{quantile(took, 0.5):.2f} / {quantile(took, 0.95):.2f} / {took[-1]:.2f} s | "
                   f"{sources} | {len(recorded)} | {len(missing)} | {len(unasked)} | {twice} | {edge['dashboard']} |")
        if c["5xx"]:
            failed.append(f"{edge['name']}: {c['5xx']} asks answered 5xx")
            for body, n in counts[edge["name"] + " 5xx bodies"].most_common(3):
                out.append(f"|  5xx body ×{n}: `{body}` |")
        if c["200 unreadable"]:
            failed.append(f"{edge['name']}: {c['200 unreadable']} answers unreadable")
        if missing or twice:
            failed.append(f"{edge['name']}: {len(missing)} answered asks not recorded, {twice} recorded twice")
        if edge["dashboard"] != len(recorded):
            failed.append(f"{edge['name']}: /dashboard total {edge['dashboard']} != {len(recorded)} rows")
        if len(unasked) > transport:
            failed.append(f"{edge['name']}: {len(unasked)} consultations no client saw answered (more than the transport errors)")
    out += ["", "(attack asks answered 200 count as answered; \"recorded, not answered\" are asks whose answer "
            "the client gave up on, at most the transport errors.)", ""]

    out += ["## Calls straight through ollama-proxy", "", "| call | outcomes |", "|---|---|"]
    for group in sorted(g for g in counts if g.startswith("proxy ")):
        out.append(f"| {group[6:]} | {', '.join(f'{k} {v}' for k, v in sorted(counts[group].items()))} |")

    cut = {k: v for k, v in counts["proxy in flight at SIGTERM"].items()
           if not k.endswith(("200", "200 streamed whole", "transport refused"))}
    if cut:
        failed.append(f"calls under way at the proxy's SIGTERM were not answered whole: {dict(cut)}")
    out += ["", "(\"in flight at SIGTERM\": calls under way when the proxy was told to stop; each must be answered "
            "whole, or refused if it had not connected yet.)"]

    out += ["", "## ollama-proxy process (sampled every 10 s from /proc)", ""]
    by_pid = collections.OrderedDict()
    for t, pid, rss, fds in samples:
        by_pid.setdefault(pid, []).append((t, rss, fds))
    out += ["| process | samples | RSS min / max / last (MiB) | open fds min / max / last |", "|---|---|---|---|"]
    for i, (pid, rows) in enumerate(by_pid.items()):
        rss = [r for _, r, _ in rows]
        fds = [f for _, _, f in rows]
        out.append(f"| {'first' if i == 0 else 'after restart'} (pid {pid}) | {len(rows)} | "
                   f"{min(rss) / 1024:.1f} / {max(rss) / 1024:.1f} / {rss[-1] / 1024:.1f} | {min(fds)} / {max(fds)} / {fds[-1]} |")
        if max(rss) > 64 * 1024:
            failed.append(f"proxy RSS reached {max(rss) / 1024:.1f} MiB (goal < 64)")
        # Flat: the last third of a life grows less than 25 % (and 4 MiB) over its middle third.
        third = max(1, len(rss) // 3)
        middle, last = max(rss[third:2 * third] or rss), max(rss[-third:])
        if last > middle * 1.25 and last - middle > 4096:
            failed.append(f"proxy RSS grew from {middle / 1024:.1f} to {last / 1024:.1f} MiB within one life")
    if by_pid:
        fds = [f for _, _, f in list(by_pid.values())[-1]]
        if fds[-1] > min(fds) + 16:
            failed.append(f"proxy holds {fds[-1]} fds after the load stopped (lowest {min(fds)})")
    out.append(f"\nIn flight after the load stopped: {in_flight} (goal 0). RSS series (MiB): "
               + " ".join(f"{r / 1024:.0f}" for _, _, r, _ in samples))
    if in_flight != 0:
        failed.append(f"proxy reports {in_flight} requests in flight after the load stopped")

    out += ["", "## /health every 10 s", "", "| target | answers | slowest | over 1 s |", "|---|---|---|---|"]
    for target, rows in health.items():
        by = collections.Counter(str(s) for s, _ in rows)
        out.append(f"| {target} | {', '.join(f'{k} ×{v}' for k, v in sorted(by.items()))} | "
                   f"{max(t for _, t in rows) * 1000:.0f} ms | {sum(t > 1 for _, t in rows)} |")

    out += ["", "## Attack mix", "", "| attack | target | outcomes | as expected |", "|---|---|---|---|"]
    rows = collections.defaultdict(collections.Counter)
    good = collections.Counter()
    for (name, target, outcome, ok), n in counts["attacks"].items():
        rows[(name, target)][outcome] += n
        good[(name, target)] += n if ok else 0
    for (name, target), outcomes in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        total = sum(outcomes.values())
        out.append(f"| {name} | {target} | {', '.join(f'{k} ×{v}' for k, v in outcomes.most_common())} | "
                   f"{good[(name, target)]}/{total} |")
        if target != "proxy" and any(k.startswith("5") for k in outcomes):
            failed.append(f"attack {name!r} got a 5xx from {target}")
        if good[(name, target)] != total:
            failed.append(f"attack {name!r} on {target}: {total - good[(name, target)]} unexpected outcomes")

    out += ["", "## Fault schedule", ""] + [f"- {e}" for e in events]
    out += ["", "Goals: " + ("all met." if not failed else "FAILED: " + "; ".join(failed))]
    return "\n".join(out), failed


if __name__ == "__main__":
    main()
