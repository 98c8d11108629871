//! The scenarios every runtime must pass, written once. A runtime's test file expands
//! [`edge_scenarios!`] with its own `start` function, so Workers and Spin cannot drift apart.

use std::collections::HashMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::client::{Client, GROQ_KEY, PROXY_TOKEN, Reply, post_chunked};
use super::fakes::{Fake, Kind, Mode, Streaming, refused_url};
use super::{Edge, Start};

/// Expands to one `#[test]` per scenario for the runtime started by `$start`.
#[macro_export]
macro_rules! edge_scenarios {
    ($start:path) => {
        $crate::edge_scenarios!(@each $start;
            groq_answers_with_source_groq,
            groq_429_sends_asks_to_ollama_and_the_next_20_skip_groq,
            groq_hang_and_slow_drip_are_cut_and_ollama_answers_within_the_budget,
            both_providers_down_or_junk_answer_from_sqlite,
            no_keys_at_all_answer_from_sqlite,
            thirty_five_quick_asks_against_a_groq_allowing_30_a_minute_all_answered,
            health_answers_within_a_second_while_both_upstreams_hang,
            dashboard_counts_equal_the_asks_made,
            concurrent_asks_are_each_recorded_once,
            bad_input_gets_a_clear_4xx_and_changes_nothing,
            upstream_errors_echoing_secrets_are_never_relayed,
            cors_preflight_follows_cors_origins,
            crafted_answers_neither_reach_the_board_nor_switch_a_provider_off,
            the_fourth_ask_within_a_second_is_a_429_and_another_asker_is_not_limited,
            the_same_question_is_remembered_then_annoys_and_another_asker_or_question_is_not,
            a_remembered_answer_survives_a_restart_of_the_runtime,
            a_streamed_answer_arrives_token_by_token_before_the_fake_has_finished,
            a_stream_cut_or_stalled_midway_ends_incomplete_and_a_429_streams_from_ollama,
            the_client_leaving_mid_stream_cancels_the_upstream_request_and_is_recorded_once,
            no_keys_stream_a_canned_answer_word_by_word,
        );
    };
    (@each $start:path; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                support::scenarios::$name($start);
            }
        )+
    };
}

/// Variables pointing the edge at the given fakes, with the test secrets. The chain's scenarios ask
/// many times from one client: per-asker limits and memory are off unless `extra` sets them.
fn vars(
    groq: Option<String>,
    ollama: Option<String>,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut vars = vec![("ENVIRONMENT", "test".to_owned())];
    for (name, off) in [("ASK_LIMITS", "off"), ("MEMORY_TTL_S", "0")] {
        if !extra.iter().any(|(n, _)| *n == name) {
            vars.push((name, off.to_owned()));
        }
    }
    if let Some(url) = groq {
        vars.push(("GROQ_API_KEY", GROQ_KEY.to_owned()));
        vars.push(("GROQ_BASE_URL", url));
    }
    if let Some(url) = ollama {
        vars.push(("OLLAMA_URL", url));
        vars.push(("OLLAMA_PROXY_TOKEN", PROXY_TOKEN.to_owned()));
    }
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    vars
}

fn start_with(start: Start, groq: &Fake, ollama: &Fake, extra: &[(&'static str, &str)]) -> (Edge, Client) {
    let edge = start(&vars(Some(groq.base_url()), Some(ollama.base_url()), extra));
    let client = Client::new(&edge.base);
    (edge, client)
}

fn assert_answer(reply: &Reply, source: &str) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["source"], source, "{body}");
    assert!(body["answer"].as_str().is_some_and(|a| !a.is_empty()), "{body}");
    assert_eq!(body["answer"], body["response"]);
    body
}

/// Every canned answer in the seed, as stored (SQL quotes unescaped).
fn seeded_answers() -> Vec<String> {
    let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/d1-migrations/0002_seed.sql"))
        .expect("read the seed");
    seed.lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches('(');
            let fields: Vec<&str> = line.splitn(4, "', '").collect();
            (fields.len() == 4).then(|| fields[3].split("', '").next().unwrap_or("").replace("''", "'"))
        })
        .collect()
}

/// Every `repeat` answer (what the annoyed spirit says), as stored.
fn repeat_answers() -> Vec<String> {
    let seed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/d1-migrations/0005_memories.sql"))
            .expect("read the memory migration");
    seed.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.trim().trim_start_matches('(').splitn(3, "', '").collect();
            let text = fields.get(2)?.trim_end_matches([',', ';']).strip_suffix("')")?;
            (fields.len() == 3).then(|| text.replace("''", "'"))
        })
        .collect()
}

