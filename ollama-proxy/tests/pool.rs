//! A pool of Ollama boxes (`OLLAMA_UPSTREAMS`): the real binary in front of several fake Ollamas
//! on 127.0.0.1, each with its own models and faults. Calls are counted at the fakes.

mod support;

use std::time::{Duration, Instant};

use support::{
    KEY_A, Running, Script, Step, bearer, closed_addr, fake, get, metric, post, probes, proxy, request,
    scripted, seen,
};

const MODEL: &str = "llama3.2:1b";

fn chat(model: &str) -> String {
    format!(
        r#"{{"model":"{model}","stream":false,"messages":[{{"role":"user","content":"Will it rain?"}}]}}"#
    )
}

/// The proxy in front of `boxes` (one URL each, options after `;`), one worker so that round
/// robin is one sequence, probes every minute unless `env` says otherwise.
fn pool_proxy(boxes: &[String], env: &[(&str, &str)]) -> Running {
    let list = boxes.join(",");
    let mut all =
        vec![("OLLAMA_UPSTREAMS", list.as_str()), ("PROXY_WORKERS", "1"), ("HEALTH_INTERVAL_MS", "60000")];
    all.extend_from_slice(env);
    // Later entries win: `env` can override the defaults above.
    let mut merged: Vec<(&str, &str)> = Vec::new();
    for (k, v) in all {
        merged.retain(|(key, _)| *key != k);
        merged.push((k, v));
    }
    proxy("http://127.0.0.1:9", &merged)
}

fn count(fake: &Running, path: &str) -> usize {
    seen(fake).iter().filter(|p| *p == path).count()
}

fn label(fake: &Running) -> String {
    format!("{{upstream=\"{}\"}}", fake.addr)
}

