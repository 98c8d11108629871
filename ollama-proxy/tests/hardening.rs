//! Abuse regressions (issue #14): the exact bytes of each probe, over raw TCP, against the real
//! binary in front of the fake Ollama. Deadlines are kept small through the configuration; no test
//! asserts how fast something is, only what happens.

mod support;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{
    AfterAnswer, EARLY_ANSWER_ENV, KEY_A, Script, Step, assert_early_answer_relayed, bearer,
    early_answer_upstream, fake, get, metric, post, proxy, request, scripted, seen,
};

const CHAT: &str = r#"{"model":"qwen2.5:0.5b","messages":[{"role":"user","content":"Will it rain?"}]}"#;

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
}

/// Reads until the proxy closes (or resets) the connection; what came before.
fn read_until_closed(stream: &mut TcpStream) -> Result<String, std::io::Error> {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).map(|_| String::from_utf8_lossy(&bytes).into_owned())
}

/// Polls `check` every 20 ms for up to 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The header flood of the review: a request line, `Host`, then ~400 KB of `X-` lines and never the
/// blank line that ends the block.
fn unfinished_header_block() -> Vec<u8> {
    let mut raw = b"GET /livez HTTP/1.1\r\nHost: proxy.test\r\n".to_vec();
    for n in 0..100 {
        raw.extend_from_slice(format!("X-Pad-{n}: {}\r\n", "a".repeat(4000)).as_bytes());
    }
    raw
}

// 1. Memory: connection cap, header limits.

#[test]
fn connections_over_the_cap_are_refused_at_once() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("PROXY_MAX_CONNECTIONS", "4"), ("PROXY_HEADER_TIMEOUT_MS", "30000")]);
    // Four connections that never finish their headers hold every place.
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = connect(proxy.addr);
            stream.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n").expect("send");
            stream
        })
        .collect();
    // The acceptor takes connections in order, so the fifth finds every place held.
    let mut fifth = connect(proxy.addr);
    let _ = fifth.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
    // Refused (a 503 or a closed socket) well before the 30 s header deadline, never served.
    let answer = read_until_closed(&mut fifth).unwrap_or_default();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 503"), "{answer}");
    // A held connection finishing its request is served; once it is gone its place is free again.
    let mut first = held.remove(0);
    first.write_all(b"Connection: close\r\n\r\n").expect("finish");
    assert!(read_until_closed(&mut first).is_ok_and(|a| a.starts_with("HTTP/1.1 200")));
    drop(first);
    eventually("a freed place", || request(proxy.addr, "GET", "/livez", &[], "").status == 200);
    drop(held);
    eventually("the refusal counted", || {
        metric(&proxy, "ollama_proxy_rejected_total{reason=\"too_many_connections\"}") >= 1
    });
}

#[test]
fn an_unfinished_400_kb_header_block_gets_431_and_the_connection_is_closed() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("PROXY_HEADER_TIMEOUT_MS", "30000")]);
    let mut stream = connect(proxy.addr);
    // All of it goes through: the proxy reads (and throws away) what follows its answer.
    stream.write_all(&unfinished_header_block()).expect("the whole block is taken, no reset");
    let answer = read_until_closed(&mut stream).expect("an answer, then the end");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(get(proxy.addr, "/livez").status, 200);
}

#[test]
fn more_header_lines_than_allowed_get_431() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("PROXY_MAX_HEADERS", "20")]);
    let lines = (0..30).fold(String::new(), |mut lines, n| {
        let _ = write!(lines, "X-Line-{n}: 1\r\n");
        lines
    });
    let raw = format!("GET /livez HTTP/1.1\r\nHost: x\r\n{lines}\r\n");
    let mut stream = connect(proxy.addr);
    stream.write_all(raw.as_bytes()).expect("send");
    assert!(read_until_closed(&mut stream).is_ok_and(|a| a.starts_with("HTTP/1.1 431")));
}

// 3. In-flight slots cannot be pinned.