/// Every text value in every table of every database file (`*.sqlite`, `*.db`) under `dir`: the
/// runtime's own database or key-value store, read beside it (`SQLite` allows other readers).
fn stored_texts(dir: &Path) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the run directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "sqlite" || e == "db") {
                texts.extend(texts_in(&path));
            }
        }
    }
    texts
}

fn texts_in(file: &Path) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut q| q.query_map([], |row| row.get(0))?.collect())
        .unwrap_or_else(|e| panic!("list the tables of {}: {e}", file.display()));
    let mut texts = Vec::new();
    for table in tables {
        let mut query = db.prepare(&format!("SELECT * FROM \"{table}\"")).expect("select a table");
        let columns = query.column_count();
        let mut rows = query.query([]).expect("read a table");
        while let Some(row) = rows.next().expect("read a row") {
            for i in 0..columns {
                // Text, and blobs as text: the key-value store's values are JSON in blobs.
                if let Ok(rusqlite::types::ValueRef::Text(text) | rusqlite::types::ValueRef::Blob(text)) =
                    row.get_ref(i)
                {
                    texts.push((table.clone(), String::from_utf8_lossy(text).into_owned()));
                }
            }
        }
    }
    texts
}

/// Polls the dashboard until it has counted `total` consultations (they are written after the
/// response is sent).
fn dashboard_with_total(client: &Client, total: u64) -> Value {
    let started = Instant::now();
    loop {
        let dashboard = client.get("/dashboard").json();
        if dashboard["total"].as_u64() == Some(total) || started.elapsed() > Duration::from_secs(10) {
            return dashboard;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn groq_answers_with_source_groq(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Answer("Yes, the stars agree.".into()));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("Ollama speaks.".into()));
    let (_edge, client) = start_with(start, &groq, &ollama, &[]);

    let body = assert_answer(&client.ask("Will I find love this year?"), "groq");
    assert_eq!(body["answer"], "Yes, the stars agree.");
    assert_eq!(body["language"], "en");
    assert_eq!(body["category"], "love");
    let keys: Vec<&str> = body.as_object().expect("object").keys().map(String::as_str).collect();
    for key in ["answer", "response", "source", "personality", "language", "category", "latency_ms", "id"] {
        assert!(keys.contains(&key), "missing {key} in {body}");
    }
    assert_eq!(ollama.chat_calls(), 0);

    let seen = groq.seen();
    let call =
        seen.iter().find(|s| s.route == "POST /openai/v1/chat/completions").expect("a completion call");
    assert_eq!(call.authorization.as_deref(), Some(format!("Bearer {GROQ_KEY}").as_str()));
    assert_eq!(call.body["model"], "llama-3.1-8b-instant");
    assert!(call.body["messages"][0]["content"].as_str().is_some_and(|p| p.contains("English")));

    // The alias answers the same way, and the language field is honoured.
    let reply =
        client.post_json("/ouija/ask", &json!({"question": "¿Me ama?", "lang": "es", "personality": "wise"}));
    let body = assert_answer(&reply, "groq");
    assert_eq!((body["language"].as_str(), body["personality"].as_str()), (Some("es"), Some("wise")));
}

pub fn groq_429_sends_asks_to_ollama_and_the_next_20_skip_groq(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::RateLimited(60));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("The mist parts: yes.".into()));
    let (_edge, client) = start_with(start, &groq, &ollama, &[]);

    assert_answer(&client.ask("Will it rain tomorrow?"), "ollama");
    assert_eq!(groq.chat_calls(), 1);
    for i in 0..20 {
        assert_answer(&client.ask(&format!("Question number {i}?")), "ollama");
    }
    assert_eq!(groq.chat_calls(), 1, "Groq was called during its cool-down");
    let ollama_call = ollama.seen().into_iter().find(|s| s.route == "POST /api/chat").expect("a chat call");
    assert_eq!(ollama_call.authorization.as_deref(), Some(format!("Bearer {PROXY_TOKEN}").as_str()));
    assert_eq!(ollama_call.body["stream"], false);

    let dashboard = dashboard_with_total(&client, 21);
    assert!(dashboard["providers"]["groq"]["cool_down_until"].is_string(), "{dashboard}");
    let health = client.get("/health").json();
    assert_eq!(health["checks"]["groq"]["status"], "cool_down");
    assert_eq!(groq.chat_calls(), 1, "health spent a completion");
}

