//! End-to-end: the real `ollama-proxy` binary on loopback in front of the fake Ollama.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{
    AfterAnswer, EARLY_ANSWER_ENV, KEY_A, KEY_B, assert_early_answer_relayed, bearer,
    early_answer_tls_upstream, fake, get, post, proxy, request,
};

const CHAT: &str = r#"{"model":"qwen2.5:0.5b","messages":[{"role":"user","content":"Will it rain?"}]}"#;

#[test]
fn no_key_gets_401_with_www_authenticate() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    let reply = request(proxy.addr, "GET", "/api/tags", &[], "");
    assert_eq!(reply.status, 401);
    assert!(reply.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    assert_eq!(reply.header("content-type").as_deref(), Some("application/problem+json"));
    assert_eq!(reply.json()["status"], 401);
}

#[test]
fn wrong_key_gets_401_with_www_authenticate() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    for credential in
        [bearer("test-key-alpha-012345678"), bearer("nope"), format!("Basic {KEY_A}"), KEY_A.to_owned()]
    {
        let reply = request(proxy.addr, "GET", "/api/tags", &[("Authorization", &credential)], "");
        assert_eq!(reply.status, 401, "{credential}");
        assert!(reply.header("www-authenticate").is_some());
    }
}

#[test]
fn each_configured_key_is_accepted() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    for key in [KEY_A, KEY_B] {
        let reply = request(proxy.addr, "GET", "/api/tags", &[("Authorization", &bearer(key))], "");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["models"][0]["name"], "qwen2.5:0.5b");
    }
}

#[test]
fn every_allow_listed_route_is_forwarded() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    let model = r#"{"model":"qwen2.5:0.5b"}"#;
    for (method, path, body) in [
        ("GET", "/api/version", ""),
        ("GET", "/api/tags", ""),
        ("GET", "/api/ps", ""),
        ("POST", "/api/show", model),
        ("POST", "/api/embed", r#"{"model":"qwen2.5:0.5b","input":"hi"}"#),
        ("POST", "/api/embeddings", r#"{"model":"qwen2.5:0.5b","prompt":"hi"}"#),
        ("POST", "/api/chat", CHAT),
        ("POST", "/api/generate", r#"{"model":"qwen2.5:0.5b","prompt":"hi","stream":false}"#),
        ("GET", "/v1/models", ""),
        ("POST", "/v1/chat/completions", CHAT),
    ] {
        let reply = request(proxy.addr, method, path, &[("Authorization", &bearer(KEY_A))], body);
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.body);
    }
}

#[test]
fn model_management_and_path_tricks_never_reach_ollama() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    for (path, status) in [
        ("/api/pull", 403),
        ("/api/push", 403),
        ("/api/create", 403),
        ("/api/delete", 403),
        ("/api/copy", 403),
        ("/api/blobs/sha256:x", 403),
        ("/api/%70ull", 403),
        ("/API/PULL", 403),
        ("/api/Pull", 403),
        ("/api//pull", 400),
        ("/api/tags/../pull", 400),
        ("/api/./pull", 400),
        ("/api%2fpull", 400),
        ("/api/%2570ull", 400),
        ("/api/pull/", 400),
        ("//api/pull", 400),
        ("/", 404),
        ("/API/TAGS", 404),
        ("/api/unknown", 404),
    ] {
        let reply =
            request(proxy.addr, "POST", path, &[("Authorization", &bearer(KEY_A))], r#"{"model":"x"}"#);
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        assert_eq!(reply.header("content-type").as_deref(), Some("application/problem+json"), "{path}");
    }
    let seen = request(ollama.addr, "GET", "/__fake/seen", &[], "").json();
    assert_eq!(seen, serde_json::json!([]), "Ollama saw a refused request");
}

#[test]
fn model_management_is_forwarded_when_explicitly_allowed() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("PROXY_ALLOW_ADMIN", "true")]);
    let reply = post(proxy.addr, "/api/pull", r#"{"model":"qwen2.5:0.5b"}"#);
    assert_eq!(reply.status, 200);
    assert_eq!(post(proxy.addr, "/API/PULL", "{}").status, 403);
}