#[test]
fn a_client_that_stops_reading_a_stream_loses_its_slot_at_the_write_timeout() {
    let ollama = fake(&[]);
    let proxy = proxy(
        &ollama.url(),
        &[
            ("PROXY_MAX_IN_FLIGHT", "1"),
            ("PROXY_WRITE_TIMEOUT_MS", "1000"),
            ("UPSTREAM_IDLE_TIMEOUT_MS", "3000"),
        ],
    );
    let mut stuck = connect(proxy.addr);
    let raw = format!(
        "POST /api/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nx-fake-fault: flood\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    );
    stuck.write_all(raw.as_bytes()).expect("send");
    // Ollama floods the answer; this client never reads a byte of it.
    eventually("the stream holds the slot", || metric(&proxy, "ollama_proxy_in_flight") == 1);
    eventually("the slot released", || metric(&proxy, "ollama_proxy_in_flight") == 0);
    assert_eq!(post(proxy.addr, "/api/chat", CHAT).status, 200);
    drop(stuck);
}

#[test]
fn a_slow_request_body_holds_no_slot_and_gets_408_at_the_body_deadline() {
    let ollama = fake(&[]);
    let proxy = proxy(
        &ollama.url(),
        &[
            ("PROXY_MAX_IN_FLIGHT", "1"),
            ("PROXY_BODY_DEADLINE_MS", "1500"),
            ("PROXY_BODY_TIMEOUT_MS", "5000"),
        ],
    );
    let mut slow = connect(proxy.addr);
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        CHAT.len()
    );
    slow.write_all(head.as_bytes()).expect("send head");
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = slow.try_clone().expect("clone");
    let dripping = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // One byte every 200 ms: never a pause long enough for PROXY_BODY_TIMEOUT_MS.
            for byte in CHAT.bytes() {
                if stop.load(Ordering::Relaxed) || writer.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // The slow sender holds no slot: others are served meanwhile.
    assert_eq!(post(proxy.addr, "/api/chat", CHAT).status, 200);
    let answer = read_until_closed(&mut slow).unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    let _ = dripping.join();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(seen(&ollama), ["/api/chat"], "only the complete request reached Ollama");
}

// 4. /health fan-out.

#[test]
fn two_hundred_concurrent_health_calls_share_one_upstream_check() {
    let ollama = fake(&[]);
    let proxy = proxy(
        &ollama.url(),
        &[("HEALTH_CACHE_MS", "60000"), ("HEALTH_INTERVAL_MS", "60000"), ("PROXY_WORKERS", "2")],
    );
    let addr = proxy.addr;
    let callers: Vec<_> = (0..200)
        .map(|_| std::thread::spawn(move || request(addr, "GET", "/health", &[], "").status))
        .collect();
    for caller in callers {
        assert_eq!(caller.join().ok(), Some(200));
    }
    // /health reports the pool's state: Ollama only ever sees the first probe round.
    assert!(seen(&ollama).is_empty(), "{:?}", seen(&ollama));
    let probes = support::probes(&ollama);
    assert_eq!(probes, ["/api/version", "/api/tags", "/api/ps"], "{probes:?}");
    let connections =
        request(ollama.addr, "GET", "/__fake/connections", &[], "").json()["connections"].as_u64();
    // The probe's one connection, and the test's own two questions to the fake.
    assert!(connections.is_some_and(|n| n <= 4), "{connections:?} connections at Ollama");
    // /readyz answers from the same round.
    assert_eq!(request(addr, "GET", "/readyz", &[], "").status, 200);
    assert_eq!(support::probes(&ollama).len(), 3);
}

// 5. Broken chunked framing is the client's fault.

#[test]
fn broken_chunked_framing_is_a_400_and_nothing_reaches_ollama() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    for body in ["5\r\nhello\r\nzz\r\n\r\n", "ffffffffffffffffffff\r\nx\r\n0\r\n\r\n", "zz\r\n"] {
        let mut stream = connect(proxy.addr);
        let raw = format!(
            "POST /api/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        stream.write_all(raw.as_bytes()).expect("send");
        let answer = read_until_closed(&mut stream).unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 400"), "{body:?}: {answer}");
        assert!(answer.contains("malformed"), "{answer}");
    }
    assert!(seen(&ollama).is_empty(), "{:?}", seen(&ollama));
    assert_eq!(metric(&proxy, "ollama_proxy_rejected_total{reason=\"malformed_body\"}"), 3);
    assert_eq!(metric(&proxy, "ollama_proxy_rejected_total{reason=\"upstream_error\"}"), 0);
    assert!(!proxy.output().contains("upstream failed"), "{}", proxy.output());
}

// 6. A stalled log pipe.

#[test]
fn a_stalled_log_pipe_never_stops_serving_and_dropped_lines_are_counted() {
    let ollama = fake(&[]);
    let mut command = support::proxy_command();
    command
        .env("OLLAMA_UPSTREAM", ollama.url())
        .env("PROXY_API_KEYS", KEY_A)
        .env("PORT", "0")
        .env("PROXY_BIND", "127.0.0.1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = KillOnDrop(command.spawn().expect("starts"));
    let mut stdout = BufReader::new(child.0.stdout.take().expect("piped"));
    let mut line = String::new();
    while !line.contains("\"listening\"") {
        line.clear();
        assert!(stdout.read_line(&mut line).is_ok_and(|n| n > 0), "exited before listening");
    }
    let addr: SocketAddr =
        line.split('"').find_map(|word| word.parse().ok()).expect("the listening line names the address");
    // From here on nobody reads stdout: the pipe (64 KiB) fills after a few hundred access lines.
    let mut connection = connect(addr);
    for n in 0..3000 {
        let reply = support::exchange(&mut connection, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(reply.is_ok_and(|r| r.status == 200), "request {n} not answered");
    }
    let metrics = support::exchange(
        &mut connection,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n\r\n").as_bytes(),
    )
    .expect("metrics");
    let dropped: f64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("ollama_proxy_log_lines_dropped_total ")?.parse().ok())
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "{}", metrics.body);
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// 7. Methods and framing.

#[test]
fn unlisted_methods_get_405_with_allow_and_never_reach_ollama() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    for request_line in [
        format!("CONNECT {} HTTP/1.1", ollama.addr),
        "TRACE /api/tags HTTP/1.1".to_owned(),
        "OPTIONS /api/chat HTTP/1.1".to_owned(),
        "PUT /api/chat HTTP/1.1".to_owned(),
        "DELETE /api/delete HTTP/1.1".to_owned(),
        "BREW /api/tags HTTP/1.1".to_owned(),
    ] {
        let mut stream = connect(proxy.addr);
        let raw = format!(
            "{request_line}\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(raw.as_bytes()).expect("send");
        let reply = support::parse(&read_until_closed(&mut stream).unwrap_or_default());
        assert_eq!(reply.status, 405, "{request_line}: {}", reply.head);
        assert_eq!(reply.header("allow").as_deref(), Some("GET, HEAD, POST"), "{request_line}");
    }
    assert!(seen(&ollama).is_empty(), "{:?}", seen(&ollama));
}

#[test]
fn ollama_gets_framing_rebuilt_from_the_body_never_the_clients_transfer_encoding() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    let send = |coding: &str| {
        let mut stream = connect(proxy.addr);
        let raw = format!(
            "POST /v1/fake/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nConnection: close\r\n{coding}\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        );
        stream.write_all(raw.as_bytes()).expect("send");
        support::parse(&read_until_closed(&mut stream).unwrap_or_default())
    };
    let echo = send("Transfer-Encoding: chunked\r\n");
    assert_eq!(echo.status, 200, "{}", echo.body);
    let echo = echo.json();
    assert_eq!(echo["body_bytes"], 11);
    assert_eq!(echo["headers"]["content-length"], "11");
    assert!(echo["headers"].get("transfer-encoding").is_none(), "{echo}");
    for coding in [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let reply = send(coding);
        assert_eq!(reply.status, 501, "{coding}: {}", reply.body);
    }
    assert_eq!(seen(&ollama), ["/v1/fake/echo"]);
}

/// An upstream that answers every request with both `Content-Length: 3` and a chunked body.
fn upstream_with_both_lengths(body: &'static str) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            });
        }
    });
    addr
}