pub fn groq_hang_and_slow_drip_are_cut_and_ollama_answers_within_the_budget(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Hang);
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("Patience.".into()));
    let budget = [("GROQ_TIMEOUT_MS", "1000"), ("OLLAMA_TIMEOUT_MS", "2000"), ("ASK_BUDGET_MS", "4000")];
    let (_edge, client) = start_with(start, &groq, &ollama, &budget);

    let reply = client.ask("Will my project succeed?");
    assert_answer(&reply, "ollama");
    assert!(reply.elapsed < Duration::from_millis(4000), "took {:?}", reply.elapsed);

    groq.set_mode(Mode::SlowDrip);
    let reply = client.ask("Will my project succeed at last?");
    assert_answer(&reply, "ollama");
    assert!(reply.elapsed < Duration::from_millis(4000), "took {:?}", reply.elapsed);

    // With Ollama hanging too, the budget still holds and the canned answers speak.
    ollama.set_mode(Mode::Hang);
    let reply = client.ask("And now?");
    assert_answer(&reply, "sqlite");
    assert!(reply.elapsed < Duration::from_millis(4000 + 1000), "took {:?}", reply.elapsed);
}

pub fn both_providers_down_or_junk_answer_from_sqlite(start: Start) {
    let seeded = seeded_answers();
    assert!(seeded.len() >= 108, "seed parsed: {}", seeded.len());
    let groq = Fake::start(Kind::Groq, Mode::Status(500));
    let ollama = Fake::start(Kind::Ollama, Mode::Garbage);
    let (edge, client) = start_with(start, &groq, &ollama, &[]);

    for (groq_mode, ollama_mode) in
        [(Mode::Status(500), Mode::Garbage), (Mode::Junk, Mode::Junk), (Mode::Garbage, Mode::Status(503))]
    {
        groq.set_mode(groq_mode);
        ollama.set_mode(ollama_mode);
        let body = assert_answer(&client.ask("¿Seré rico algún día?"), "sqlite");
        let answer = body["answer"].as_str().unwrap_or_default().to_owned();
        assert!(seeded.contains(&answer), "not a seeded answer: {answer}");
        assert_eq!(body["language"], "es");
    }
    drop(edge);

    // Connection refused on both.
    let edge = start(&vars(Some(refused_url()), Some(refused_url()), &[]));
    assert_answer(&Client::new(&edge.base).ask("Will I be rich?"), "sqlite");
}

pub fn no_keys_at_all_answer_from_sqlite(start: Start) {
    let edge = start(&[]);
    let client = Client::new(&edge.base);
    let body = assert_answer(&client.ask("Will I find love?"), "sqlite");
    assert_eq!(body["category"], "love");
    let health = client.get("/health");
    assert_eq!(health.status, 200);
    let health = health.json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"]["database"]["status"], "ok");
    assert!(health["checks"]["database"]["count"].as_u64().is_some_and(|n| n >= 108));
    assert_eq!(health["checks"]["groq"]["status"], "not_configured");
    assert_eq!(health["checks"]["ollama"]["status"], "not_configured");
}

pub fn thirty_five_quick_asks_against_a_groq_allowing_30_a_minute_all_answered(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Answer("It is written.".into()));
    groq.limit_per_minute(30);
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("The lamp flickers: perhaps.".into()));
    let (_edge, client) = start_with(start, &groq, &ollama, &[]);

    // The edge counts per wall-clock minute: do not start across a minute's edge.
    let second = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() % 60);
    if second >= 50 {
        thread::sleep(Duration::from_secs(61 - second));
    }
    let mut sources: HashMap<String, u32> = HashMap::new();
    for i in 0..35 {
        let reply = client.ask(&format!("Spirit, question {i}: will it be?"));
        assert!(reply.status < 500, "ask {i}: {} {}", reply.status, reply.body);
        let source = reply.json()["source"].as_str().unwrap_or_default().to_owned();
        *sources.entry(source).or_default() += 1;
    }
    assert_eq!(groq.chat_calls(), 30, "sources: {sources:?}");
    assert_eq!(groq.rate_limits_served(), 0, "a 429 was spent");
    assert_eq!(sources.get("groq"), Some(&30));
    assert_eq!(sources.get("ollama").copied().unwrap_or(0) + sources.get("sqlite").copied().unwrap_or(0), 5);
}