#[test]
fn upstream_gets_its_own_host_and_never_the_client_key() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    let echo = get(proxy.addr, "/v1/fake/echo?x=1").json();
    assert_eq!(echo["headers"]["host"], ollama.addr.to_string());
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");
    assert_eq!(echo["query"], "x=1");
    assert!(echo["headers"]["x-request-id"].as_str().is_some_and(|id| !id.is_empty()));
}

#[test]
fn streamed_chat_chunks_arrive_before_ollama_finishes() {
    let ollama = fake(&["--chunk-delay-ms", "300"]);
    let proxy = proxy(&ollama.url(), &[]);
    let pieces = support::timed_stream(proxy.addr, "/api/chat", CHAT);
    let first = pieces.iter().find(|(_, text)| text.contains("\"done\":false")).expect("a content chunk");
    let last = pieces.iter().find(|(_, text)| text.contains("\"done\":true")).expect("the final chunk");
    // Five content chunks and the final one, 300 ms apart: the last comes ~1.5 s after the first.
    assert!(first.0 < 700, "first chunk after {} ms", first.0);
    assert!(last.0 >= first.0 + 1200, "first at {} ms, last at {} ms", first.0, last.0);
    assert!(pieces.len() >= 5, "chunks were merged: {pieces:?}");
}

#[test]
fn streamed_generate_and_sse_chunks_arrive_before_ollama_finishes() {
    let ollama = fake(&["--chunk-delay-ms", "300"]);
    let proxy = proxy(&ollama.url(), &[]);
    let generate = r#"{"model":"qwen2.5:0.5b","prompt":"hi"}"#;
    let sse = r#"{"model":"qwen2.5:0.5b","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    for (path, body, marker) in
        [("/api/generate", generate, "\"response\""), ("/v1/chat/completions", sse, "data: ")]
    {
        let pieces = support::timed_stream(proxy.addr, path, body);
        let first = pieces.iter().find(|(_, text)| text.contains(marker)).expect("a chunk");
        let total = pieces.last().map_or(0, |p| p.0);
        assert!(first.0 < 700 && total >= first.0 + 1200, "{path}: first {} ms, end {total} ms", first.0);
    }
}

#[test]
fn oversized_body_gets_413_without_reaching_ollama() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("PROXY_MAX_BODY_BYTES", "1024")]);
    let big = format!(r#"{{"model":"qwen2.5:0.5b","prompt":"{}"}}"#, "x".repeat(2048));
    let reply = post(proxy.addr, "/api/generate", &big);
    assert_eq!(reply.status, 413);
    let seen = request(ollama.addr, "GET", "/__fake/seen", &[], "").json();
    assert_eq!(seen, serde_json::json!([]));
}

#[test]
fn oversized_chunked_body_gets_413() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("PROXY_MAX_BODY_BYTES", "1024")]);
    let mut stream = TcpStream::connect(proxy.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let chunk = "x".repeat(4000);
    let raw = format!(
        "POST /api/generate HTTP/1.1\r\nHost: p\r\nConnection: close\r\nAuthorization: Bearer {KEY_A}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    stream.write_all(raw.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert_eq!(support::parse(&answer).status, 413, "{answer}");
}

#[test]
fn too_many_in_flight_gets_503_with_retry_after() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("PROXY_MAX_IN_FLIGHT", "1"), ("PROXY_RETRY_AFTER_SECS", "7")]);
    let addr = proxy.addr;
    let held = std::thread::spawn(move || {
        request(
            addr,
            "POST",
            "/api/chat",
            &[("Authorization", &bearer(KEY_A)), ("x-fake-fault", "drip")],
            CHAT,
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let reply = post(proxy.addr, "/api/chat", CHAT);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after").as_deref(), Some("7"));
    assert_eq!(held.join().map(|r| r.status).ok(), Some(200));
    // The slot is free again once the stream has ended.
    assert_eq!(post(proxy.addr, "/api/chat", CHAT).status, 200);
}

#[test]
fn slow_headers_are_cut() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("PROXY_HEADER_TIMEOUT_MS", "500")]);
    let mut stream = TcpStream::connect(proxy.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let started = Instant::now();
    stream.write_all(b"GET /api/tags HTTP/1.1\r\nHost: p\r\nX-Slow: ").expect("write");
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "connection held for {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(400), "cut too early: {elapsed:?}");
}