#[test]
fn a_reply_with_both_content_length_and_transfer_encoding_reaches_the_client_whole() {
    let body = r#"{"models":[{"name":"qwen2.5:0.5b"}]}"#;
    let upstream = upstream_with_both_lengths(body);
    let proxy = proxy(&format!("http://{upstream}"), &[]);
    let reply = get(proxy.addr, "/api/tags");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, body, "{}", reply.head);
    std::thread::sleep(Duration::from_millis(300));
    assert!(proxy.output().contains("\"route\":\"/api/tags\",\"status\":200"), "{}", proxy.output());
}

// 10. A too-large body gets a 413 the client can read.

#[test]
fn a_client_that_sends_a_20_mb_body_then_reads_gets_the_413_not_a_reset() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    let body = vec![b'x'; 20 << 20];
    let mut stream = connect(proxy.addr);
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // Like Python's urllib: send everything, then read.
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&body).expect("the whole body is taken, no reset");
    let answer = read_until_closed(&mut stream).expect("the answer, no reset");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(seen(&ollama).is_empty());
}

#[test]
fn python_urllib_reads_the_413_for_a_20_mb_body() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    let script = format!(
        r#"
import urllib.request, urllib.error
req = urllib.request.Request("{}/api/chat", data=b"x" * (20 << 20), headers={{"Authorization": "{}", "Content-Type": "application/json"}})
try:
    urllib.request.urlopen(req, timeout=20)
    print("no error")
except urllib.error.HTTPError as e:
    print("status", e.code)
"#,
        proxy.url(),
        bearer(KEY_A)
    );
    let Ok(output) = std::process::Command::new("python3").args(["-c", &script]).output() else {
        eprintln!("python3 not found; skipped");
        return;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim(), "status 413", "{stdout}{}", String::from_utf8_lossy(&output.stderr));
}