pub fn health_answers_within_a_second_while_both_upstreams_hang(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Hang);
    let ollama = Fake::start(Kind::Ollama, Mode::Hang);
    let (_edge, client) = start_with(start, &groq, &ollama, &[]);

    let reply = client.get("/health");
    assert!(reply.elapsed < Duration::from_secs(1), "took {:?}", reply.elapsed);
    assert_eq!(reply.status, 200);
    let health = reply.json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["environment"], "test");
    assert_eq!(health["checks"]["database"]["status"], "ok");
    assert_eq!(health["checks"]["groq"]["status"], "down");
    assert_eq!(health["checks"]["ollama"]["status"], "down");
    assert_eq!(groq.chat_calls(), 0, "health must not spend completions");

    groq.set_mode(Mode::Answer("ok".into()));
    ollama.set_mode(Mode::Answer("ok".into()));
    let health = client.get("/health").json();
    assert_eq!(health["status"], "ok", "{health}");
}

pub fn dashboard_counts_equal_the_asks_made(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Answer("Yes.".into()));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("No.".into()));
    let (_edge, client) = start_with(start, &groq, &ollama, &[]);

    for _ in 0..3 {
        assert_answer(&client.ask("Will I travel?"), "groq");
    }
    groq.set_mode(Mode::RateLimited(120));
    for _ in 0..3 {
        assert_answer(&client.ask("Will I travel far?"), "ollama");
    }
    ollama.set_mode(Mode::Status(500));
    for _ in 0..2 {
        assert_answer(&client.ask("Will I travel soon?"), "sqlite");
    }

    let dashboard = dashboard_with_total(&client, 8);
    assert_eq!(dashboard["total"], 8, "{dashboard}");
    assert_eq!(dashboard["by_source"], json!({"groq": 3, "ollama": 3, "sqlite": 2}));
    assert_eq!(dashboard["fallback_rate"], 0.25);
    assert_eq!(dashboard["providers"]["groq"]["answers"], 3);
    assert_eq!(dashboard["providers"]["groq"]["failures"], json!({"rate_limited": 1}));
    assert_eq!(dashboard["providers"]["ollama"]["failures"], json!({"http_error": 2}));
    assert!(dashboard["providers"]["groq"]["latency_ms"]["p50"].is_u64(), "{dashboard}");
    assert!(dashboard["latency_ms"]["p95"].is_u64());
    assert!(dashboard["since"].is_string());
}

/// 48 asks from 8 clients at once: each recorded once, none twice (Spin runs a batch's statements
/// one by one on a database its instances share, so a record must not depend on what ran between).
pub fn concurrent_asks_are_each_recorded_once(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Answer("Yes.".into()));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("No.".into()));
    let (edge, client) = start_with(start, &groq, &ollama, &[]);
    thread::scope(|scope| {
        for t in 0..8 {
            let base = edge.base.clone();
            scope.spawn(move || {
                let client = Client::new(&base);
                for n in 0..6 {
                    let reply = client.ask(&format!("Will thread {t} travel {n}?"));
                    assert_eq!(reply.status, 200, "{}", reply.body);
                }
            });
        }
    });
    let dashboard = dashboard_with_total(&client, 48);
    thread::sleep(Duration::from_millis(500)); // any record written twice lands by now
    let total = client.get("/dashboard").json()["total"].as_u64().unwrap_or(0);
    if edge.exact_totals {
        assert_eq!(total, 48, "{dashboard}");
    } else {
        assert!((40..=48).contains(&total), "none counted twice, few lost: {total}");
    }
}