/// Reads one response with a `Content-Length` body off a keep-alive connection: its status.
fn read_one_reply(stream: &mut TcpStream) -> u16 {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("read head"), 1, "closed mid-head");
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("a content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("read body");
    head[9..12].parse().expect("a status")
}

#[test]
fn the_header_deadline_restarts_with_each_keep_alive_request() {
    // A connection keeps one timer for its header deadline, armed at the first wait and pushed
    // out after: the second wait must get its full 600 ms, not what was left of the first one's,
    // and must still be cut when it runs out.
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("PROXY_HEADER_TIMEOUT_MS", "600"), ("PROXY_WORKERS", "1")]);
    let mut stream = TcpStream::connect(proxy.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let ask = format!("GET /api/tags HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {KEY_A}\r\n\r\n");
    stream.write_all(ask.as_bytes()).expect("write");
    assert_eq!(read_one_reply(&mut stream), 200);
    std::thread::sleep(Duration::from_millis(400));
    stream.write_all(ask.as_bytes()).expect("write");
    assert_eq!(read_one_reply(&mut stream), 200);
    let second_wait = Instant::now();
    // Past the first wait's deadline (~600 ms after the first reply), the head not finished.
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(b"GET /api/tags HTTP/1.1\r\nHost: p\r\nX-Slow: ").expect("write");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let held = second_wait.elapsed();
    assert!(held >= Duration::from_millis(500), "cut at the first wait's deadline: {held:?}");
    assert!(held < Duration::from_secs(3), "connection held for {held:?}");
}

#[test]
fn stalled_request_body_gets_408() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("PROXY_BODY_TIMEOUT_MS", "500")]);
    let mut stream = TcpStream::connect(proxy.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: p\r\nConnection: close\r\nAuthorization: Bearer {KEY_A}\r\nContent-Length: 100\r\n\r\n{{\"model\""
    );
    stream.write_all(head.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert_eq!(support::parse(&answer).status, 408, "{answer}");
}

#[test]
fn ollama_down_gets_502() {
    let proxy = proxy(&format!("http://{}", support::closed_addr()), &[]);
    let reply = post(proxy.addr, "/api/chat", CHAT);
    assert_eq!(reply.status, 502);
    assert!(!reply.body.contains("127.0.0.1"), "internal detail leaked: {}", reply.body);
}

/// A chat the fake Ollama accepts and never answers.
fn chat_that_hangs(addr: std::net::SocketAddr) -> support::Reply {
    request(addr, "POST", "/api/chat", &[("Authorization", &bearer(KEY_A)), ("x-fake-fault", "hang")], CHAT)
}

#[test]
fn ollama_hanging_gets_504() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("UPSTREAM_TIMEOUT_MS", "500")]);
    let started = Instant::now();
    let reply = chat_that_hangs(proxy.addr);
    assert_eq!(reply.status, 504);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_reused_upstream_connection_gives_each_request_its_own_full_timeout() {
    // One worker, so the second request reuses the first one's upstream connection, whose timer
    // was armed for the first request's deadline and is pushed out, not obeyed.
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("UPSTREAM_TIMEOUT_MS", "500"), ("PROXY_WORKERS", "1")]);
    assert_eq!(post(proxy.addr, "/api/chat", CHAT).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let reply = chat_that_hangs(proxy.addr);
    assert_eq!(reply.status, 504);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(450), "cut at the earlier request's deadline: {waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn ollama_errors_are_passed_through() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    let reply = request(
        proxy.addr,
        "POST",
        "/api/chat",
        &[("Authorization", &bearer(KEY_A)), ("x-fake-fault", "error")],
        CHAT,
    );
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["error"], "fake internal error");
}

#[test]
fn health_is_ok_when_ollama_and_targets_answer() {
    let ollama = fake(&[]);
    let edge = fake(&[]);
    let target = format!("{}/api/version", edge.url());
    let proxy = proxy(&ollama.url(), &[("HEALTH_TARGETS", &target)]);
    let reply = request(proxy.addr, "GET", "/health", &[], "");
    assert_eq!(reply.status, 200);
    let health = reply.json();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["checks"]["ollama"]["version"], "0.12.6");
    assert_eq!(health["checks"]["ollama"]["model_present"], true);
    assert_eq!(health["checks"]["targets"][0]["status"], "ok");
}