// 11. A broken or hostile upstream: the proxy buffers a bounded head, and a broken message is a
// 502 before the head and a cut connection after it.

/// An upstream that reads each request's head and answers `answer`, then closes.
fn raw_upstream(answer: Vec<u8>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let _ = stream.write_all(&answer);
            });
        }
    });
    addr
}

#[test]
fn a_response_head_over_64_kib_or_cut_short_is_a_502() {
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    for n in 0..20 {
        huge.extend_from_slice(format!("X-Pad-{n}: {}\r\n", "a".repeat(4000)).as_bytes());
    }
    huge.extend_from_slice(b"Content-Length: 2\r\n\r\n{}");
    for answer in
        [huge, b"HTTP/1.1 200 OK\r\nContent-Le".to_vec(), b"HTTP/1.1 2000 What\r\n\r\n".to_vec(), Vec::new()]
    {
        let upstream = raw_upstream(answer);
        let proxy = proxy(&format!("http://{upstream}"), &[]);
        assert_eq!(get(proxy.addr, "/api/tags").status, 502);
    }
}

#[test]
fn a_body_cut_short_or_badly_chunked_cuts_the_clients_response() {
    let short =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"models\":"
            .to_vec();
    let upstream = raw_upstream(short);
    let cut = proxy(&format!("http://{upstream}"), &[]);
    let reply = get(cut.addr, "/api/tags");
    assert_eq!((reply.status, reply.header("content-length").as_deref()), (200, Some("100")));
    assert_eq!(reply.body, "{\"models\":", "the bytes that came, then the connection closes");
    let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{\"a\":1\r\nzz\r\n}\r\n0\r\n\r\n"
        .to_vec();
    let upstream = raw_upstream(bad);
    let chunked = proxy(&format!("http://{upstream}"), &[]);
    let mut stream = connect(chunked.addr);
    let raw = format!(
        "GET /api/tags HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(raw.as_bytes()).expect("send");
    let text = read_until_closed(&mut stream).unwrap_or_default();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("{\"a\":1"), "the good chunk is passed on: {text}");
    assert!(!text.ends_with("0\r\n\r\n"), "no end of body is made up: {text}");
}

// 12. Reuse: a connection Ollama left open after an answer that is not cleanly over is never used
// for another request.

/// What a connection's later requests get: proof that it was used again.
fn reused() -> Vec<Step> {
    vec![Step::Write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nREUSED".to_vec())]
}

/// The marker of a request to `/api/tags?n=<marker>`.
fn marker(target: &str) -> &str {
    target.rsplit('=').next().unwrap_or_default()
}

/// A whole response that must never reach a client: bytes past the end of a message.
const STRAY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY";

/// Sends `/api/tags?n=one`, then `/api/tags?n=two` 300 ms later, through a proxy (one worker) in front of an
/// upstream that answers the first request on each connection with `first` and any later one with
/// [`reused`]; the second reply's status line, status and body.
fn second_reply(first: Script) -> (String, u16, String) {
    let upstream = scripted(first);
    // One worker: each has its own idle connections.
    let proxy = proxy(&upstream.url(), &[("PROXY_WORKERS", "1")]);
    let one = get(proxy.addr, "/api/tags?n=one");
    assert!(!one.body.contains("STRAY") && !one.body.contains("REUSED"), "{}", one.body);
    std::thread::sleep(Duration::from_millis(300));
    let two = get(proxy.addr, "/api/tags?n=two");
    (two.head.lines().next().unwrap_or_default().to_owned(), two.status, two.body)
}

#[test]
fn a_connection_is_reused_after_a_clean_answer() {
    // The control: the upstream's answer to a reused connection is seen by the client.
    let clean = |target: &str, nth: usize| {
        if nth > 0 {
            return reused();
        }
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}", marker(target));
        vec![Step::Write(answer.into_bytes())]
    };
    assert_eq!(second_reply(clean), ("HTTP/1.1 200 OK".to_owned(), 200, "REUSED".to_owned()));
}

#[test]
fn a_connection_left_open_after_a_risky_answer_is_never_used_again() {
    let cases: [(&str, Script); 6] = [
        ("stray bytes after a length body, in the same segment", |target, nth| {
            if nth > 0 {
                return reused();
            }
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}", marker(target));
            vec![Step::Write([answer.as_bytes(), STRAY].concat())]
        }),
        ("stray bytes 100 ms after a length body", |target, nth| {
            if nth > 0 {
                return reused();
            }
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}", marker(target));
            vec![
                Step::Write(answer.into_bytes()),
                Step::Wait(Duration::from_millis(100)),
                Step::Write(STRAY.to_vec()),
            ]
        }),
        ("both Content-Length and Transfer-Encoding", |target, nth| {
            if nth > 0 {
                return reused();
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\r\n0\r\n\r\n",
                marker(target)
            );
            vec![Step::Write(answer.into_bytes())]
        }),
        ("HTTP/1.0 with keep-alive", |target, nth| {
            if nth > 0 {
                return reused();
            }
            let answer = format!(
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n{}",
                marker(target)
            );
            vec![Step::Write(answer.into_bytes())]
        }),
        ("Connection: close, left open", |target, nth| {
            if nth > 0 {
                return reused();
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\n{}",
                marker(target)
            );
            vec![Step::Write(answer.into_bytes())]
        }),
        ("a 204 with a body", |_, nth| {
            if nth > 0 {
                return reused();
            }
            vec![Step::Write(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nSTRAY".to_vec())]
        }),
    ];
    for (case, first) in cases {
        let (line, status, body) = second_reply(first);
        let expected = if status == 204 { "" } else { "two" };
        assert_eq!(
            (status, body.as_str()),
            (if expected.is_empty() { 204 } else { 200 }, expected),
            "{case}"
        );
        // Whatever version Ollama spoke, the client's hop is HTTP/1.1.
        assert!(line.starts_with("HTTP/1.1 "), "{case}: {line}");
    }
}

// 13. An early answer: a box that answers before it has read the whole body (Go's net/http does so
// for a body it rejects early, then closes with the rest unread: a reset) gets its answer to the
// client, and is neither ejected nor sent the request again.

#[test]
fn an_answer_before_the_body_is_all_sent_reaches_the_client_and_the_box_stays_in() {
    for after in [AfterAnswer::Close, AfterAnswer::Hold] {
        let (upstream, big) = early_answer_upstream(after);
        let proxy = proxy(&format!("http://{upstream}"), &EARLY_ANSWER_ENV);
        assert_early_answer_relayed(&proxy, &upstream.to_string(), &big, after);
    }
}

// 14. The keep-alive race: a reused connection that Ollama closes as the proxy takes it gets a GET
// again on a fresh connection to the same box, which is not ejected; never a POST.

#[test]
fn a_reused_connection_closed_before_any_answer_is_replaced_and_the_box_stays_in() {
    // Each connection answers its first request and closes on its second without a byte: what
    // the proxy sees when Ollama's idle close crosses its checkout. The probes get real answers.
    let upstream = scripted(|target, nth| {
        if !target.contains("?n=") {
            let probe = "{\"version\":\"0.5.0\",\"models\":[]}";
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{probe}", probe.len());
            return vec![Step::Write(answer.into_bytes())];
        }
        if nth > 0 {
            return vec![Step::Close];
        }
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}", marker(target));
        vec![Step::Write(answer.into_bytes())]
    });
    let env = [
        ("PROXY_WORKERS", "1"),
        ("HEALTH_INTERVAL_MS", "60000"),
        ("UPSTREAM_EJECT_MS", "60000"),
        ("UPSTREAM_EJECT_MAX_MS", "60000"),
    ];
    let proxy = proxy(&upstream.url(), &env);
    assert_eq!(get(proxy.addr, "/api/tags?n=one").body, "one");
    let connections = upstream.connections();
    let two = get(proxy.addr, "/api/tags?n=two");
    assert_eq!((two.status, two.body.as_str()), (200, "two"));
    assert_eq!(upstream.connections(), connections + 1, "one fresh connection");
    let twice = upstream.seen().iter().filter(|target| *target == "/api/tags?n=two").count();
    assert_eq!(twice, 2, "once on the closed connection, once on the fresh one");
    let label = format!("{{upstream=\"{}\"}}", upstream.addr);
    assert_eq!(metric(&proxy, &format!("ollama_proxy_upstream_up{label}")), 1, "not ejected");
    assert_eq!(metric(&proxy, &format!("ollama_proxy_upstream_failures_total{label}")), 0);

    // A POST may have reached the box before the close: it is not sent to it again (one box
    // here, so nowhere else to go: a 502).
    let post = post(proxy.addr, "/api/chat?n=pst", "{}");
    assert_eq!(post.status, 502, "{}", post.body);
    let sent = upstream.seen().iter().filter(|target| *target == "/api/chat?n=pst").count();
    assert_eq!(sent, 1, "a POST that left is not repeated on the same box");
}