pub fn bad_input_gets_a_clear_4xx_and_changes_nothing(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Answer("Yes.".into()));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("No.".into()));
    let (_edge, client) = start_with(start, &groq, &ollama, &[]);
    let json = |body: &str| BadInput::post(vec![("content-type", "application/json")], body);
    let long_question = json!({"question": "ñ".repeat(501)}).to_string();
    let big_body = json!({"question": "x", "padding": "y".repeat(9000)}).to_string();
    let cases = [
        ("invalid JSON", json("{\"question\":"), 400, "JSON"),
        ("JSON array", json("[\"q\"]"), 400, "object"),
        ("missing question", json("{}"), 400, "question is required"),
        ("null question", json("{\"question\":null}"), 400, "question is required"),
        ("number question", json("{\"question\":42}"), 400, "string"),
        ("blank question", json("{\"question\":\"   \"}"), 400, "empty"),
        ("zero-width question", json("{\"question\":\"\\u200b\\u200b\"}"), 400, "visible"),
        ("byte-order-mark question", json("{\"question\":\"\\ufeff\"}"), 400, "visible"),
        ("NUL question", json("{\"question\":\"\\u0000\"}"), 400, "visible"),
        ("bidi-only question", json("{\"question\":\"\\u202e\\u2066 \\u2069\"}"), 400, "visible"),
        ("501 characters", json(&long_question), 400, "500"),
        ("bad language", json("{\"question\":\"q\",\"language\":\"fr\"}"), 400, "language"),
        ("bad personality", json("{\"question\":\"q\",\"personality\":\"evil\"}"), 400, "personality"),
        ("numeric language", json("{\"question\":\"q\",\"language\":1}"), 400, "language"),
        ("body over 8 KiB", json(&big_body), 413, "8192"),
        (
            "text/plain",
            BadInput::post(vec![("content-type", "text/plain")], "{\"question\":\"q\"}"),
            415,
            "application/json",
        ),
        (
            "form encoded",
            BadInput::post(vec![("content-type", "application/x-www-form-urlencoded")], "question=q"),
            415,
            "application/json",
        ),
        ("no content type", BadInput::post(vec![], "{\"question\":\"q\"}"), 415, "application/json"),
        ("GET on ask", BadInput::other("GET", "/api/ouija"), 405, "POST"),
        ("PUT on health", BadInput::other("PUT", "/health"), 405, "GET"),
        ("DELETE on dashboard", BadInput::other("DELETE", "/dashboard"), 405, "GET"),
        ("unknown route", BadInput::other("GET", "/nowhere"), 404, "/nowhere"),
    ];
    for (name, input, status, hint) in cases {
        let reply = client.send(input.method, input.path, &input.headers, input.body.into_bytes());
        assert_eq!(reply.status, status, "{name}: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{name}");
        let problem = reply.json();
        assert_eq!(problem["status"], status, "{name}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(hint), "{name}: detail {detail:?} should mention {hint:?}");
        if status == 405 {
            assert!(reply.header("allow").is_some(), "{name}: 405 without Allow");
        }
    }
    // No declared length: a chunked upload over the limit is a 413 too, and the edge still serves.
    let chunked = json!({"question": "x", "padding": "y".repeat(200_000)}).to_string();
    assert_eq!(post_chunked(client.base(), "/api/ouija", chunked.as_bytes()), 413);
    // 500 multi-byte characters are within the limit: characters, not bytes.
    assert_answer(&client.post_json("/api/ouija", &json!({"question": "ñ".repeat(500)})), "groq");
    assert_eq!(groq.chat_calls(), 1, "bad input reached a provider");
    assert_eq!(ollama.chat_calls(), 0);
    assert_eq!(dashboard_with_total(&client, 1)["total"], 1, "bad input was recorded");
}

pub fn upstream_errors_echoing_secrets_are_never_relayed(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Status(401));
    let ollama = Fake::start(Kind::Ollama, Mode::Status(401));
    let (_edge, client) = start_with(start, &groq, &ollama, &[]);
    // The client asserts on every reply that neither secret appears in it.
    assert_answer(&client.ask("Is my key safe?"), "sqlite");
    assert_eq!(groq.chat_calls(), 1);
    client.get("/health");
    client.get("/dashboard");
    client.send("GET", "/api/ouija", &[], Vec::new());
}

pub fn cors_preflight_follows_cors_origins(start: Start) {
    let edge = start(&vars(None, None, &[("CORS_ORIGINS", "https://board.example")]));
    let client = Client::new(&edge.base);
    let allowed = [("origin", "https://board.example"), ("access-control-request-method", "POST")];
    let reply = client.send("OPTIONS", "/api/ouija", &allowed, Vec::new());
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://board.example"));
    assert!(reply.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    let other = [("origin", "https://evil.example"), ("access-control-request-method", "POST")];
    assert_eq!(client.send("OPTIONS", "/api/ouija", &other, Vec::new()).status, 403);
    let reply = client.send(
        "POST",
        "/api/ouija",
        &[("origin", "https://board.example"), ("content-type", "application/json")],
        b"{\"question\":\"hola\"}".to_vec(),
    );
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://board.example"));
}

pub fn crafted_answers_neither_reach_the_board_nor_switch_a_provider_off(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Answer("\u{202e}sey\u{202c} \u{200b}indeed".into()));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("The mist says yes.".into()));
    let (_edge, client) = start_with(start, &groq, &ollama, &[]);

    // Bidi and zero-width characters are removed: the board shows what it spells.
    let body = assert_answer(&client.ask("Will it be?"), "groq");
    assert_eq!(body["answer"], "sey indeed");
    // An answer in a script the board has no letters for falls through to the next link.
    groq.set_mode(Mode::Answer("是的，星星同意。".into()));
    assert_answer(&client.ask("Will it be so?"), "ollama");
    // Junk that a question can provoke is not a provider failure: ten in a row open no breaker.
    groq.set_mode(Mode::Junk);
    ollama.set_mode(Mode::Junk);
    for i in 0..10 {
        assert_answer(&client.ask(&format!("Crafted question {i}?")), "sqlite");
    }
    groq.set_mode(Mode::Answer("Yes.".into()));
    assert_answer(&client.ask("Will it be now?"), "groq");
    assert_eq!(groq.chat_calls(), 13, "Groq was skipped after junk");
    assert_eq!(ollama.chat_calls(), 11, "Ollama was skipped after junk");
}