#[test]
fn health_answers_within_a_second_when_everything_hangs() {
    let ollama = fake(&["--fault", "hang"]);
    let targets = format!("{0}/health,{0}/other", ollama.url());
    let proxy = proxy(&ollama.url(), &[("HEALTH_TARGETS", &targets)]);
    let started = Instant::now();
    let reply = request(proxy.addr, "GET", "/health", &[], "");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert_eq!(reply.status, 200);
    let health = reply.json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"]["ollama"]["status"], "down");
    assert_eq!(health["checks"]["targets"][1]["error"], "timeout");
}

#[test]
fn ollama_down_is_degraded_not_critical() {
    let proxy = proxy(&format!("http://{}", support::closed_addr()), &[]);
    let reply = request(proxy.addr, "GET", "/health", &[], "");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "degraded");
    assert_eq!(request(proxy.addr, "GET", "/livez", &[], "").status, 200);
    assert_eq!(request(proxy.addr, "GET", "/readyz", &[], "").status, 503);
}

#[test]
fn readyz_is_503_when_the_model_is_missing() {
    let ollama = fake(&["--model", "llama3.2:1b"]);
    let proxy = proxy(&ollama.url(), &[]);
    let reply = request(proxy.addr, "GET", "/readyz", &[], "");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["reason"], "model missing");
    let health = request(proxy.addr, "GET", "/health", &[], "").json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"]["ollama"]["status"], "model_missing");
}

#[test]
fn readyz_is_200_when_ollama_has_the_model() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    assert_eq!(request(proxy.addr, "GET", "/readyz", &[], "").status, 200);
}

#[test]
fn metrics_need_a_key_and_count_requests_and_rejections() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    assert_eq!(get(proxy.addr, "/api/tags").status, 200);
    assert_eq!(get(proxy.addr, "/api/pull").status, 403);
    assert_eq!(request(proxy.addr, "GET", "/metrics", &[], "").status, 401);
    let text = get(proxy.addr, "/metrics").body;
    for needle in [
        "ollama_proxy_requests_total{route=\"/api/tags\",status=\"200\"} 1",
        "ollama_proxy_rejected_total{reason=\"admin_route\"} 1",
        "ollama_proxy_rejected_total{reason=\"unauthorized\"} 1",
        "ollama_proxy_upstream_latency_seconds_count{route=\"/api/tags\"} 1",
        "ollama_proxy_in_flight 0",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
}

#[test]
fn config_errors_are_listed_together_with_exit_2() {
    let output = support::proxy_command()
        .env("PROXY_API_KEYS", "short")
        .env("PORT", "http")
        .env("OLLAMA_UPSTREAM", "ollama:11434")
        .env("PROXY_MAX_IN_FLIGHT", "-1")
        .env("HEALTH_TARGETS", "https://user:pa55w0rd@edge.example/health")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in
        ["PROXY_API_KEYS", "PORT", "OLLAMA_UPSTREAM", "PROXY_MAX_IN_FLIGHT", "HEALTH_TARGETS", "5 problems"]
    {
        assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
    }
    assert!(!stderr.contains("pa55w0rd") && !stderr.contains("short\""), "secret echoed:\n{stderr}");
}

#[test]
fn each_request_gets_one_json_access_line_that_rust_log_can_turn_off() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    let reply = request(
        proxy.addr,
        "GET",
        "/api/tags",
        &[("Authorization", &bearer(KEY_A)), ("x-request-id", "trace-me-42")],
        "",
    );
    assert_eq!(reply.header("x-request-id").as_deref(), Some("trace-me-42"));
    assert_eq!(get(proxy.addr, "/api/pull").status, 403);
    std::thread::sleep(Duration::from_millis(300));
    let logs = proxy.output();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| l.contains("\"answered\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert_eq!(lines[0]["request_id"], "trace-me-42");
    assert_eq!(lines[0]["route"], "/api/tags");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["level"], "INFO");
    assert!(lines[0]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", lines[0]);
    assert!(lines[0]["elapsed_ms"].is_f64(), "{}", lines[0]);
    assert_eq!(lines[1]["rejected"], "admin_route");
    assert_eq!(lines[1]["method"], "GET");

    let quiet = support::proxy(&ollama.url(), &[("RUST_LOG", "info,ollama_proxy::access=off")]);
    assert_eq!(get(quiet.addr, "/livez").status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!quiet.output().contains("\"answered\""), "{}", quiet.output());
}