#[test]
fn requests_go_to_the_box_with_the_model_loaded_then_to_one_that_has_it() {
    let without = fake(&["--model", "other:1b"]);
    let has = fake(&["--model", "other:1b", "--also-models", &format!("{MODEL},phi3:latest")]);
    let loaded = fake(&["--model", "other:1b", "--also-models", MODEL, "--loaded", MODEL]);
    let proxy = pool_proxy(&[without.url(), has.url(), loaded.url()], &[]);
    for _ in 0..6 {
        assert_eq!(post(proxy.addr, "/api/chat", &chat(MODEL)).status, 200);
        assert_eq!(post(proxy.addr, "/api/generate", &chat(MODEL)).status, 200);
    }
    assert_eq!(
        (count(&without, "/api/chat"), count(&has, "/api/chat"), count(&loaded, "/api/chat")),
        (0, 0, 6)
    );
    assert_eq!(count(&loaded, "/api/generate"), 6);
    // Loaded nowhere, present on one box: that box (`phi3` is `phi3:latest`).
    for _ in 0..4 {
        assert_eq!(post(proxy.addr, "/api/show", r#"{"model":"phi3"}"#).status, 200);
    }
    assert_eq!(count(&has, "/api/show"), 4);
    // No model: any box, round robin.
    for _ in 0..6 {
        assert_eq!(get(proxy.addr, "/api/tags").status, 200);
    }
    let spread = [&without, &has, &loaded].iter().filter(|f| count(f, "/api/tags") == 2).count();
    assert_eq!(spread, 3, "round robin over idle boxes");
}

#[test]
fn the_box_with_fewest_requests_in_flight_wins_then_weight_counts() {
    let a = fake(&[]);
    let b = fake(&[]);
    let proxy = pool_proxy(&[a.url(), b.url()], &[]);
    let addr = proxy.addr;
    // A slow stream (5 chunks 300 ms apart) holds one box.
    let slow = std::thread::spawn(move || {
        request(
            addr,
            "POST",
            "/api/chat",
            &[("Authorization", &bearer(KEY_A)), ("x-fake-delay-ms", "300")],
            r#"{"model":"qwen2.5:0.5b"}"#,
        )
    });
    let started = Instant::now();
    while count(&a, "/api/chat") + count(&b, "/api/chat") == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "the slow stream never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let busy_is_a = count(&a, "/api/chat") == 1;
    for _ in 0..6 {
        assert_eq!(post(addr, "/api/chat", &chat("qwen2.5:0.5b")).status, 200);
    }
    let (busy, idle) = if busy_is_a { (&a, &b) } else { (&b, &a) };
    assert!(started.elapsed() < Duration::from_millis(1200), "the stream must still be running");
    assert_eq!((count(busy, "/api/chat"), count(idle, "/api/chat")), (1, 6));
    assert_eq!(slow.join().map(|r| r.status).ok(), Some(200));

    // Weight 3 against 1, both idle: (0+1)/3 beats (0+1)/1, so sequential requests all go to it.
    let heavy = fake(&[]);
    let light = fake(&[]);
    let proxy = pool_proxy(&[light.url(), format!("{};weight=3", heavy.url())], &[]);
    for _ in 0..4 {
        assert_eq!(post(proxy.addr, "/api/chat", &chat("qwen2.5:0.5b")).status, 200);
    }
    assert_eq!((count(&heavy, "/api/chat"), count(&light, "/api/chat")), (4, 0));
}

#[test]
fn a_refused_box_is_ejected_and_requests_go_elsewhere_without_client_errors() {
    let dying = fake(&[]);
    let alive = fake(&[]);
    let dying_label = label(&dying);
    let proxy = pool_proxy(&[dying.url(), alive.url()], &[]);
    assert_eq!(metric(&proxy, &format!("ollama_proxy_upstream_up{dying_label}")), 1);
    drop(dying); // its port now refuses connections
    for _ in 0..20 {
        assert_eq!(post(proxy.addr, "/api/chat", &chat("qwen2.5:0.5b")).status, 200);
    }
    assert_eq!(count(&alive, "/api/chat"), 20);
    assert_eq!(metric(&proxy, &format!("ollama_proxy_upstream_up{dying_label}")), 0, "ejected");
    assert_eq!(metric(&proxy, &format!("ollama_proxy_upstream_failures_total{dying_label}")), 1);
    assert_eq!(metric(&proxy, "ollama_proxy_retries_total"), 1, "one retry, then the box is skipped");
    let health = request(proxy.addr, "GET", "/health", &[], "").json();
    let boxes = &health["checks"]["ollama"]["upstreams"];
    assert_eq!(boxes[0]["status"], "down", "{health}");
    assert_eq!(boxes[0]["last_error"], "connection refused or unreachable");
    assert_eq!(boxes[1]["status"], "up");
    assert_eq!(health["checks"]["ollama"]["status"], "ok", "one box with the model is enough");
}

#[test]
fn an_ejected_box_comes_back_when_a_probe_passes() {
    let flaky = fake(&[]);
    let other = fake(&[]);
    let flaky_label = label(&flaky);
    let proxy = pool_proxy(
        &[flaky.url(), other.url()],
        &[("HEALTH_INTERVAL_MS", "100"), ("UPSTREAM_EJECT_MS", "100"), ("UPSTREAM_EJECT_MAX_MS", "200")],
    );
    // A 500 ejects it (and is passed through: a 5xx other than 503 is never retried).
    let mut ejected = false;
    for _ in 0..4 {
        let reply = request(
            proxy.addr,
            "POST",
            "/api/chat",
            &[("Authorization", &bearer(KEY_A)), ("x-fake-fault", "error")],
            &chat("qwen2.5:0.5b"),
        );
        assert_eq!(reply.status, 500);
        ejected |= metric(&proxy, &format!("ollama_proxy_upstream_up{flaky_label}")) == 0;
        if count(&flaky, "/api/chat") > 0 {
            break;
        }
    }
    assert!(ejected || count(&flaky, "/api/chat") == 0);
    let started = Instant::now();
    while metric(&proxy, &format!("ollama_proxy_upstream_up{flaky_label}")) == 0 {
        assert!(started.elapsed() < Duration::from_secs(3), "never re-admitted");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(&proxy, "ollama_proxy_retries_total"), 0);
}

#[test]
fn a_box_that_answers_503_busy_gets_the_request_retried_once_elsewhere() {
    let busy = fake(&["--fault", "busy", "--probes-ok"]);
    let free = fake(&[]);
    let busy_label = label(&busy);
    let proxy = pool_proxy(&[busy.url(), free.url()], &[("UPSTREAM_EJECT_MS", "10000")]);
    for _ in 0..10 {
        let reply = post(proxy.addr, "/api/chat", &chat("qwen2.5:0.5b"));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // Its first 503 ejects it for UPSTREAM_EJECT_MS: the other nine go straight to the free box.
    assert_eq!(count(&busy, "/api/chat"), 1);
    assert_eq!(count(&free, "/api/chat"), 10);
    assert_eq!(metric(&proxy, "ollama_proxy_retries_total"), 1);
    assert_eq!(metric(&proxy, &format!("ollama_proxy_upstream_failures_total{busy_label}")), 1);
    assert_eq!(metric(&proxy, &format!("ollama_proxy_upstream_up{busy_label}")), 0);
}

#[test]
fn a_stream_that_broke_after_the_first_byte_is_not_retried() {
    let breaking = fake(&["--fault", "break", "--probes-ok"]);
    let fine = fake(&[]);
    let proxy = pool_proxy(&[breaking.url(), fine.url()], &[]);
    let mut broken = 0;
    for _ in 0..4 {
        let reply = post(proxy.addr, "/api/generate", r#"{"model":"qwen2.5:0.5b","prompt":"hi"}"#);
        assert_eq!(reply.status, 200);
        if !reply.body.contains("\"done\":true") {
            assert!(reply.body.contains("The "), "the first line was forwarded: {}", reply.body);
            broken += 1;
        }
    }
    assert_eq!(broken, count(&breaking, "/api/generate"));
    assert!(broken >= 1, "round robin reaches the breaking box");
    assert_eq!(count(&breaking, "/api/generate") + count(&fine, "/api/generate"), 4, "no request sent twice");
    assert_eq!(metric(&proxy, "ollama_proxy_retries_total"), 0);
}

/// A box that answers the health probes with `qwen2.5:0.5b` loaded (so it is always chosen first) and
/// every other request with `answer`.
fn probed_then(target: &str, answer: Vec<Step>) -> Vec<Step> {
    let json = match target {
        "/api/version" => r#"{"version":"0.0.0"}"#,
        "/api/tags" | "/api/ps" => r#"{"models":[{"name":"qwen2.5:0.5b"}]}"#,
        _ => return answer,
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        json.len()
    );
    vec![Step::Write([head.as_bytes(), json.as_bytes()].concat())]
}

/// Sends one chat for `qwen2.5:0.5b` to a pool of the scripted box `first` (chosen first once its probe
/// has passed) and a fake Ollama; the reply, and how many chats each box got.
fn chat_with_first_box(first: Script) -> (u16, usize, usize) {
    let first = scripted(first);
    let second = fake(&[]);
    let proxy = pool_proxy(&[first.url(), second.url()], &[]);
    let started = Instant::now();
    while !first.seen().iter().any(|t| t == "/api/ps") {
        assert!(started.elapsed() < Duration::from_secs(5), "never probed");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let status = post(proxy.addr, "/api/chat", &chat("qwen2.5:0.5b")).status;
    let chats = first.seen().iter().filter(|t| *t == "/api/chat").count();
    (status, chats, count(&second, "/api/chat"))
}

#[test]
fn a_box_that_answers_with_a_malformed_head_gets_a_502_and_no_retry() {
    // It answered: it may have started on the request, so the request never goes elsewhere.
    for bad in [
        |target: &str, _: usize| {
            probed_then(target, vec![Step::Write(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n".to_vec())])
        },
        |target: &str, _: usize| {
            probed_then(
                target,
                vec![Step::Write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec())],
            )
        },
        |target: &str, _: usize| {
            probed_then(target, vec![Step::Write(b"HTTP/1.1 200 OK\r\nX-Cut: ".to_vec()), Step::Close])
        },
    ] {
        assert_eq!(chat_with_first_box(bad), (502, 1, 0));
    }
}

#[test]
fn a_box_that_closes_before_any_byte_of_an_answer_gets_the_request_retried_elsewhere() {
    assert_eq!(chat_with_first_box(|target, _| probed_then(target, vec![Step::Close])), (200, 1, 1));
}

#[test]
fn max_tries_and_the_retry_budget_hold_under_a_pool_wide_outage() {
    let boxes: Vec<Running> = (0..3).map(|_| fake(&["--fault", "busy", "--probes-ok"])).collect();
    let urls: Vec<String> = boxes.iter().map(Running::url).collect();
    let calls = || boxes.iter().map(|b| count(b, "/api/chat")).sum::<usize>();

    // MAX_TRIES=2: one request reaches two boxes, and the client gets the last 503.
    let proxy = pool_proxy(&urls, &[]);
    let reply = post(proxy.addr, "/api/chat", &chat("qwen2.5:0.5b"));
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("server busy"), "{}", reply.body);
    assert_eq!(calls(), 2);
    drop(proxy);

    // MAX_TRIES=3 and a 20 % budget: 50 requests cost at most 50 + 10 calls, not 150. Each 503
    // ejects its box, but for 1 ms only (its probe passes: the box is alive, just busy), so
    // retries are attempted all along and only the budget stops them.
    let proxy =
        pool_proxy(&urls, &[("MAX_TRIES", "3"), ("UPSTREAM_EJECT_MS", "1"), ("UPSTREAM_EJECT_MAX_MS", "1")]);
    let before = calls();
    assert_eq!(post(proxy.addr, "/api/chat", &chat("qwen2.5:0.5b")).status, 503);
    assert_eq!(calls() - before, 3, "the first request may use all three boxes");
    for _ in 1..50 {
        assert_eq!(post(proxy.addr, "/api/chat", &chat("qwen2.5:0.5b")).status, 503);
    }
    let spent = calls() - before;
    let retries = metric(&proxy, "ollama_proxy_retries_total");
    let refused = metric(&proxy, "ollama_proxy_retries_refused_total");
    println!(
        "pool-wide 503: 50 requests -> {spent} calls, {retries} retries, {refused} refused by the budget"
    );
    assert!(spent <= 60, "{spent} calls for 50 requests");
    assert_eq!(spent as u64, 50 + retries);
    assert!(retries <= 10, "{retries} retries");

    // A pool-wide refusal: every box ejected; each request tries one box, no retry.
    let dead: Vec<String> = (0..3).map(|_| format!("http://{}", closed_addr())).collect();
    let proxy = pool_proxy(&dead, &[]);
    for _ in 0..20 {
        assert_eq!(post(proxy.addr, "/api/chat", &chat("qwen2.5:0.5b")).status, 502);
    }
    let tries: u64 = dead
        .iter()
        .map(|u| metric(&proxy, &format!("ollama_proxy_upstream_requests_total{{upstream=\"{}\"}}", &u[7..])))
        .sum();
    assert_eq!(tries, 20, "one try per request");
    assert_eq!(metric(&proxy, "ollama_proxy_retries_total"), 0);
}

#[test]
fn probes_ask_only_version_tags_and_ps_never_a_generation() {
    let boxes = [fake(&[]), fake(&[])];
    let proxy = pool_proxy(&[boxes[0].url(), boxes[1].url()], &[("HEALTH_INTERVAL_MS", "50")]);
    std::thread::sleep(Duration::from_millis(500));
    for ollama in &boxes {
        let probes = probes(ollama);
        assert!(probes.len() >= 9, "several rounds: {probes:?}");
        assert!(
            probes.iter().all(|p| ["/api/version", "/api/tags", "/api/ps"].contains(&p.as_str())),
            "{probes:?}"
        );
        assert!(seen(ollama).is_empty(), "{:?}", seen(ollama));
    }
    drop(proxy);
}

#[test]
fn health_shows_each_upstream_and_no_token_leaves_for_the_wrong_place() {
    let tunnel = fake(&["--also-models", MODEL, "--loaded", MODEL]);
    let dead = format!("http://{}", closed_addr());
    let entry = format!("{};host=box-a.example;token_env=BOX_A_TOKEN;weight=2", tunnel.url());
    let proxy = pool_proxy(
        &[entry, dead.clone()],
        &[("BOX_A_TOKEN", "sekret-box-token-42"), ("OLLAMA_MODEL", MODEL)],
    );
    let reply = request(proxy.addr, "GET", "/health", &[], "");
    assert_eq!(reply.status, 200);
    let health = reply.json();
    let boxes = &health["checks"]["ollama"]["upstreams"];
    assert_eq!(boxes[0]["upstream"], tunnel.addr.to_string(), "{health}");
    assert_eq!(boxes[0]["status"], "up");
    assert_eq!(boxes[0]["model_present"], true);
    assert_eq!(boxes[0]["model_loaded"], true);
    assert_eq!(boxes[0]["weight"], 2);
    assert_eq!(boxes[0]["in_flight"], 0);
    assert_eq!(boxes[1]["upstream"], &dead[7..]);
    assert_eq!(boxes[1]["status"], "down");
    assert_eq!(boxes[1]["last_error"], "probe: unreachable");
    assert_eq!(health["status"], "ok");
    assert_eq!(request(proxy.addr, "GET", "/readyz", &[], "").status, 200);
    // The box gets its own Host and token, never the client's key.
    let echo = get(proxy.addr, "/v1/fake/echo").json();
    assert_eq!(echo["headers"]["host"], "box-a.example");
    assert_eq!(echo["headers"]["authorization"], "Bearer sekret-box-token-42");
    // And the probes carried them too (the fake saw probes, so the Host was accepted).
    assert!(!probes(&tunnel).is_empty());
    let metrics = get(proxy.addr, "/metrics").body;
    assert!(
        metrics.contains(&format!("ollama_proxy_upstream_up{{upstream=\"{}\"}} 1", tunnel.addr)),
        "{metrics}"
    );
    for text in [reply.body.as_str(), metrics.as_str(), &proxy.output()] {
        assert!(!text.contains("sekret"), "token leaked: {text}");
    }
}

#[test]
fn pool_config_errors_are_listed_together_without_tokens() {
    let output = support::proxy_command()
        .env("PROXY_API_KEYS", "a-long-enough-key-0123456789")
        .env(
            "OLLAMA_UPSTREAMS",
            "http://a:1;weight=zero;token=hunter2hunter2, ftp://b, http://c;token_env=NOPE;shape=round",
        )
        .env("MAX_TRIES", "0")
        .env("RETRY_BUDGET_PERCENT", "150")
        .env("UPSTREAM_EJECT_MS", "5000")
        .env("UPSTREAM_EJECT_MAX_MS", "100")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "(entry #1): weight",
        "(entry #2): must be an absolute",
        "(entry #3): token_env NOPE is not set",
        "(entry #3): unknown option \"shape\"",
        "MAX_TRIES",
        "RETRY_BUDGET_PERCENT",
        "UPSTREAM_EJECT_MAX_MS",
        "7 problems",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
    }
    assert!(!stderr.contains("hunter2"), "token echoed:\n{stderr}");
}