pub fn the_fourth_ask_within_a_second_is_a_429_and_another_asker_is_not_limited(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Answer("It is written.".into()));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("Perhaps.".into()));
    let limits = [("ASK_LIMITS", ouija_edge::core::config::DEFAULT_ASK_LIMITS)];
    let (edge, _) = start_with(start, &groq, &ollama, &limits);

    // Four asks must fit in one second: on a loaded machine, try again as a fresh asker.
    let (first, limited) = (1..=3)
        .find_map(|attempt| {
            let client = Client::as_asker(&edge.base, &format!("203.0.113.{attempt}"));
            let started = Instant::now();
            let calls_before = groq.chat_calls();
            let replies: Vec<Reply> = (0..4).map(|n| client.ask(&format!("Will it be {n}?"))).collect();
            if started.elapsed() >= Duration::from_millis(900) {
                return None;
            }
            for reply in &replies[..3] {
                assert_answer(reply, "groq");
                assert!(reply.header("server-timing").is_some_and(|t| t.contains("groq;dur=")), "{reply:?}");
            }
            assert_eq!(groq.chat_calls(), calls_before + 3, "the limited ask reached Groq");
            Some((client, replies[3].clone()))
        })
        .expect("four asks took a second or more, three times over");
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.header("content-type"), Some("application/problem+json"));
    assert!(limited.header("server-timing").is_some_and(|t| t.contains("total;dur=")), "{limited:?}");
    let retry_after: u64 = limited.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert_eq!(retry_after, 1);
    let detail = limited.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("at most 3 a second"), "{detail}");
    assert_eq!(ollama.chat_calls(), 0);

    // Another asker is not held back by the first.
    assert_answer(&Client::as_asker(&edge.base, "198.51.100.9").ask("Will it be?"), "groq");
    // After Retry-After, the first asker passes again.
    thread::sleep(Duration::from_secs(retry_after));
    assert_answer(&first.ask("Will it be at last?"), "groq");
    // A flood of asks past the limits: counted, though not one write each (on the key-value store
    // one refused ask in 16 is written, counting 16: 200 make a miss vanishingly unlikely).
    let refused = (0..200).filter(|n| first.ask(&format!("Flood {n}?")).status == 429).count();
    assert!(refused >= 150, "{refused} of 200 refused");
    let calls = groq.chat_calls();
    let dashboard = dashboard_with_total(&first, u64::from(calls));
    assert_eq!(dashboard["total"].as_u64(), Some(u64::from(calls)), "limited asks are not consultations");
    assert!(dashboard["limited"].as_u64().is_some_and(|n| n >= 1), "the dashboard counts them: {dashboard}");
}

/// One row of the bad-input table.
struct BadInput {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
}

impl BadInput {
    fn post(headers: Vec<(&'static str, &'static str)>, body: &str) -> BadInput {
        BadInput { method: "POST", path: "/api/ouija", headers, body: body.to_owned() }
    }

    fn other(method: &'static str, path: &'static str) -> BadInput {
        BadInput { method, path, headers: Vec::new(), body: String::new() }
    }
}

/// Memory on, for an hour.
const MEMORY_ON: (&str, &str) = ("MEMORY_TTL_S", "3600");