#[test]
fn secrets_never_appear_in_logs_or_responses() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[("RUST_LOG", "trace")]);
    let wrong = "wrong-token-that-must-not-be-logged";
    let mut bodies = String::new();
    for (path, key) in [
        ("/api/tags", KEY_A),
        ("/api/pull", KEY_B),
        ("/api/tags", wrong),
        ("/health", KEY_A),
        ("/metrics", KEY_A),
    ] {
        let reply = request(proxy.addr, "GET", path, &[("Authorization", &bearer(key))], "");
        bodies.push_str(&reply.head);
        bodies.push_str(&reply.body);
    }
    bodies.push_str(&post(proxy.addr, "/api/chat", CHAT).body);
    std::thread::sleep(Duration::from_millis(200));
    let logs = proxy.output();
    assert!(logs.contains("\"request_id\""), "logs carry a request id:\n{logs}");
    for secret in [KEY_A, KEY_B, wrong] {
        assert!(!logs.contains(secret), "{secret} in logs");
        assert!(!bodies.contains(secret), "{secret} in responses");
    }
}

#[test]
fn sigterm_lets_an_open_stream_finish() {
    let ollama = fake(&["--chunk-delay-ms", "200"]);
    let mut proxy = proxy(&ollama.url(), &[]);
    let addr = proxy.addr;
    let stream = std::thread::spawn(move || support::timed_stream(addr, "/api/chat", CHAT));
    std::thread::sleep(Duration::from_millis(300));
    proxy.terminate();
    std::thread::sleep(Duration::from_millis(100));
    // New connections are refused while the open stream drains.
    assert!(TcpStream::connect(addr).is_err(), "still accepting after SIGTERM");
    let pieces = stream.join().expect("stream thread");
    let text: String = pieces.iter().map(|(_, t)| t.as_str()).collect();
    assert!(text.contains("\"done\":true"), "stream cut short:\n{text}");
    assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0), "{}", proxy.output());
}

#[test]
fn several_workers_share_the_connections_and_all_drain_on_sigterm() {
    let ollama = fake(&["--chunk-delay-ms", "150"]);
    let mut proxy = proxy(&ollama.url(), &[("PROXY_WORKERS", "4")]);
    assert!(proxy.output().contains("\"workers\":4"), "{}", proxy.output());
    let addr = proxy.addr;
    let eight_streams =
        || (0..8).map(|_| std::thread::spawn(move || support::timed_stream(addr, "/api/chat", CHAT)));

    // Round-robin: with 8 streams on 4 workers, every worker thread wakes for its chunks.
    let pid = proxy.child.id();
    let started = Instant::now();
    let mut before = wake_ups_by_worker(pid);
    while before.len() < 4 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20)); // the threads start just after "listening"
        before = wake_ups_by_worker(pid);
    }
    assert_eq!(before.len(), 4, "{before:?}");
    for stream in eight_streams().collect::<Vec<_>>() {
        assert!(stream.join().expect("stream thread").iter().any(|(_, t)| t.contains("\"done\":true")));
    }
    let after = wake_ups_by_worker(pid);
    for (worker, n) in &after {
        assert!(n - before[worker] >= 6, "{worker} idled: {before:?} -> {after:?}");
    }

    let streams: Vec<_> = eight_streams().collect();
    std::thread::sleep(Duration::from_millis(250));
    proxy.terminate();
    for stream in streams {
        let text: String = stream.join().expect("stream thread").into_iter().map(|(_, t)| t).collect();
        assert!(text.contains("\"done\":true"), "stream cut short:\n{text}");
    }
    assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0), "{}", proxy.output());
    let logs = proxy.output();
    assert_eq!(logs.matches("all connections finished").count(), 1, "{logs}");
}

/// Voluntary context switches (wake-ups after waiting) of each worker thread of process `pid`,
/// by thread name (the first worker is the main thread); Linux `/proc`.
fn wake_ups_by_worker(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("procfs");
    tasks
        .filter_map(|task| {
            let dir = task.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?.trim().to_owned();
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            let n = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
                .trim()
                .parse()
                .ok()?;
            (name != "log-flush" && name != "health-probe").then_some((name, n))
        })
        .collect()
}