pub fn the_same_question_is_remembered_then_annoys_and_another_asker_or_question_is_not(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Answer("The stars say yes.".into()));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("The mist says no.".into()));
    let (edge, _) = start_with(start, &groq, &ollama, &[MEMORY_ON]);
    let asker = Client::as_asker(&edge.base, "203.0.113.50");
    let ask = |client: &Client, question: &str| {
        client
            .post_json("/api/ouija", &json!({"question": question, "language": "en", "personality": "dark"}))
    };

    let first = assert_answer(&ask(&asker, "Will my zebra Quixote-7731 marry this year?"), "groq");
    assert_eq!(first["remembered"], false);
    // The answer is remembered with the consultation's record, written after the response.
    dashboard_with_total(&asker, 1);

    // Case, accents, punctuation and spacing do not make another question.
    let second = assert_answer(&ask(&asker, "  will my ZEBRA quixote 7731 marry THIS yeár?!"), "groq");
    assert_eq!((&second["answer"], &second["remembered"]), (&first["answer"], &json!(true)), "{second}");
    assert_ne!(second["id"], first["id"]);
    assert_eq!((groq.chat_calls(), ollama.chat_calls()), (1, 0), "a remembered answer reached a provider");

    let annoyed = repeat_answers();
    for _ in 0..2 {
        let again = assert_answer(&ask(&asker, "Will my zebra Quixote-7731 marry this year?"), "sqlite");
        assert_eq!(again["remembered"], true, "{again}");
        let text = again["answer"].as_str().unwrap_or_default().to_owned();
        assert!(annoyed.contains(&text), "not a repeat answer: {text}");
    }
    assert_eq!((groq.chat_calls(), ollama.chat_calls()), (1, 0), "an annoyed answer reached a provider");

    // Another asker, or another question, is not remembered.
    let other_asker = Client::as_asker(&edge.base, "198.51.100.60");
    for (client, question) in [
        (&other_asker, "Will my zebra Quixote-7731 marry this year?"),
        (&asker, "Will my zebra Quixote-7731 marry next year?"),
    ] {
        let body = assert_answer(&ask(client, question), "groq");
        assert_eq!(body["remembered"], false, "{body}");
    }
    assert_eq!(groq.chat_calls(), 3);
    let dashboard = dashboard_with_total(&asker, 6);
    assert_eq!(dashboard["providers"]["groq"]["calls"], 3, "{dashboard}");
    assert_eq!(dashboard["providers"]["groq"]["outcomes"]["remembered"], 3, "{dashboard}");

    // Nothing of the questions (as asked or folded) or the addresses is in the database.
    let texts = stored_texts(&edge.dir);
    assert!(texts.iter().any(|(_, text)| text.contains("The stars say yes.")), "the scan reads the memory");
    for (table, text) in texts {
        for secret in ["Quixote", "quixote", "zebra", "7731", "203.0.113.50", "198.51.100.60"] {
            assert!(!text.contains(secret), "{secret} stored in {table}: {text}");
        }
    }
}

pub fn a_remembered_answer_survives_a_restart_of_the_runtime(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Answer("The stars say yes.".into()));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("The mist says no.".into()));
    let vars = vars(Some(groq.base_url()), Some(ollama.base_url()), &[MEMORY_ON]);
    let edge = start(&vars);
    let first =
        assert_answer(&Client::as_asker(&edge.base, "203.0.113.51").ask("Will the mist lift?"), "groq");
    dashboard_with_total(&Client::new(&edge.base), 1);

    // A new process on the same database: the memory (and the asker key) live there, not in it.
    let edge = edge.restart(&vars);
    let again =
        assert_answer(&Client::as_asker(&edge.base, "203.0.113.51").ask("will the MIST lift"), "groq");
    assert_eq!((&again["answer"], &again["remembered"]), (&first["answer"], &json!(true)), "{again}");
    assert_eq!((groq.chat_calls(), ollama.chat_calls()), (1, 0), "the restarted runtime forgot");
}

// ---------------------------------------------------------------------------------------------
// Streamed answers (#12)

pub fn a_streamed_answer_arrives_token_by_token_before_the_fake_has_finished(start: Start) {
    let answer = "The stars say yes, but the road bends before it reaches you.";
    let groq = Fake::start(Kind::Groq, Mode::Answer(answer.into()));
    groq.set_latency(Duration::from_millis(300));
    groq.set_streaming(Streaming::Whole, Duration::from_millis(120));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("The lamp flickers.".into()));
    let (_edge, client) = start_with(start, &groq, &ollama, &[]);

    let streamed = client.ask_streaming("Will the road be kind to me?", None);
    assert_eq!((streamed.status, streamed.content_type.as_str()), (200, "text/event-stream"), "{streamed:?}");
    let done = streamed.done().clone();
    let first = streamed.events.iter().find(|e| e.name == "token").expect("a token event");
    let finished = groq.stream_finished_soon().expect("the fake finished its stream");
    assert!(first.at < finished, "the first token reached the client before the fake had finished");
    assert!(streamed.events.iter().filter(|e| e.name == "token").count() > 3, "{streamed:?}");
    assert_eq!(streamed.tokens(), answer);
    assert_eq!((done["answer"].as_str(), done["response"].as_str()), (Some(answer), Some(answer)));
    assert_eq!((done["source"].as_str(), done["complete"].as_bool()), (Some("groq"), Some(true)));
    assert!(done["first_token_ms"].as_u64().is_some_and(|ms| ms >= 300), "{done}");
    assert_eq!(groq.seen().last().map(|seen| seen.body["stream"].clone()), Some(json!(true)));
    // Without the Accept header nothing changes: the JSON ask, asked without streaming.
    let plain = assert_answer(&client.ask("Will the road be kind to me?"), "groq");
    assert_eq!(plain["answer"], answer);
    assert!(groq.seen().last().is_some_and(|seen| seen.body["stream"] != json!(true)), "asked whole");
    dashboard_with_total(&client, 2);
}

pub fn a_stream_cut_or_stalled_midway_ends_incomplete_and_a_429_streams_from_ollama(start: Start) {
    let groq = Fake::start(Kind::Groq, Mode::Answer("The shadows say that the answer is near.".into()));
    groq.set_streaming(Streaming::CutAfter(3), Duration::from_millis(50));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("The lamp flickers: perhaps soon.".into()));
    ollama.set_streaming(Streaming::Whole, Duration::from_millis(30));
    let (_edge, client) = start_with(start, &groq, &ollama, &[]);

    for (streaming, outcome) in [(Streaming::CutAfter(3), "cut"), (Streaming::StallAfter(3), "stalled")] {
        groq.set_streaming(streaming, Duration::from_millis(50));
        let streamed = client.ask_streaming("Will it be soon?", None);
        let done = streamed.done();
        assert_eq!(done["complete"], false, "{outcome}: {done}");
        let spoken = streamed.tokens();
        assert!(spoken.starts_with("The shadows say"), "{outcome}: {spoken}");
        let answer = done["answer"].as_str().unwrap_or_default();
        assert!(answer.starts_with(spoken.trim_end()) && answer.len() > spoken.len(), "a closing: {answer}");
        assert_eq!(done["source"], "groq");
    }
    let dashboard = dashboard_with_total(&client, 2);
    assert_eq!(dashboard["providers"]["groq"]["outcomes"]["cut"], 1, "{dashboard}");
    assert_eq!(dashboard["providers"]["groq"]["outcomes"]["stalled"], 1, "{dashboard}");

    // A 429 before any token: the browser never sees it; Ollama streams its NDJSON.
    groq.set_mode(Mode::RateLimited(30));
    let streamed = client.ask_streaming("Will it be soon?", None);
    assert_eq!(streamed.tokens(), "The lamp flickers: perhaps soon.");
    assert_eq!(
        (streamed.done()["source"].as_str(), streamed.done()["complete"].as_bool()),
        (Some("ollama"), Some(true))
    );
}

pub fn the_client_leaving_mid_stream_cancels_the_upstream_request_and_is_recorded_once(start: Start) {
    let long = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen.";
    let groq = Fake::start(Kind::Groq, Mode::Answer(long.into()));
    groq.set_streaming(Streaming::Whole, Duration::from_millis(250));
    let ollama = Fake::start(Kind::Ollama, Mode::Answer("Perhaps.".into()));
    let (_edge, client) = start_with(start, &groq, &ollama, &[]);

    let streamed = client.ask_streaming("Count for me, spirit?", Some(1));
    assert_eq!(streamed.events.len(), 1, "left after the first token: {streamed:?}");
    let started = Instant::now();
    while groq.streams_cancelled() == 0 && started.elapsed() < Duration::from_secs(8) {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(groq.streams_cancelled(), 1, "the edge let go of Groq's stream when the client left");
    assert!(groq.stream_finished().is_none(), "the fake never got to finish");
    let dashboard = dashboard_with_total(&client, 1);
    assert_eq!(dashboard["total"], 1, "recorded once: {dashboard}");
}

pub fn no_keys_stream_a_canned_answer_word_by_word(start: Start) {
    let edge = start(&[]);
    let client = Client::new(&edge.base);
    let streamed = client.ask_streaming("Will I find love?", None);
    let done = streamed.done();
    assert_eq!((done["source"].as_str(), done["complete"].as_bool()), (Some("sqlite"), Some(true)));
    assert_eq!(streamed.tokens(), done["answer"].as_str().unwrap_or_default());
    assert!(streamed.events.len() > 3, "word by word: {streamed:?}");
    assert!(seeded_answers().iter().any(|a| a == &streamed.tokens()), "{}", streamed.tokens());
}