#[test]
fn requests_accepted_just_before_sigterm_are_answered_not_dropped() {
    let ollama = fake(&[]);
    let mut proxy = proxy(&ollama.url(), &[("PROXY_WORKERS", "4")]);
    let streams: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut stream = TcpStream::connect(proxy.addr).expect("connect");
            stream.write_all(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n").expect("send");
            stream
        })
        .collect();
    // One answer first, so the proxy is known to be accepting when the signal comes (otherwise the
    // signal and the first accept race, and all 40 may still be queued in the kernel).
    let mut streams = streams.into_iter();
    let mut first = streams.next().expect("40 streams");
    first.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut head = [0u8; 12];
    first.read_exact(&mut head).expect("the first request is answered");
    assert_eq!(&head, b"HTTP/1.1 200");
    drop(first);
    proxy.terminate();
    let mut answered = 1;
    for mut stream in streams {
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut reply = Vec::new();
        match stream.read_to_end(&mut reply) {
            // Accepted, so it must be answered, even though the drain began at once.
            Ok(_) => {
                assert!(reply.starts_with(b"HTTP/1.1 200"), "accepted, then closed without an answer");
                answered += 1;
            }
            // Still in the kernel's queue when the socket closed: refused, never half-served.
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    assert!(answered > 0, "none of the 40 was accepted before the signal");
    assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0), "{}", proxy.output());
}

#[test]
fn healthcheck_subcommand_exits_0_when_healthy_and_1_when_not() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    let run = |url: String| {
        support::proxy_command().args(["healthcheck", "--url", &url]).status().expect("runs").code()
    };
    assert_eq!(run(format!("{}/health", proxy.url())), Some(0));
    assert_eq!(run(format!("{}/readyz", proxy.url())), Some(0));
    assert_eq!(run(format!("http://{}/health", support::closed_addr())), Some(1));
    let port = proxy.addr.port().to_string();
    let by_port = support::proxy_command().arg("healthcheck").env("PORT", port).status().expect("runs");
    assert_eq!(by_port.code(), Some(0));
}

#[test]
fn start_script_serves_even_when_ollama_never_becomes_ready() {
    let dir = std::env::temp_dir().join(format!("ollama-proxy-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pid_file = dir.join("ollama.pid");
    let stand_in = format!(
        "#!/bin/sh\necho \"stand-in ollama $*\" >&2\necho $$ > '{}'\nexec sleep 60\n",
        pid_file.display()
    );
    let ollama = dir.join("ollama");
    std::fs::write(&ollama, stand_in).expect("write stand-in");
    let chmod = std::process::Command::new("chmod").arg("+x").arg(&ollama).status();
    assert!(chmod.is_ok_and(|s| s.success()));
    let _ = std::fs::remove_file(dir.join("ollama-proxy"));
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ollama-proxy"), dir.join("ollama-proxy"))
        .expect("symlink");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/start.sh");
    let mut command = std::process::Command::new("sh");
    command
        .arg(script)
        .env_clear()
        .env("PATH", format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default()))
        .env("OLLAMA_WAIT_SECS", "2")
        .env("OLLAMA_HOST", support::closed_addr().to_string())
        .env("PROXY_API_KEYS", KEY_A)
        .env("PORT", "0")
        .env("PROXY_BIND", "127.0.0.1");
    let started = Instant::now();
    let proxy = support::spawn(command, "\"listening\"");
    let waited = started.elapsed();
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
    let output = proxy.output();
    assert!(output.contains("stand-in ollama serve"), "{output}");
    assert!(output.contains("not ready after 2 s; continuing without it"), "{output}");
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(request(proxy.addr, "GET", "/livez", &[], "").status, 200);
    assert_eq!(request(proxy.addr, "GET", "/health", &[], "").json()["status"], "degraded");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Terminates TLS for `localhost` with a fresh self-signed certificate and forwards the plain bytes
/// to `backend`; returns the port and the certificate's PEM.
fn tls_terminator(backend: std::net::SocketAddr) -> (u16, String) {
    use std::sync::Arc;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let pem = certified.cert.pem();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else { return };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    });
    (port, pem)
}

#[test]
fn https_upstream_is_verified_and_gets_its_own_host() {
    let ollama = fake(&[]);
    let (port, pem) = tls_terminator(ollama.addr);
    let ca = std::env::temp_dir().join(format!("ollama-proxy-ca-{}-{port}.pem", std::process::id()));
    std::fs::write(&ca, pem).expect("write CA");
    let upstream = format!("https://localhost:{port}");
    let trusted = proxy(&upstream, &[("UPSTREAM_CA_FILE", ca.to_str().unwrap_or_default())]);
    let echo = get(trusted.addr, "/v1/fake/echo").json();
    assert_eq!(echo["headers"]["host"], format!("localhost:{port}"));
    assert!(echo["headers"].get("authorization").is_none());
    assert_eq!(request(trusted.addr, "GET", "/readyz", &[], "").status, 200);
    // Without the private CA the certificate is not trusted: no silent downgrade, a 502.
    let untrusted = proxy(&upstream, &[]);
    assert_eq!(get(untrusted.addr, "/api/tags").status, 502);
    let _ = std::fs::remove_file(&ca);
}

#[test]
fn an_https_upstream_that_answers_before_the_body_is_all_sent_gets_its_answer_to_the_client() {
    for after in [AfterAnswer::Close, AfterAnswer::Hold] {
        let (upstream, big, pem) = early_answer_tls_upstream(after);
        let ca = std::env::temp_dir().join(format!(
            "ollama-proxy-ca-{}-{}.pem",
            std::process::id(),
            upstream.port()
        ));
        std::fs::write(&ca, pem).expect("write CA");
        let mut env = EARLY_ANSWER_ENV.to_vec();
        env.push(("UPSTREAM_CA_FILE", ca.to_str().unwrap_or_default()));
        let proxy = proxy(&format!("https://localhost:{}", upstream.port()), &env);
        assert_early_answer_relayed(&proxy, &format!("localhost:{}", upstream.port()), &big, after);
        let _ = std::fs::remove_file(&ca);
    }
}

#[test]
fn unreadable_ca_file_is_a_config_error() {
    let output = support::proxy_command()
        .env("PROXY_API_KEYS", KEY_A)
        .env("UPSTREAM_CA_FILE", "/nonexistent/ca.pem")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("UPSTREAM_CA_FILE"));
}

#[test]
fn a_stream_idle_longer_than_the_upstream_idle_timeout_is_cut() {
    let ollama = fake(&["--drip-ms", "2000"]);
    let proxy = proxy(&ollama.url(), &[("UPSTREAM_IDLE_TIMEOUT_MS", "300")]);
    let started = Instant::now();
    let reply = request(
        proxy.addr,
        "POST",
        "/api/chat",
        &[("Authorization", &bearer(KEY_A)), ("x-fake-fault", "drip")],
        CHAT,
    );
    assert_eq!(reply.status, 200, "headers were already sent");
    assert!(reply.body.contains("\"done\":false"), "the first chunk got through: {}", reply.body);
    assert!(!reply.body.contains("\"done\":true"), "the stream was not cut");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}

#[test]
fn upstream_connections_are_reused_and_a_closed_one_is_replaced() {
    let ollama = fake(&[]);
    let proxy = proxy(&ollama.url(), &[]);
    for _ in 0..20 {
        assert_eq!(get(proxy.addr, "/api/tags").status, 200);
        assert_eq!(post(proxy.addr, "/api/chat", CHAT).status, 200);
    }
    let connections = |fake: &support::Running| {
        request(fake.addr, "GET", "/__fake/connections", &[], "").json()["connections"].as_u64().unwrap_or(0)
    };
    // One for the fake's own query, the prober's, and the proxy's (sequential requests share one).
    assert!(connections(&ollama) <= 4, "{} connections for 40 requests", connections(&ollama));
    // Ollama closing a connection after answering costs nothing but a new one.
    for _ in 0..5 {
        let reply = request(
            proxy.addr,
            "GET",
            "/api/tags",
            &[("Authorization", &bearer(KEY_A)), ("x-fake-close", "1")],
            "",
        );
        assert_eq!(reply.status, 200);
        assert_eq!(get(proxy.addr, "/api/version").status, 200);
    }
}
