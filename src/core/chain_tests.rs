//! The chain, end to end inside the core, on the in-memory platform.
//!
//! Each test names the behaviour it proves. Every response and answer produced here is checked
//! for the Groq key and the proxy token on its way out (see [`send`] and [`ask_recorded`]).

use std::collections::BTreeSet;

use http::{Method, Request, Response, StatusCode, header};
use pollster::block_on;
use serde_json::{Value, json};

use super::admission::{self, Asking};
use super::api::{MAX_BODY_BYTES, handle};
use super::ask::{self, Answer, Consultation, MIN_CALL_MS, Question};
use super::asker::{self, ClientAddress};
use super::config::Config;
use super::dashboard::dashboard;
use super::domain::{Category, Language, Personality, Source};
use super::health::CHECK_TIMEOUT_MS;
use super::memory::{
    EPOCH_MS, MemoryPlatform, Reply, groq_answer, groq_models, groq_rate_limited, groq_request_too_large,
    ollama_answer, ollama_tags,
};
use super::seam::{Metered, Platform};
use super::state::BREAKER_OPEN_MS;
use super::time::rfc3339;

const GROQ: &str = "https://groq.test/openai/v1";
const GROQ_CHAT: &str = "https://groq.test/openai/v1/chat/completions";
const OLLAMA: &str = "https://ollama.test";
const OLLAMA_CHAT: &str = "https://ollama.test/api/chat";
const GROQ_KEY: &str = "gsk_TESTsecret0123456789abcdef";
const PROXY_TOKEN: &str = "proxy-token-s3cr3t-9876";
const GROQ_MODEL: &str = "llama-3.1-8b-instant";
const OLLAMA_MODEL: &str = "qwen2.5:0.5b";
const CANNED_ANSWERS: u64 = 216;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A configuration from `vars`; a later variable overrides an earlier one of the same name. The
/// chain's tests ask many times from one asker: limits and memory are off unless `vars` set them.
fn config(vars: &[(&str, &str)]) -> Config {
    let vars: Vec<(String, String)> = [("ASK_LIMITS", "off"), ("MEMORY_TTL_S", "0")]
        .iter()
        .chain(vars)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|name| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("test configurations are valid")
}

/// Groq and Ollama (behind the proxy, with its token) both configured, plus `extra`.
fn chain_config(extra: &[(&str, &str)]) -> Config {
    let mut vars = vec![
        ("GROQ_API_KEY", GROQ_KEY),
        ("GROQ_BASE_URL", GROQ),
        ("OLLAMA_URL", OLLAMA),
        ("OLLAMA_PROXY_TOKEN", PROXY_TOKEN),
    ];
    vars.extend_from_slice(extra);
    config(&vars)
}

fn question(text: &str, language: Language, personality: Personality) -> Question {
    Question { text: text.to_owned(), language, personality }
}

fn english(text: &str) -> Question {
    question(text, Language::En, Personality::Wise)
}

fn assert_no_secrets(text: &str) {
    for secret in [GROQ_KEY, PROXY_TOKEN] {
        assert!(!text.contains(secret), "a secret leaked into {text}");
    }
}

fn assert_response_keeps_secrets(response: &Response<Vec<u8>>) {
    assert_no_secrets(&String::from_utf8_lossy(response.body()));
    for (name, value) in response.headers() {
        assert_no_secrets(&format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())));
    }
}

/// Asks through the chain and records the consultation, as `handle` and the adapter would.
fn ask_recorded(p: &MemoryPlatform, config: &Config, question: &Question) -> (Answer, Consultation) {
    let (answer, consultation) =
        block_on(ask_anonymously(p, config, question)).expect("the chain answers while the database works");
    assert_no_secrets(&serde_json::to_string(&answer).expect("answers serialize"));
    block_on(ask::record(p, &consultation)).expect("the consultation is recorded");
    (answer, consultation)
}

/// Admits and asks `question` from no asker in particular (no limit, no memory).
async fn ask_anonymously(
    p: &MemoryPlatform,
    config: &Config,
    question: &Question,
) -> Result<(Answer, Consultation), ask::ChainError> {
    let asking =
        Asking { asker: None, memo: None, language: question.language, personality: question.personality };
    let started = p.now_ms();
    let admission = admission::admit(p, config, asking, started).await;
    ask::ask(p, config, question, admission, started).await
}

/// Sends a request through `handle`, checks it leaks no secret, and records any consultation.
fn send(p: &MemoryPlatform, config: &Config, request: &Request<Vec<u8>>) -> Response<Vec<u8>> {
    let handled = block_on(handle(p, Ok(config), request));
    assert_response_keeps_secrets(&handled.response);
    // As the adapters do after sending: a failing database only loses the record.
    block_on(ask::after_response(p, handled.after));
    handled.response
}

fn request(method: Method, path: &str, content_type: Option<&str>, body: &[u8]) -> Request<Vec<u8>> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.to_vec()).expect("valid test request")
}

fn post(path: &str, body: &Value) -> Request<Vec<u8>> {
    request(Method::POST, path, Some("application/json"), body.to_string().as_bytes())
}

fn get(path: &str) -> Request<Vec<u8>> {
    request(Method::GET, path, None, b"")
}

fn body_json(response: &Response<Vec<u8>>) -> Value {
    serde_json::from_slice(response.body()).unwrap_or_else(|e| {
        panic!("the body is not JSON ({e}): {}", String::from_utf8_lossy(response.body()))
    })
}

fn header_of<'a>(response: &'a Response<Vec<u8>>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn consultations(p: &MemoryPlatform) -> u64 {
    p.inspect_count("SELECT COUNT(*) AS n FROM consultations", &[])
}

/// The answer is a canned answer of its language and personality.
fn assert_seeded(p: &MemoryPlatform, answer: &Answer) {
    let rows = p.inspect_count(
        "SELECT COUNT(*) AS n FROM fallback_responses WHERE text = ? AND language = ? AND personality = ?",
        &[answer.answer.as_str().into(), answer.language.as_str().into(), answer.personality.as_str().into()],
    );
    assert_eq!(rows, 1, "{:?} is not a seeded {} {} answer", answer.answer, answer.language.as_str(), {
        answer.personality.as_str()
    });
}

fn groq_always_answers(p: &MemoryPlatform) {
    p.reply_always(GROQ_CHAT, groq_answer("Yes, the stars agree."));
}

fn ollama_always_answers(p: &MemoryPlatform) {
    p.reply_always(OLLAMA_CHAT, ollama_answer(OLLAMA_MODEL, "Perhaps, in time."));
}

fn both_list_their_models(p: &MemoryPlatform) {
    p.reply_always(&format!("{GROQ}/models"), groq_models(&[GROQ_MODEL, "llama-3.3-70b-versatile"]));
    p.reply_always(&format!("{OLLAMA}/api/tags"), ollama_tags(&[OLLAMA_MODEL]));
}

// ---------------------------------------------------------------------------------------------
// The chain: Groq, then Ollama, then the canned answers

#[test]
fn groq_answers_first_with_key_model_and_prompt_in_the_asked_language() {
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, groq_answer("\"**Sí**, el amor llega pronto.\""));
    ollama_always_answers(&p);
    let config = chain_config(&[("GROQ_MODEL", "llama-3.3-70b-versatile")]);

    let (answer, consultation) =
        ask_recorded(&p, &config, &question("¿Encontraré el amor?", Language::Es, Personality::Dark));
    assert_eq!(answer.source, Source::Groq);
    assert_eq!(answer.answer, "Sí, el amor llega pronto.", "cleaned of quotes and markup");
    assert_eq!(
        (consultation.groq.outcome.as_str(), consultation.ollama.outcome.as_str()),
        ("ok", "not_reached")
    );
    assert_eq!(p.calls_to(OLLAMA), 0);

    let (english_answer, _) = ask_recorded(&p, &config, &english("Will I find love?"));
    assert_eq!(english_answer.source, Source::Groq);
    let sent = p.sent_to(GROQ_CHAT);
    assert_eq!(sent.len(), 2);
    let expected_auth = format!("Bearer {GROQ_KEY}");
    for (call, language_marker) in sent.iter().zip(["en español", "in English"]) {
        assert_eq!(call.method, Method::POST);
        assert_eq!(call.header("authorization"), Some(expected_auth.as_str()));
        assert_eq!(call.body["model"], "llama-3.3-70b-versatile");
        assert_eq!(call.body["messages"][0]["role"], "system");
        let system = call.body["messages"][0]["content"].as_str().expect("a system prompt");
        assert!(system.contains(language_marker), "{system}");
    }
    assert!(sent[0].body["messages"][0]["content"].as_str().is_some_and(|s| s.contains("sombrío")));
    assert_eq!(sent[0].body["messages"][1], json!({"role": "user", "content": "¿Encontraré el amor?"}));
    assert_eq!(p.calls_to(OLLAMA), 0, "Ollama is never called while Groq answers");
}

#[test]
fn groq_429_puts_groq_in_cool_down_for_retry_after() {
    let p = MemoryPlatform::new();
    p.reply_in_turn(GROQ_CHAT, vec![groq_rate_limited(60), groq_answer("Yes.")]);
    ollama_always_answers(&p);
    let config = chain_config(&[]);

    let (answer, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(answer.source, Source::Ollama);
    assert_eq!(consultation.groq.outcome.as_str(), "rate_limited");
    for _ in 0..20 {
        let (answer, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
        assert_eq!((answer.source, consultation.groq.outcome.as_str()), (Source::Ollama, "cool_down"));
    }
    assert_eq!(p.calls_to(GROQ), 1, "no call to Groq while it cools down");

    p.advance(59_000);
    let (_, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(consultation.groq.outcome.as_str(), "cool_down");
    assert_eq!(p.calls_to(GROQ), 1);

    p.advance(2_000);
    let (answer, _) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(answer.source, Source::Groq, "61 s after the 429 Groq is called again");
    assert_eq!(p.calls_to(GROQ), 2);
}

#[test]
fn groq_answer_spending_the_daily_quota_cools_groq_down_until_its_reset() {
    let p = MemoryPlatform::new();
    let last = groq_answer("Yes.")
        .header("x-ratelimit-remaining-requests", "0")
        .header("x-ratelimit-reset-requests", "2m0s");
    p.reply_in_turn(GROQ_CHAT, vec![last, groq_answer("Again.")]);
    ollama_always_answers(&p);
    let config = chain_config(&[]);

    let (answer, _) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(answer.source, Source::Groq, "the last request of the day still answers");
    let (answer, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!((answer.source, consultation.groq.outcome.as_str()), (Source::Ollama, "cool_down"));
    assert_eq!(p.calls_to(GROQ), 1, "no 429 spent once the quota is known to be gone");
    p.advance(121_000);
    let (answer, _) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(answer.source, Source::Groq);
}

#[test]
fn request_too_large_429_does_not_cool_groq_down() {
    let p = MemoryPlatform::new();
    p.reply_in_turn(GROQ_CHAT, vec![groq_request_too_large(), groq_answer("Yes.")]);
    ollama_always_answers(&p);
    let config = chain_config(&[]);

    let (answer, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!((answer.source, consultation.groq.outcome.as_str()), (Source::Ollama, "too_large"));
    let (answer, _) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(answer.source, Source::Groq);
    assert_eq!(p.calls_to(GROQ), 2, "the next ask called Groq again at once");
    let state = p.inspect(
        "SELECT cool_down_until, consecutive_failures FROM provider_state WHERE provider = 'groq'",
        &[],
    );
    assert_eq!(state[0]["cool_down_until"], 0);
    assert_eq!(state[0]["consecutive_failures"], 0, "not a breaker failure either");
}

#[test]
fn groq_hang_falls_through_to_ollama_within_the_ask_budget() {
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, Reply::hang());
    p.reply_in_turn(OLLAMA_CHAT, vec![ollama_answer(OLLAMA_MODEL, "Soon.").after(800), Reply::hang()]);
    let budget = 5_000;
    let config = chain_config(&[("ASK_BUDGET_MS", "5000"), ("GROQ_TIMEOUT_MS", "3000")]);

    let started = p.now_ms();
    let (answer, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(answer.source, Source::Ollama);
    assert_eq!((consultation.groq.outcome.as_str(), consultation.groq.latency_ms), ("timeout", Some(3_000)));
    assert_eq!(answer.latency_ms, 3_800);
    assert_eq!(p.now_ms() - started, answer.latency_ms);
    assert_eq!(p.sent_to(GROQ_CHAT)[0].timeout_ms, 3_000);
    let ollama_timeout = u64::from(p.sent_to(OLLAMA_CHAT)[0].timeout_ms);
    assert!(ollama_timeout <= budget - 3_000, "Ollama got {ollama_timeout} ms with 2000 ms left");

    // Both hanging still ends within the budget, from the canned answers. Ollama's deadline was
    // the budget's, not its own, so its hang is `budget_spent` and does not count toward its breaker.
    let (answer, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(answer.source, Source::Sqlite);
    assert_eq!(
        (consultation.groq.outcome.as_str(), consultation.ollama.outcome.as_str()),
        ("timeout", "budget_spent")
    );
    assert!(answer.latency_ms <= budget, "{} ms", answer.latency_ms);
    let failures =
        p.inspect_count("SELECT consecutive_failures FROM provider_state WHERE provider = 'ollama'", &[]);
    assert_eq!(failures, 0);
}

#[test]
fn spent_budget_skips_ollama_and_answers_from_sqlite() {
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, Reply::hang());
    ollama_always_answers(&p);
    let config = chain_config(&[("ASK_BUDGET_MS", "5000"), ("GROQ_TIMEOUT_MS", "5000")]);

    let (answer, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(answer.source, Source::Sqlite);
    assert_eq!(
        (consultation.groq.outcome.as_str(), consultation.ollama.outcome.as_str()),
        ("timeout", "budget_spent")
    );
    assert_eq!(consultation.ollama.latency_ms, None);
    assert_eq!(p.calls_to(OLLAMA), 0);
    assert_eq!(answer.latency_ms, 5_000);
    assert_seeded(&p, &answer);
}

#[test]
fn less_than_min_call_ms_left_is_a_spent_budget() {
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, Reply::text(500, "oops").after(5_000 - MIN_CALL_MS + 1));
    ollama_always_answers(&p);
    let config = chain_config(&[("ASK_BUDGET_MS", "5000"), ("GROQ_TIMEOUT_MS", "5000")]);

    let (answer, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!((answer.source, consultation.ollama.outcome.as_str()), (Source::Sqlite, "budget_spent"));
    assert_eq!(p.calls_to(OLLAMA), 0);
}

#[test]
fn both_providers_down_or_answering_junk_fall_back_to_a_seeded_answer() {
    let ollama = |content: &str| ollama_answer(OLLAMA_MODEL, content);
    let cases = [
        (
            "HTTP 500",
            Reply::text(500, "Internal Server Error"),
            "http_error",
            Reply::text(500, "{}"),
            "http_error",
        ),
        ("refused", Reply::Refuse, "network_error", Reply::Refuse, "network_error"),
        (
            "malformed JSON",
            Reply::text(200, "<html>oops"),
            "malformed",
            Reply::text(200, "{\"message\":"),
            "malformed",
        ),
        (
            "no choices",
            Reply::json(200, &json!({"choices": []})),
            "malformed",
            Reply::json(200, &json!({"done": true})),
            "malformed",
        ),
        ("empty content", groq_answer(""), "junk", ollama("   "), "junk"),
        (
            "out of role",
            groq_answer("As an AI language model, I cannot predict the future."),
            "junk",
            ollama("Como IA, no puedo predecir el futuro."),
            "junk",
        ),
        ("bad gateway then hang", Reply::text(502, "Bad Gateway"), "http_error", Reply::hang(), "timeout"),
    ];
    for (name, groq, groq_outcome, ollama, ollama_outcome) in cases {
        let p = MemoryPlatform::new();
        p.reply_always(GROQ_CHAT, groq);
        p.reply_always(OLLAMA_CHAT, ollama);
        let q = question("¿Me casaré con mi novia?", Language::Es, Personality::Cryptic);
        let (answer, consultation) = ask_recorded(&p, &chain_config(&[]), &q);
        assert_eq!(answer.source, Source::Sqlite, "{name}");
        assert_eq!(
            (consultation.groq.outcome.as_str(), consultation.ollama.outcome.as_str()),
            (groq_outcome, ollama_outcome),
            "{name}"
        );
        assert_eq!((p.calls_to(GROQ), p.calls_to(OLLAMA)), (1, 1), "{name}");
        assert_seeded(&p, &answer);
        assert!(consultation.fallback_id.is_some(), "{name}");
    }
}

#[test]
fn no_keys_answers_from_sqlite_without_any_fetch() {
    let p = MemoryPlatform::new();
    let config = config(&[]);
    let response =
        send(&p, &config, &post("/api/ouija", &json!({"question": "¿Seré rico?", "personality": "playful"})));
    assert_eq!(response.status(), StatusCode::OK);
    let body = body_json(&response);
    assert_eq!((body["source"].as_str(), body["language"].as_str()), (Some("sqlite"), Some("es")));
    assert!(p.sent().is_empty(), "no fetch at all");
    let outcomes = p.inspect("SELECT groq_outcome, ollama_outcome, category FROM consultations", &[]);
    assert_eq!(outcomes, vec![json!({"groq_outcome": "not_configured", "ollama_outcome": "not_configured", "category": "money"}).as_object().cloned().expect("object")]);
}

#[test]
fn groq_per_minute_budget_sends_the_overflow_to_ollama() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    ollama_always_answers(&p);
    let config = chain_config(&[("GROQ_RPM", "30")]);

    let mut overflow = 0;
    for _ in 0..35 {
        let (answer, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
        if answer.source == Source::Ollama {
            assert_eq!(consultation.groq.outcome.as_str(), "minute_budget");
            overflow += 1;
        } else {
            assert_eq!(answer.source, Source::Groq);
        }
        p.advance(100);
    }
    assert_eq!(p.calls_to(GROQ), 30, "the 31st ask in a minute does not reach Groq");
    assert_eq!(overflow, 5);

    p.advance(60_000);
    let (answer, _) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(answer.source, Source::Groq, "a new minute, a new budget");
    assert_eq!(p.calls_to(GROQ), 31);
}

#[test]
fn three_groq_failures_open_the_breaker_and_three_more_reopen_it_after_30_s() {
    let p = MemoryPlatform::new();
    let failure = || Reply::text(500, "Internal Server Error");
    let mut replies: Vec<Reply> = (0..6).map(|_| failure()).collect();
    replies.push(groq_answer("Yes."));
    p.reply_in_turn(GROQ_CHAT, replies);
    ollama_always_answers(&p);
    let config = chain_config(&[]);
    let ask_groq_outcome = || ask_recorded(&p, &config, &english("Will it rain?")).1.groq.outcome.as_str();

    assert_eq!([ask_groq_outcome(), ask_groq_outcome(), ask_groq_outcome()], ["http_error"; 3]);
    assert_eq!(ask_groq_outcome(), "breaker_open");
    p.advance(BREAKER_OPEN_MS - 1);
    assert_eq!(ask_groq_outcome(), "breaker_open");
    assert_eq!(p.calls_to(GROQ), 3);

    // Opening the breaker started the count again: one failure after it closes does not reopen it.
    p.advance(1);
    assert_eq!(ask_groq_outcome(), "http_error", "one try after 30 s");
    assert_eq!(ask_groq_outcome(), "http_error", "the count restarted when the breaker opened");
    assert_eq!(ask_groq_outcome(), "http_error");
    assert_eq!(ask_groq_outcome(), "breaker_open", "three failures in a row open it again");
    assert_eq!(p.calls_to(GROQ), 6);

    p.advance(BREAKER_OPEN_MS);
    assert_eq!(ask_groq_outcome(), "ok");
    assert_eq!(ask_groq_outcome(), "ok", "the success closed the breaker");
    assert_eq!(p.calls_to(GROQ), 8);
    let state = p.inspect(
        "SELECT consecutive_failures, breaker_open_until FROM provider_state WHERE provider = 'groq'",
        &[],
    );
    assert_eq!((&state[0]["consecutive_failures"], &state[0]["breaker_open_until"]), (&json!(0), &json!(0)));
}

#[test]
fn junk_answers_never_open_the_shared_breaker() {
    // Output that depends on the question (a model's junk) must not switch a provider off for
    // everyone: ten junk answers in a row leave both providers closed and still called.
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, groq_answer("{\"answer\": \"yes\"}"));
    p.reply_always(OLLAMA_CHAT, ollama_answer(OLLAMA_MODEL, "是的，星星同意。"));
    let config = chain_config(&[]);
    for i in 0..10 {
        let (answer, consultation) = ask_recorded(&p, &config, &english(&format!("Crafted question {i}?")));
        assert_eq!(answer.source, Source::Sqlite);
        assert_eq!(
            (consultation.groq.outcome.as_str(), consultation.ollama.outcome.as_str()),
            ("junk", "junk"),
            "ask {i}"
        );
    }
    assert_eq!((p.calls_to(GROQ), p.calls_to(OLLAMA)), (10, 10), "a breaker opened on junk");
    let failures =
        p.inspect_count("SELECT SUM(consecutive_failures + breaker_open_until) FROM provider_state", &[]);
    assert_eq!(failures, 0);
}

#[test]
fn a_groq_400_is_the_requests_fault_and_does_not_count_toward_the_breaker() {
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, Reply::text(400, "{\"error\":{\"message\":\"bad request\"}}"));
    ollama_always_answers(&p);
    let config = chain_config(&[]);
    for _ in 0..5 {
        assert_eq!(
            ask_recorded(&p, &config, &english("Will it rain?")).1.groq.outcome.as_str(),
            "http_error"
        );
    }
    assert_eq!(p.calls_to(GROQ), 5);
}

#[test]
fn ollama_through_the_proxy_gets_the_token_the_model_and_no_streaming() {
    let p = MemoryPlatform::new();
    p.reply_always(OLLAMA_CHAT, ollama_answer("llama3.2:1b", "El destino sonríe."));
    let config = config(&[
        ("OLLAMA_URL", OLLAMA),
        ("OLLAMA_PROXY_TOKEN", PROXY_TOKEN),
        ("OLLAMA_MODEL", "llama3.2:1b"),
    ]);

    let (answer, consultation) =
        ask_recorded(&p, &config, &question("¿Qué me depara el futuro?", Language::Es, Personality::Wise));
    assert_eq!(answer.source, Source::Ollama);
    assert_eq!(answer.answer, "El destino sonríe.");
    assert_eq!(consultation.groq.outcome.as_str(), "not_configured");
    let sent = p.sent_to(OLLAMA_CHAT);
    assert_eq!(sent.len(), 1);
    let expected_auth = format!("Bearer {PROXY_TOKEN}");
    assert_eq!(sent[0].header("authorization"), Some(expected_auth.as_str()));
    assert_eq!(sent[0].body["stream"], json!(false));
    assert_eq!(sent[0].body["model"], "llama3.2:1b");
    assert_eq!(sent[0].body["messages"][1]["content"], "¿Qué me depara el futuro?");
    assert!(sent[0].body["messages"][0]["content"].as_str().is_some_and(|s| s.contains("en español")));

    let without_token = MemoryPlatform::new();
    without_token.reply_always(OLLAMA_CHAT, ollama_answer(OLLAMA_MODEL, "Sí."));
    ask_recorded(&without_token, &self::config(&[("OLLAMA_URL", OLLAMA)]), &english("Will it rain?"));
    assert_eq!(without_token.sent_to(OLLAMA_CHAT)[0].header("authorization"), None);
}

#[test]
fn ollama_429_behind_the_proxy_puts_ollama_in_cool_down() {
    let p = MemoryPlatform::new();
    p.reply_in_turn(
        OLLAMA_CHAT,
        vec![
            Reply::json(429, &json!({"error": "too many requests"})).header("retry-after", "30"),
            ollama_answer(OLLAMA_MODEL, "Yes."),
        ],
    );
    let config = config(&[("OLLAMA_URL", OLLAMA), ("OLLAMA_PROXY_TOKEN", PROXY_TOKEN)]);

    let (answer, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!((answer.source, consultation.ollama.outcome.as_str()), (Source::Sqlite, "rate_limited"));
    let (_, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(consultation.ollama.outcome.as_str(), "cool_down");
    assert_eq!(p.calls_to(OLLAMA), 1);
    p.advance(30_000);
    let (answer, _) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(answer.source, Source::Ollama);
}

// ---------------------------------------------------------------------------------------------
// The canned answers

#[test]
fn canned_answer_fits_category_language_and_personality() {
    let p = MemoryPlatform::new();
    let cases = [
        (english("Will I marry my girlfriend?"), Category::Love),
        (question("¿Me darán el ascenso en el trabajo?", Language::Es, Personality::Dark), Category::Career),
        (question("Will I win the lottery?", Language::En, Personality::Playful), Category::Money),
        (question("Is the sky blue?", Language::En, Personality::Cryptic), Category::General),
    ];
    for (q, category) in cases {
        let (answer, consultation) = ask_recorded(&p, &config(&[]), &q);
        assert_eq!((answer.source, answer.category), (Source::Sqlite, category), "{}", q.text);
        let id = consultation.fallback_id.expect("a canned answer's id");
        let row = p.inspect(
            "SELECT text, category, language, personality FROM fallback_responses WHERE id = ?",
            &[id.into()],
        );
        assert_eq!(
            Value::Object(row[0].clone()),
            json!({"text": answer.answer, "category": category.as_str(), "language": q.language.as_str(), "personality": q.personality.as_str()}),
            "{}",
            q.text
        );
    }
}

#[test]
fn asking_again_never_repeats_the_previous_canned_answer() {
    let p = MemoryPlatform::new();
    let q = english("Will I marry my girlfriend?");
    let mut previous = String::new();
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        let (answer, _) = ask_recorded(&p, &config(&[]), &q);
        assert_ne!(answer.answer, previous, "the same answer twice in a row");
        seen.insert(answer.answer.clone());
        previous = answer.answer;
        p.advance(1_000);
    }
    assert!(seen.len() >= 2);
    // Each given answer is marked as served once the running totals roll up to it.
    p.inspect(
        "UPDATE consultation_rollup SET upto = ?1 WHERE upto < ?1",
        &[(p.now_ms() * 1024 + 1023).into()],
    );
    let served = p.inspect_count("SELECT SUM(served_count) AS n FROM fallback_responses", &[]);
    assert_eq!(served, 12, "each canned answer counted as served once");
}

// ---------------------------------------------------------------------------------------------
// The database

#[test]
fn groq_answers_even_when_the_database_fails() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    ollama_always_answers(&p);
    p.fail_db(true);
    let response = send(&p, &chain_config(&[]), &post("/api/ouija", &json!({"question": "Will it rain?"})));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(&response)["source"], "groq");
    assert_eq!(p.calls_to(GROQ), 1);
    assert!(p.statements() > 0, "the database was tried");
}

#[test]
fn everything_down_including_the_database_is_a_503_problem() {
    let configs = [chain_config(&[]), config(&[])];
    for config in &configs {
        let p = MemoryPlatform::new();
        p.reply_always(GROQ_CHAT, Reply::text(500, "oops"));
        p.reply_always(OLLAMA_CHAT, Reply::Refuse);
        p.fail_db(true);
        let response = send(&p, config, &post("/api/ouija", &json!({"question": "Will it rain?"})));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header_of(&response, "content-type"), Some("application/problem+json"));
        assert_eq!(header_of(&response, "retry-after"), Some("5"));
        let problem = body_json(&response);
        assert_eq!((problem["status"].as_u64(), problem["code"].as_str()), (Some(503), Some("unavailable")));
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains("cannot answer")), "{problem}");
    }
}

#[test]
fn record_writes_one_row_per_ask_and_never_the_question() {
    let secret_question = "Will my zebra Quixote-7731 marry Bartholomew the heron?";
    let p = MemoryPlatform::new();
    p.reply_in_turn(GROQ_CHAT, vec![groq_answer("Yes."), Reply::text(500, "oops"), Reply::Refuse]);
    p.reply_in_turn(OLLAMA_CHAT, vec![ollama_answer(OLLAMA_MODEL, "No."), Reply::Refuse]);
    let config = chain_config(&[]);

    let mut ids = Vec::new();
    for (n, source) in (1..).zip(["groq", "ollama", "sqlite"]) {
        let response = send(&p, &config, &post("/api/ouija", &json!({"question": secret_question})));
        let body = body_json(&response);
        assert_eq!(body["source"], source);
        assert_eq!(consultations(&p), n, "exactly one row per ask");
        ids.push(body["id"].as_str().expect("an id").to_owned());
    }
    let recorded: Vec<Value> = p
        .inspect("SELECT id FROM consultations ORDER BY created_at, rowid", &[])
        .into_iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(recorded, ids.iter().map(|id| json!(id)).collect::<Vec<_>>());

    let tables = p.inspect("SELECT name FROM sqlite_master WHERE type = 'table'", &[]);
    for table in tables {
        let name = table["name"].as_str().expect("table name");
        for row in p.inspect(&format!("SELECT * FROM \"{name}\""), &[]) {
            for value in row.values().filter_map(Value::as_str) {
                assert!(
                    !value.contains("Quixote") && !value.contains("zebra"),
                    "question text in {name}: {value}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The dashboard

#[test]
fn dashboard_counts_sources_rates_and_percentiles_from_the_records() {
    let p = MemoryPlatform::new();
    p.reply_in_turn(
        GROQ_CHAT,
        vec![
            groq_answer("Yes.").after(100),
            groq_answer("No.").after(200),
            groq_answer("Maybe.").after(300),
            groq_rate_limited(60).after(50),
        ],
    );
    p.reply_in_turn(
        OLLAMA_CHAT,
        vec![
            ollama_answer(OLLAMA_MODEL, "Soon.").after(400),
            ollama_answer(OLLAMA_MODEL, "Later.").after(600),
            Reply::Refuse,
        ],
    );
    let config = chain_config(&[]);
    let latencies: Vec<u64> =
        (0..6).map(|_| ask_recorded(&p, &config, &english("Will it rain?")).0.latency_ms).collect();
    assert_eq!(latencies, [100, 200, 300, 450, 600, 0]);

    let d = block_on(dashboard(&p, &config)).expect("the dashboard reads");
    assert_eq!(d.total, 6);
    assert_eq!(
        d.by_source.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
        [("groq", 3), ("ollama", 2), ("sqlite", 1)]
    );
    assert!((d.fallback_rate - 1.0 / 6.0).abs() < 1e-9, "{}", d.fallback_rate);
    assert_eq!((d.latency_ms.p50, d.latency_ms.p95), (Some(200), Some(600)));
    assert_eq!(d.since, Some(rfc3339(EPOCH_MS)));

    let groq = &d.providers["groq"];
    assert_eq!((groq.calls, groq.answers), (4, 3));
    assert_eq!((groq.latency_ms.p50, groq.latency_ms.p95), (Some(100), Some(300)));
    assert_eq!(json!(groq.outcomes), json!({"ok": 3, "rate_limited": 1, "cool_down": 2}));
    assert_eq!(json!(groq.failures), json!({"rate_limited": 1}));
    let rate_limited_at = EPOCH_MS + 100 + 200 + 300 + 50;
    assert_eq!(groq.cool_down_until, Some(rfc3339(rate_limited_at + 60_000)), "shown while cooling down");
    let ollama = &d.providers["ollama"];
    assert_eq!((ollama.calls, ollama.answers), (3, 2));
    assert_eq!((ollama.latency_ms.p50, ollama.latency_ms.p95), (Some(400), Some(600)));
    assert_eq!(json!(ollama.outcomes), json!({"not_reached": 3, "ok": 2, "network_error": 1}));

    p.advance(60_000);
    let response = send(&p, &config, &get("/dashboard"));
    assert_eq!(response.status(), StatusCode::OK);
    let body = body_json(&response);
    assert_eq!(body["total"], 6);
    assert_eq!(body["providers"]["groq"]["cool_down_until"], Value::Null, "gone once the cool-down ends");
}

#[test]
fn consultation_counts_backfill_earlier_records_and_follow_new_ones_like_a_full_scan() {
    let db = rusqlite::Connection::open_in_memory().expect("in-memory SQLite");
    let name =
        |m: &std::path::PathBuf| m.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let all = super::memory::migrations();
    let earlier: Vec<_> = all.iter().filter(|m| name(m).as_str() < "0003").collect();
    let counts: Vec<_> = all.iter().filter(|m| name(m).starts_with("0003")).collect();
    let later: Vec<_> = all.iter().filter(|m| name(m).as_str() >= "0004").collect();
    assert_eq!(counts.len(), 1, "the counts migration is 0003");
    let apply = |path: &std::path::Path| {
        let sql = std::fs::read_to_string(path).expect("readable migration");
        db.execute_batch(&sql).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    };
    let record = |id: &str, at: i64, source: &str, groq: &str, ollama: &str| {
        db.execute(
            "INSERT INTO consultations (id, created_at, source, latency_ms, language, personality, category, \
             groq_outcome, ollama_outcome) VALUES (?1, ?2, ?3, 10, 'en', 'wise', 'general', ?4, ?5)",
            rusqlite::params![id, at, source, groq, ollama],
        )
        .expect("insert");
    };
    let by_table = "SELECT source, groq_outcome, ollama_outcome, n, first_at FROM consultation_counts \
                    ORDER BY source, groq_outcome, ollama_outcome";
    let by_scan = "SELECT source, groq_outcome, ollama_outcome, COUNT(*), MIN(created_at) FROM consultations \
                   GROUP BY source, groq_outcome, ollama_outcome ORDER BY source, groq_outcome, ollama_outcome";
    let rows = |sql: &str| -> Vec<(String, String, String, i64, i64)> {
        let mut statement = db.prepare(sql).expect("prepare");
        let mapped = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .expect("query");
        mapped.map(|r| r.expect("row")).collect()
    };

    for migration in &earlier {
        apply(migration);
    }
    record("a", 500, "groq", "ok", "not_reached");
    record("b", 300, "groq", "ok", "not_reached");
    record("c", 700, "sqlite", "timeout", "network_error");
    apply(counts[0]);
    for migration in &later {
        apply(migration);
    }
    assert_eq!(rows(by_table), rows(by_scan), "backfilled, and kept through the move to keyed records");
    assert_eq!(rows(by_table)[0], ("groq".into(), "ok".into(), "not_reached".into(), 2, 300));

    // Since 0006: records are counted when the totals roll up to them (or at once when late).
    let keyed = |key: i64, at: i64, source: &str, groq: &str, ollama: &str| {
        db.execute(
            "INSERT INTO consultations (key, id, created_at, source, latency_ms, language, personality, \
             category, groq_outcome, ollama_outcome) VALUES (?1, ?1, ?2, ?3, 10, 'en', 'wise', 'general', ?4, ?5)",
            rusqlite::params![key, at, source, groq, ollama],
        )
        .expect("insert");
    };
    let with_tail = "SELECT source, groq_outcome, ollama_outcome, SUM(n), MIN(first_at) FROM \
                     (SELECT source, groq_outcome, ollama_outcome, n, first_at FROM consultation_counts \
                     UNION ALL SELECT source, groq_outcome, ollama_outcome, COUNT(*), MIN(created_at) \
                     FROM consultations WHERE key > (SELECT upto FROM consultation_rollup) \
                     GROUP BY source, groq_outcome, ollama_outcome) \
                     GROUP BY source, groq_outcome, ollama_outcome ORDER BY source, groq_outcome, ollama_outcome";
    keyed(900 * 1024, 900, "ollama", "rate_limited", "ok");
    keyed(100 * 1024, 100, "groq", "ok", "not_reached");
    assert_ne!(rows(by_table), rows(by_scan), "not rolled up yet");
    assert_eq!(rows(with_tail), rows(by_scan), "the totals plus the records since");
    db.execute("UPDATE consultation_rollup SET upto = ?1 WHERE upto < ?1", [950 * 1024]).expect("roll up");
    assert_eq!(rows(by_table), rows(by_scan), "rolled up");
    assert_eq!(rows(by_table)[0].3, 3);
    assert_eq!(rows(by_table)[0].4, 100, "first_at follows an earlier record");
    keyed(940 * 1024, 940, "groq", "ok", "not_reached");
    assert_eq!(rows(by_table), rows(by_scan), "a record written late is counted when written");
    keyed(960 * 1024, 960, "groq", "ok", "not_reached");
    assert_eq!(rows(with_tail), rows(by_scan), "and one after the roll-up is in the tail, once");
}

// ---------------------------------------------------------------------------------------------
// Health

#[test]
fn health_is_ok_when_everything_answers() {
    let p = MemoryPlatform::new();
    both_list_their_models(&p);
    let response = send(&p, &chain_config(&[("ENVIRONMENT", "test")]), &get("/health"));
    assert_eq!(response.status(), StatusCode::OK);
    let health = body_json(&response);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["environment"], "test");
    assert_eq!(health["checks"]["database"]["count"], CANNED_ANSWERS);
    assert_eq!(
        (health["checks"]["groq"]["status"].as_str(), health["checks"]["ollama"]["status"].as_str()),
        (Some("ok"), Some("ok"))
    );
    let expected_auth = format!("Bearer {GROQ_KEY}");
    assert_eq!(p.sent_to(GROQ)[0].header("authorization"), Some(expected_auth.as_str()));
    assert_eq!(p.sent_to(&format!("{GROQ}/models")).len(), 1, "a model listing, not a completion");
}

#[test]
fn health_is_degraded_when_the_llms_hang_and_each_check_keeps_a_short_deadline() {
    let p = MemoryPlatform::new();
    p.reply_always(GROQ, Reply::hang());
    p.reply_always(OLLAMA, Reply::hang());
    let started = p.now_ms();
    let response = send(&p, &chain_config(&[]), &get("/health"));
    let elapsed = p.now_ms() - started;
    assert!(elapsed <= 1_000, "the checks run concurrently: {elapsed} ms");
    assert_eq!(response.status(), StatusCode::OK);
    let health = body_json(&response);
    assert_eq!(health["status"], "degraded");
    for provider in ["groq", "ollama"] {
        let check = &health["checks"][provider];
        assert_eq!((check["status"].as_str(), check["available"].as_bool()), (Some("down"), Some(false)));
        let error = check["error"].as_str().expect("an error");
        assert!(!error.contains("test"), "no URL in {error}");
    }
    let sent = p.sent();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|s| s.timeout_ms <= 1_000 && s.timeout_ms == CHECK_TIMEOUT_MS), "{sent:?}");
}

#[test]
fn health_is_critical_when_the_database_fails() {
    let p = MemoryPlatform::new();
    both_list_their_models(&p);
    p.fail_db(true);
    let response = send(&p, &chain_config(&[]), &get("/health"));
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health = body_json(&response);
    assert_eq!(health["status"], "critical");
    assert_eq!(health["checks"]["database"]["status"], "error");
}

#[test]
fn health_reports_groq_cool_down_without_calling_groq() {
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, groq_rate_limited(60));
    ollama_always_answers(&p);
    both_list_their_models(&p);
    let config = chain_config(&[]);
    ask_recorded(&p, &config, &english("Will it rain?"));
    let calls_before = p.calls_to(GROQ);

    let response = send(&p, &config, &get("/health"));
    let health = body_json(&response);
    assert_eq!(health["checks"]["groq"]["status"], "cool_down");
    assert_eq!(health["checks"]["groq"]["available"], false);
    assert_eq!(health["checks"]["ollama"]["status"], "ok");
    assert_eq!(health["status"], "degraded");
    assert_eq!(p.calls_to(GROQ), calls_before, "no call to Groq while it cools down");
}

// ---------------------------------------------------------------------------------------------
// The HTTP surface

struct BadInput {
    name: &'static str,
    request: Request<Vec<u8>>,
    status: u16,
    detail: &'static str,
    allow: Option<&'static str>,
}

fn bad(name: &'static str, request: Request<Vec<u8>>, status: u16, detail: &'static str) -> BadInput {
    BadInput { name, request, status, detail, allow: None }
}

fn bad_inputs() -> Vec<BadInput> {
    let json = Some("application/json");
    let raw = |body: &str| request(Method::POST, "/api/ouija", json, body.as_bytes());
    let ask = |body: Value| post("/api/ouija", &body);
    let oversized = json!({"question": "a".repeat(MAX_BODY_BYTES)});
    let mut declared_too_long = raw(r#"{"question":"Will it rain?"}"#);
    declared_too_long.headers_mut().insert(header::CONTENT_LENGTH, "9000".parse().expect("a number"));
    let valid = r#"{"question":"Will it rain?"}"#.as_bytes();
    vec![
        bad("invalid JSON", raw(r#"{"question": "#), 400, "not valid JSON"),
        bad("JSON array", raw(r#"["Will it rain?"]"#), 400, "must be a JSON object"),
        bad("missing question", ask(json!({"language": "en"})), 400, "question is required"),
        bad("null question", ask(json!({"question": null})), 400, "question is required"),
        bad("number question", ask(json!({"question": 42})), 400, "question must be a string"),
        bad("empty question", ask(json!({"question": ""})), 400, "question must not be empty"),
        bad("whitespace question", ask(json!({"question": " \t\n "})), 400, "question must not be empty"),
        bad(
            "501 characters",
            ask(json!({"question": "ñ".repeat(501)})),
            400,
            "501 characters long; the limit is 500",
        ),
        bad(
            "bad language",
            ask(json!({"question": "hi", "language": "fr"})),
            400,
            r#"language must be "es" or "en""#,
        ),
        bad("bad lang alias", ask(json!({"question": "hi", "lang": "klingon"})), 400, "language must be"),
        bad(
            "non-string language",
            ask(json!({"question": "hi", "language": ["en"]})),
            400,
            "language must be",
        ),
        bad(
            "bad personality",
            ask(json!({"question": "hi", "personality": "angry"})),
            400,
            r#"personality must be "wise""#,
        ),
        bad(
            "non-string personality",
            ask(json!({"question": "hi", "personality": 1})),
            400,
            "personality must be",
        ),
        bad("body over 8 KiB", post("/api/ouija", &oversized), 413, "larger than 8192 bytes"),
        bad("Content-Length over 8 KiB", declared_too_long, 413, "larger than 8192 bytes"),
        bad(
            "text/plain",
            request(Method::POST, "/api/ouija", Some("text/plain"), valid),
            415,
            "Content-Type: application/json",
        ),
        bad(
            "no content type",
            request(Method::POST, "/api/ouija", None, valid),
            415,
            "Content-Type: application/json",
        ),
        BadInput {
            allow: Some("POST, OPTIONS"),
            ..bad("GET /api/ouija", get("/api/ouija"), 405, "use POST, OPTIONS")
        },
        BadInput {
            allow: Some("POST, OPTIONS"),
            ..bad("GET /ouija/ask", get("/ouija/ask"), 405, "use POST, OPTIONS")
        },
        bad("unknown route", get("/api/spirits"), 404, "no route /api/spirits"),
        BadInput {
            allow: Some("GET, HEAD, OPTIONS"),
            ..bad("PUT /health", request(Method::PUT, "/health", json, b"{}"), 405, "use GET, HEAD, OPTIONS")
        },
    ]
}

#[test]
fn bad_input_is_a_problem_that_says_what_to_fix_with_no_upstream_call_and_no_write() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    ollama_always_answers(&p);
    let config = chain_config(&[]);
    let cases = bad_inputs();
    assert!(cases.len() >= 14);
    for case in cases {
        let statements = p.statements();
        let response = send(&p, &config, &case.request);
        let name = case.name;
        assert_eq!(response.status().as_u16(), case.status, "{name}");
        assert_eq!(header_of(&response, "content-type"), Some("application/problem+json"), "{name}");
        let problem = body_json(&response);
        assert_eq!(problem["status"], case.status, "{name}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(case.detail), "{name}: {detail:?} should say {:?}", case.detail);
        assert_eq!(header_of(&response, "allow"), case.allow, "{name}");
        assert!(p.sent().is_empty(), "{name}: no upstream call");
        assert_eq!(p.statements(), statements, "{name}: no database statement");
    }
    assert_eq!(consultations(&p), 0);
}

#[test]
fn question_length_counts_characters_not_bytes() {
    let p = MemoryPlatform::new();
    let config = config(&[]);
    let at_limit = send(&p, &config, &post("/api/ouija", &json!({"question": "ñ".repeat(500)})));
    assert_eq!(at_limit.status(), StatusCode::OK, "500 characters (1000 bytes) pass");
    let padded =
        send(&p, &config, &post("/api/ouija", &json!({"question": format!("  {}  ", "ñ".repeat(500))})));
    assert_eq!(padded.status(), StatusCode::OK, "surrounding spaces are trimmed before counting");
    let over = send(&p, &config, &post("/api/ouija", &json!({"question": "ñ".repeat(501)})));
    assert_eq!(over.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn lang_alias_null_language_extra_fields_and_the_ouija_ask_alias_work() {
    let p = MemoryPlatform::new();
    let config = config(&[]);
    let cases = [
        ("/api/ouija", json!({"question": "¿Encontraré el amor?", "lang": "en"}), "en"),
        ("/api/ouija", json!({"question": "Will I find love this year?", "language": null}), "en"),
        ("/api/ouija", json!({"question": "¿Encontraré el amor?", "language": null}), "es"),
        ("/api/ouija", json!({"question": "Will I find love?", "language": null, "lang": "es"}), "es"),
        ("/api/ouija", json!({"question": "Will I find love?", "mood": 3, "extra": {"a": [1]}}), "en"),
        (
            "/ouija/ask",
            json!({"question": "Will I find love?", "language": "en", "personality": "dark"}),
            "en",
        ),
    ];
    for (path, body, language) in cases {
        let response = send(&p, &config, &post(path, &body));
        assert_eq!(response.status(), StatusCode::OK, "{path} {body}");
        assert_eq!(body_json(&response)["language"], language, "{path} {body}");
    }
    assert_eq!(consultations(&p), 6);
}

#[test]
fn answer_json_has_exactly_the_documented_keys() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    let request = request(
        Method::POST,
        "/api/ouija",
        Some("application/json; charset=utf-8"),
        br#"{"question":"Will it rain?","personality":"wise"}"#,
    );
    let response = send(&p, &chain_config(&[]), &request);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, "content-type"), Some("application/json; charset=utf-8"));
    let body = body_json(&response);
    let keys: BTreeSet<&str> = body.as_object().expect("an object").keys().map(String::as_str).collect();
    let expected = BTreeSet::from([
        "answer",
        "response",
        "source",
        "personality",
        "language",
        "category",
        "latency_ms",
        "id",
        "remembered",
    ]);
    assert_eq!(keys, expected);
    assert_eq!(body["remembered"], false);
    assert_eq!(body["answer"], body["response"]);
    assert_eq!((body["source"].as_str(), body["personality"].as_str()), (Some("groq"), Some("wise")));
    assert!(body["latency_ms"].is_u64());
    assert_eq!(body["id"].as_str().map(str::len), Some(36), "a UUID");
}

#[test]
fn cors_allows_any_origin_by_default() {
    let p = MemoryPlatform::new();
    let config = config(&[]);
    let mut ask = post("/api/ouija", &json!({"question": "Will it rain?"}));
    ask.headers_mut().insert(header::ORIGIN, "https://anywhere.example".parse().expect("valid"));
    let response = send(&p, &config, &ask);
    assert_eq!(header_of(&response, "access-control-allow-origin"), Some("*"));

    let mut preflight = request(Method::OPTIONS, "/api/ouija", None, b"");
    preflight.headers_mut().insert(header::ORIGIN, "https://anywhere.example".parse().expect("valid"));
    let response = send(&p, &config, &preflight);
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header_of(&response, "access-control-allow-methods"), Some("POST, OPTIONS"));
}

#[test]
fn cors_preflight_is_allowed_only_for_listed_origins() {
    let p = MemoryPlatform::new();
    let config = config(&[("CORS_ORIGINS", "https://a.example")]);
    let preflight = |origin: &str| {
        let mut request = request(Method::OPTIONS, "/api/ouija", None, b"");
        request.headers_mut().insert(header::ORIGIN, origin.parse().expect("valid"));
        request.headers_mut().insert(header::ACCESS_CONTROL_REQUEST_METHOD, "POST".parse().expect("valid"));
        request
    };
    let allowed = send(&p, &config, &preflight("https://a.example"));
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(header_of(&allowed, "access-control-allow-methods"), Some("POST, OPTIONS"));
    assert_eq!(header_of(&allowed, "access-control-allow-origin"), Some("https://a.example"));
    assert_eq!(header_of(&allowed, "vary"), Some("Origin"));

    let refused = send(&p, &config, &preflight("https://b.example"));
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(header_of(&refused, "content-type"), Some("application/problem+json"));
    assert_eq!(header_of(&refused, "access-control-allow-origin"), None);
    assert!(p.sent().is_empty() && p.statements() == 0);
}

#[test]
fn misconfiguration_is_a_500_naming_variables_never_values() {
    let p = MemoryPlatform::new();
    let broken = Config::from_lookup(|name| match name {
        "GROQ_API_KEY" => Some("gsk secret with spaces".to_owned()),
        "OLLAMA_URL" => Some("ftp://private-host.internal".to_owned()),
        _ => None,
    })
    .expect_err("two problems");
    let handled =
        block_on(handle(&p, Err(&broken), &post("/api/ouija", &json!({"question": "Will it rain?"}))));
    let response = handled.response;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let detail = body_json(&response)["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("GROQ_API_KEY") && detail.contains("OLLAMA_URL"), "{detail}");
    assert!(!detail.contains("secret with spaces") && !detail.contains("private-host"), "{detail}");
    assert!(handled.after.consultation().is_none() && p.sent().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Regressions: both failed before their fixes in fallback.rs and health.rs.

#[test]
fn asking_again_in_the_same_millisecond_never_repeats_the_previous_canned_answer() {
    // Workers' clock only moves on I/O, so a burst of asks can all read the same millisecond.
    let p = MemoryPlatform::new();
    let q = english("Will I marry my girlfriend?");
    let mut previous = String::new();
    for i in 0..12 {
        let (answer, _) = ask_recorded(&p, &config(&[]), &q);
        assert_ne!(answer.answer, previous, "ask {i} repeated the previous answer");
        previous = answer.answer;
    }
}

#[test]
fn health_reports_ollama_cool_down_without_calling_ollama() {
    let p = MemoryPlatform::new();
    let too_many = Reply::json(429, &json!({"error": "too many requests"})).header("retry-after", "60");
    p.reply_always(OLLAMA_CHAT, too_many);
    both_list_their_models(&p);
    let config = config(&[("OLLAMA_URL", OLLAMA), ("OLLAMA_PROXY_TOKEN", PROXY_TOKEN)]);
    let (_, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!(consultation.ollama.outcome.as_str(), "rate_limited");

    let health = body_json(&send(&p, &config, &get("/health")));
    let check = &health["checks"]["ollama"];
    assert_eq!((check["status"].as_str(), check["available"].as_bool()), (Some("cool_down"), Some(false)));
    assert_eq!(p.calls_to(OLLAMA), 1, "no probe while Ollama cools down");
}

#[test]
fn a_record_whose_key_is_taken_is_written_once_under_a_fresh_key() {
    let p = MemoryPlatform::new();
    let config = chain_config(&[]);
    groq_always_answers(&p);
    let (_, consultation) =
        block_on(ask_anonymously(&p, &config, &english("Will it rain?"))).expect("answers");
    let taken = consultation.record.key;
    p.inspect(
        "INSERT INTO consultations (key, id, created_at, source, latency_ms, language, personality, category, \
         groq_outcome, ollama_outcome) VALUES (?1, 'other', 1, 'groq', 1, 'en', 'wise', 'general', 'ok', 'ok')",
        &[taken.into()],
    );
    block_on(ask::record(&p, &consultation)).expect("recorded");
    let rows = p.inspect("SELECT key FROM consultations WHERE id = ?", &[consultation.id.as_str().into()]);
    assert_eq!(rows.len(), 1, "written once");
    assert_ne!(rows[0]["key"].as_u64(), Some(taken), "under another key");
    assert_eq!(consultations(&p), 2);
}

#[test]
fn a_record_is_written_once_even_when_another_instances_statement_runs_between_its_two() {
    // Spin runs a batch's statements one by one on a database its concurrent instances share: a
    // statement of another ask may run between them (found by bench/spin-vs-workers.sh: under 16
    // connections 1,387 of 3,326 asks were recorded twice while the fallback insert read changes()).
    let p = MemoryPlatform::new();
    let config = chain_config(&[]);
    groq_always_answers(&p);
    let (_, consultation) =
        block_on(ask_anonymously(&p, &config, &english("Will it rain?"))).expect("answers");
    let fresh = admission::RecordKey::fresh(&p, consultation.created_at);
    let [first, fallback] = ask::record_statements(&consultation, consultation.record, fresh);
    p.inspect(first.sql, &first.params);
    p.inspect("UPDATE provider_state SET updated_at = updated_at WHERE provider = 'nobody'", &[]);
    p.inspect(fallback.sql, &fallback.params);
    let rows = p.inspect("SELECT key FROM consultations WHERE id = ?", &[consultation.id.as_str().into()]);
    assert_eq!(rows.len(), 1, "written once");
    assert_eq!(rows[0]["key"].as_u64(), Some(consultation.record.key));
}

#[test]
fn a_record_that_cannot_be_written_after_the_response_is_logged_by_id() {
    let p = MemoryPlatform::new();
    let config = chain_config(&[]);
    let (_, consultation) =
        block_on(ask_anonymously(&p, &config, &english("Will it rain?"))).expect("answers");
    p.fail_db(true);
    block_on(ask::after_response(&p, ask::After::Record(consultation.clone())));
    let logged = p.logged();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        logged[0].starts_with(&format!("recording consultation {} failed", consultation.id)),
        "{logged:?}"
    );
    assert_no_secrets(&logged[0]);
}

// ---------------------------------------------------------------------------------------------
// Askers and their limits

/// The original backend's limits, as configured by default.
const DEFAULT_LIMITS: (&str, &str) = ("ASK_LIMITS", super::config::DEFAULT_ASK_LIMITS);

/// An ask of `question` from the client at `address`, as an adapter hands it to the core.
fn ask_from(address: &str, question: &str) -> Request<Vec<u8>> {
    let mut request = post("/api/ouija", &json!({"question": question}));
    request.extensions_mut().insert(ClientAddress(address.to_owned()));
    request
}

/// Every text value in every table, for scans of what the database holds.
fn every_stored_text(p: &MemoryPlatform) -> Vec<(String, String)> {
    let tables = p.inspect("SELECT name FROM sqlite_master WHERE type = 'table'", &[]);
    let mut texts = Vec::new();
    for table in tables {
        let name = table["name"].as_str().expect("table name").to_owned();
        for row in p.inspect(&format!("SELECT * FROM \"{name}\""), &[]) {
            texts.extend(row.values().filter_map(Value::as_str).map(|v| (name.clone(), v.to_owned())));
        }
    }
    texts
}

/// Three asks from one address 100 ms apart, each answered, then a fourth: its response.
fn fourth_ask_within_a_second(p: &MemoryPlatform, config: &Config) -> Response<Vec<u8>> {
    for n in 0..3 {
        let response = send(p, config, &ask_from("203.0.113.7:40001", &format!("Will it be {n}?")));
        assert_eq!(response.status(), StatusCode::OK);
        p.advance(100);
    }
    send(p, config, &ask_from("203.0.113.7:40002", "Will it be 3?"))
}

#[test]
fn the_fourth_ask_within_a_second_is_a_429_with_retry_after_and_no_provider_call() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    let config = chain_config(&[DEFAULT_LIMITS]);
    let response = fourth_ask_within_a_second(&p, &config);
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_of(&response, "content-type"), Some("application/problem+json"));
    assert_eq!(header_of(&response, "retry-after"), Some("1"));
    assert!(header_of(&response, "server-timing").is_some_and(|t| t.contains("total;dur=")));
    let problem = body_json(&response);
    assert_eq!((problem["status"].as_u64(), problem["code"].as_str()), (Some(429), Some("too_many_asks")));
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("at most 3 a second") && detail.contains("ask again in 1 s"), "{detail}");
    assert_eq!(p.calls_to(GROQ), 3, "a limited ask reached Groq");
    assert_eq!(consultations(&p), 3, "a limited ask was recorded as a consultation");

    // Once the second that started with the first ask is over, the next ask passes.
    p.advance(700);
    let response = send(&p, &config, &ask_from("203.0.113.7:40003", "Will it be 4?"));
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn another_asker_is_not_limited_by_the_first() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    let config = chain_config(&[DEFAULT_LIMITS]);
    for n in 0..4 {
        send(&p, &config, &ask_from("203.0.113.7:1", &format!("Will it be {n}?")));
    }
    let response = send(&p, &config, &ask_from("198.51.100.9:1", "Will it be?"));
    assert_eq!(response.status(), StatusCode::OK);
    // IPv6 with a port is the same asker as without one.
    for n in 0..3 {
        let ask = ask_from(&format!("[2001:db8::{n}]:443"), "Will it be?");
        assert_eq!(send(&p, &config, &ask).status(), StatusCode::OK);
    }
    assert_eq!(send(&p, &config, &ask_from("2001:db8::1", "Again?")).status(), StatusCode::OK);
}

#[test]
fn twenty_asks_in_ten_seconds_then_retry_after_counts_the_ten_second_window() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    let config = chain_config(&[DEFAULT_LIMITS]);
    for n in 0..20 {
        let response = send(&p, &config, &ask_from("203.0.113.7", &format!("Question {n}?")));
        assert_eq!(response.status(), StatusCode::OK, "ask {n}");
        p.advance(400);
    }
    // 8 s into the window: 2 s until it ends.
    let response = send(&p, &config, &ask_from("203.0.113.7", "Question 20?"));
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_of(&response, "retry-after"), Some("2"));
    let detail = body_json(&response)["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("at most 20 per 10 seconds"), "{detail}");
    p.advance(2_000);
    assert_eq!(send(&p, &config, &ask_from("203.0.113.7", "Question 21?")).status(), StatusCode::OK);
}

#[test]
fn limits_off_lets_every_ask_through_without_counting() {
    let p = MemoryPlatform::new();
    let config = config(&[("ASK_LIMITS", "off")]);
    for n in 0..10 {
        let response = send(&p, &config, &ask_from("203.0.113.7", &format!("Question {n}?")));
        assert_eq!(response.status(), StatusCode::OK, "ask {n}");
    }
    assert_eq!(p.inspect_count("SELECT COUNT(*) AS n FROM askers", &[]), 0);
}

#[test]
fn every_ask_answers_with_server_timing_for_the_database_each_provider_called_and_the_total() {
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, Reply::text(500, "oops").after(40));
    p.reply_always(OLLAMA_CHAT, ollama_answer(OLLAMA_MODEL, "Perhaps.").after(120));
    let response = send(&p, &chain_config(&[DEFAULT_LIMITS]), &ask_from("203.0.113.7", "Will it be?"));
    assert_eq!(response.status(), StatusCode::OK);
    let timing = header_of(&response, "server-timing").expect("Server-Timing");
    // The fake database takes no time; the providers take what their fakes say.
    assert_eq!(timing, "db;dur=0, groq;dur=40, ollama;dur=120, total;dur=160");

    let p = MemoryPlatform::new();
    let response = send(&p, &config(&[]), &ask_from("203.0.113.7", "Will it be?"));
    assert_eq!(header_of(&response, "server-timing"), Some("db;dur=0, total;dur=0"), "no provider called");
}

#[test]
fn neither_the_address_nor_the_question_is_stored_anywhere() {
    let p = MemoryPlatform::new();
    p.reply_in_turn(GROQ_CHAT, vec![groq_answer("Yes."), Reply::text(500, "oops")]);
    let config = chain_config(&[DEFAULT_LIMITS, ("OLLAMA_URL", ""), MEMORY_ON]);
    for question in
        ["Will my zebra Quixote-7731 marry?", "will my ZEBRA quixote 7731 marry", "Zebra Quixote?"]
    {
        for _ in 0..2 {
            send(&p, &config, &ask_from("203.0.113.77:5555", question));
            p.advance(400);
        }
    }
    for (table, value) in every_stored_text(&p) {
        // The question as asked and as folded (the memory's key is made from its folded words).
        for secret in ["203.0.113.77", "5555", "Quixote", "quixote", "zebra", "7731"] {
            assert!(!value.contains(secret), "{secret} stored in {table}: {value}");
        }
    }
    assert_eq!(p.inspect_count("SELECT COUNT(*) AS n FROM askers", &[]), 1);
    let kept = p.inspect_count("SELECT COUNT(*) AS n FROM consultations WHERE memo_tag IS NOT NULL", &[]);
    assert_eq!(kept, 2, "two questions, folded: two answers kept for the memory");
}

#[test]
fn without_asker_key_the_databases_random_key_is_read_once_per_isolate() {
    let p = MemoryPlatform::new();
    let stored = p.inspect("SELECT value FROM edge_secrets WHERE name = 'asker'", &[]);
    assert_eq!(stored[0]["value"].as_str().map(str::len), Some(64), "32 random bytes in hex");
    let metered = Metered::new(&p);
    let first = block_on(asker::hash_key(&metered, &config(&[]))).expect("the key");
    let again = block_on(asker::hash_key(&metered, &config(&[]))).expect("the key");
    assert!(first == again);
    assert_eq!(metered.statements(), 1, "read once, then kept");
    let configured = block_on(asker::hash_key(&p, &config(&[("ASKER_KEY", "configured-asker-key-1")])));
    assert!(configured.expect("the key") != first, "ASKER_KEY wins over the stored key");
}

// ---------------------------------------------------------------------------------------------
// The spirit's memory

/// Memory on, for an hour (the default).
const MEMORY_ON: (&str, &str) = ("MEMORY_TTL_S", "3600");

/// An ask of `question` in English by the wise spirit from the client at `address`.
fn ask_wise_from(address: &str, question: &str) -> Request<Vec<u8>> {
    let mut request =
        post("/api/ouija", &json!({"question": question, "language": "en", "personality": "wise"}));
    request.extensions_mut().insert(ClientAddress(address.to_owned()));
    request
}

/// The `repeat` answers of a language and personality.
fn repeat_answers(p: &MemoryPlatform, language: &str, personality: &str) -> Vec<String> {
    p.inspect(
        "SELECT text FROM repeat_answers WHERE language = ? AND personality = ? ORDER BY id",
        &[language.into(), personality.into()],
    )
    .into_iter()
    .map(|row| row["text"].as_str().expect("text").to_owned())
    .collect()
}

#[test]
fn every_language_and_personality_has_three_repeat_answers_none_of_them_ever_a_chain_answer() {
    let p = MemoryPlatform::new();
    for language in Language::ALL {
        for personality in Personality::ALL {
            let annoyed = repeat_answers(&p, language.as_str(), personality.as_str());
            assert!(annoyed.len() >= 3, "{language:?} {personality:?}: {annoyed:?}");
        }
    }
    // `repeat` is a table of its own, not a category: the chain's canned answers never hold one.
    let shared = p.inspect_count(
        "SELECT COUNT(*) AS n FROM fallback_responses WHERE text IN (SELECT text FROM repeat_answers)",
        &[],
    );
    assert_eq!(shared, 0);
    assert!(Category::ALL.iter().all(|c| c.as_str() != "repeat"), "the classifier cannot return it");
}

#[test]
fn the_same_question_again_is_remembered_with_no_provider_call_and_from_the_third_time_annoys() {
    let p = MemoryPlatform::new();
    p.reply_in_turn(GROQ_CHAT, vec![groq_answer("Yes, the stars agree."), groq_answer("Another answer.")]);
    let config = chain_config(&[MEMORY_ON]);
    let first = body_json(&send(&p, &config, &ask_wise_from("203.0.113.7:1", "¿Will I marry, this year?")));
    assert_eq!(
        (first["answer"].as_str(), first["remembered"].as_bool()),
        (Some("Yes, the stars agree."), Some(false))
    );

    // Case, accents, punctuation and spacing folded; another port is the same asker.
    p.advance(1_000);
    let second = body_json(&send(&p, &config, &ask_wise_from("203.0.113.7:2", "  will i MARRY this yeár")));
    assert_eq!(second["answer"], "Yes, the stars agree.");
    assert_eq!(second["remembered"], true);
    assert_eq!((second["source"].as_str(), second["category"].as_str()), (Some("groq"), Some("love")));
    assert_ne!(second["id"], first["id"], "a consultation of its own");
    assert_eq!(p.calls_to(GROQ), 1, "a remembered answer called a provider");
    assert_eq!(p.calls_to(OLLAMA), 0);

    let annoyed = repeat_answers(&p, "en", "wise");
    let mut given = Vec::new();
    for _ in 0..3 {
        let again = body_json(&send(&p, &config, &ask_wise_from("203.0.113.7:3", "Will I marry this year?")));
        assert_eq!((again["remembered"].as_bool(), again["source"].as_str()), (Some(true), Some("sqlite")));
        let text = again["answer"].as_str().expect("an answer").to_owned();
        assert!(annoyed.contains(&text), "{text} is not a repeat answer");
        given.push(text);
    }
    assert_ne!(given[0], given[1], "the annoyed spirit does not repeat itself either");
    assert_ne!(given[1], given[2]);
    assert_eq!(p.calls_to(GROQ), 1);

    // Every ask is a consultation; the remembered ones reached no provider.
    assert_eq!(consultations(&p), 5);
    let outcomes =
        p.inspect("SELECT source, groq_outcome, ollama_outcome FROM consultations ORDER BY key", &[]);
    assert_eq!(
        outcomes[1],
        json!({"source": "groq", "groq_outcome": "remembered", "ollama_outcome": "remembered"})
            .as_object()
            .cloned()
            .expect("object")
    );
    let dashboard = block_on(dashboard(&p, &config)).expect("dashboard");
    assert_eq!(dashboard.providers["groq"].calls, 1);
    assert_eq!(dashboard.providers["groq"].outcomes.get("remembered"), Some(&4));
}

#[test]
fn a_remembered_answer_costs_one_wait_for_the_database_and_no_provider_call() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    let config = chain_config(&[MEMORY_ON, ("ASKER_KEY", "a-test-asker-key-0123")]);
    send(&p, &config, &ask_wise_from("203.0.113.7", "Will I win?"));
    let before = p.statements();
    let handled = block_on(handle(&p, Ok(&config), &ask_wise_from("203.0.113.7", "Will I win?")));
    assert_eq!(body_json(&handled.response)["remembered"], true);
    // The recall (one statement: count, answer, annoyed answers) and the providers' state, sent
    // together; nothing else before the response.
    assert_eq!(p.statements() - before, 2);
    assert_eq!(p.calls_to(GROQ), 1);
}

#[test]
fn another_asker_or_another_question_is_not_remembered() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    let config = chain_config(&[MEMORY_ON]);
    send(&p, &config, &ask_wise_from("203.0.113.7", "Will I win?"));
    let other_asker = body_json(&send(&p, &config, &ask_wise_from("198.51.100.9", "Will I win?")));
    let other_question = body_json(&send(&p, &config, &ask_wise_from("203.0.113.7", "Will I lose?")));
    let no_address = body_json(&send(&p, &config, &post("/api/ouija", &json!({"question": "Will I win?"}))));
    for body in [other_asker, other_question, no_address] {
        assert_eq!(
            (body["remembered"].as_bool(), body["source"].as_str()),
            (Some(false), Some("groq")),
            "{body}"
        );
    }
    assert_eq!(p.calls_to(GROQ), 4);
    let memories = "SELECT COUNT(*) AS n FROM askers WHERE memo1_question IS NOT NULL";
    assert_eq!(p.inspect_count(memories, &[]), 3, "three askers (no address is one too)");
}

#[test]
fn an_asker_s_last_three_questions_are_remembered_the_fourth_new_one_forgets_the_oldest() {
    let p = MemoryPlatform::new();
    let answers: Vec<Reply> = (1..=8).map(|n| groq_answer(&format!("Answer {n}."))).collect();
    p.reply_in_turn(GROQ_CHAT, answers);
    let config = chain_config(&[MEMORY_ON]);
    let ask = |question: &str| {
        p.advance(1_000);
        body_json(&send(&p, &config, &ask_wise_from("203.0.113.7", question)))
    };
    let [win, lose, rain] = ["Will I win?", "Will I lose?", "Will it rain?"].map(&ask);
    // Asked again in another order: each one remembered, however many others came between.
    for (question, first) in [("Will I win?", &win), ("Will it rain?", &rain), ("Will I lose?", &lose)] {
        let again = ask(question);
        assert_eq!((&again["answer"], &again["remembered"]), (&first["answer"], &json!(true)), "{question}");
    }
    assert_eq!(p.calls_to(GROQ), 3);
    // A fourth question takes the slot asked longest ago ("Will I win?", first asked at the start).
    assert_eq!(ask("Will it snow?")["remembered"], false);
    let forgotten = ask("Will I win?");
    assert_eq!(
        (forgotten["remembered"].as_bool(), forgotten["answer"].as_str()),
        (Some(false), Some("Answer 5."))
    );
    assert_eq!(ask("Will it snow?")["remembered"], true, "the fourth is remembered too");
}

#[test]
fn a_remembered_answer_is_forgotten_after_memory_ttl_s() {
    let p = MemoryPlatform::new();
    p.reply_in_turn(GROQ_CHAT, vec![groq_answer("First."), groq_answer("Second.")]);
    let config = chain_config(&[("MEMORY_TTL_S", "60")]);
    let ask = || body_json(&send(&p, &config, &ask_wise_from("203.0.113.7", "Will I win?")));
    assert_eq!(ask()["answer"], "First.");
    p.advance(59_999);
    assert_eq!((ask()["answer"].as_str(), ask()["remembered"].as_bool()), (Some("First."), Some(true)));
    p.advance(1);
    let forgotten = ask();
    assert_eq!(
        (forgotten["answer"].as_str(), forgotten["remembered"].as_bool()),
        (Some("Second."), Some(false))
    );
    // The new answer is remembered afresh: the second ask after it repeats it, not an annoyed one.
    assert_eq!((ask()["answer"].as_str(), ask()["remembered"].as_bool()), (Some("Second."), Some(true)));
    assert_eq!(p.calls_to(GROQ), 2);
}

#[test]
fn memory_ttl_s_0_remembers_nothing_and_stores_nothing() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    let config = chain_config(&[("MEMORY_TTL_S", "0")]);
    for _ in 0..3 {
        let body = body_json(&send(&p, &config, &ask_wise_from("203.0.113.7", "Will I win?")));
        assert_eq!(body["remembered"], false);
    }
    assert_eq!(p.calls_to(GROQ), 3);
    assert_eq!(p.inspect_count("SELECT COUNT(*) AS n FROM askers WHERE memo1_question IS NOT NULL", &[]), 0);
    assert_eq!(p.inspect_count("SELECT COUNT(*) AS n FROM consultations WHERE answer IS NOT NULL", &[]), 0);
}

#[test]
fn a_remembered_canned_answer_is_repeated_from_the_memory_not_drawn_again() {
    let p = MemoryPlatform::new();
    let config = config(&[MEMORY_ON]);
    let first = body_json(&send(&p, &config, &ask_wise_from("203.0.113.7", "Will I be rich?")));
    let second = body_json(&send(&p, &config, &ask_wise_from("203.0.113.7", "Will I be rich?")));
    assert_eq!((first["source"].as_str(), first["remembered"].as_bool()), (Some("sqlite"), Some(false)));
    assert_eq!(
        (second["answer"].clone(), second["remembered"].as_bool()),
        (first["answer"].clone(), Some(true))
    );
    let outcomes = p.inspect("SELECT groq_outcome, fallback_id FROM consultations ORDER BY key", &[]);
    assert_eq!(outcomes[1]["groq_outcome"], "not_configured");
    assert_eq!(outcomes[1]["fallback_id"], Value::Null, "a remembered answer is not served again");
}

#[test]
fn askers_not_seen_for_a_day_are_pruned_so_no_asker_hash_outlives_its_windows() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    let config = chain_config(&[DEFAULT_LIMITS]);
    send(&p, &config, &ask_from("203.0.113.7", "Will it be?"));
    assert_eq!(p.inspect_count("SELECT COUNT(*) FROM askers", &[]), 1);
    p.advance(86_400_000 + 1);
    // Pruning rides on about one record in 32: a few dozen asks from someone else reach it.
    for n in 0..96 {
        send(&p, &config, &ask_from("198.51.100.9", &format!("Question {n}?")));
        p.advance(3_000);
    }
    assert_eq!(p.inspect_count("SELECT COUNT(*) FROM askers", &[]), 1, "only the recent asker is left");
}

#[test]
fn questions_without_words_are_never_remembered_as_one_question() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    let config = chain_config(&[("MEMORY_TTL_S", "3600")]);
    for question in ["🔮", "???", "❤️", "🔮"] {
        let response = send(&p, &config, &ask_from("203.0.113.7", question));
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("JSON");
        assert_eq!(body["remembered"], false, "{question}");
    }
    assert_eq!(p.calls_to(GROQ), 4);
}

// ---------------------------------------------------------------------------------------------
// What an ask costs the database (#13): round trips before the first provider call, rows written

/// Memory and the default limits on, Groq and Ollama configured, and a Groq minute limiter of the
/// platform's own (as a Worker with the rate-limiting binding).
fn costed() -> (MemoryPlatform, Config) {
    let p = MemoryPlatform::new();
    p.with_minute_limiter(30);
    let config = chain_config(&[DEFAULT_LIMITS, MEMORY_ON, ("ASKER_KEY", "a-test-asker-key-0123")]);
    (p, config)
}

/// Sends `request` and returns (round trips, rows written) it cost, its record included.
fn cost(p: &MemoryPlatform, config: &Config, request: &Request<Vec<u8>>) -> (usize, u64, Response<Vec<u8>>) {
    let (trips, rows) = (p.round_trips(), p.rows_written());
    let handled = block_on(handle(p, Ok(config), request));
    let before_record = p.round_trips() - trips;
    block_on(ask::after_response(p, handled.after));
    assert!(p.logged().is_empty(), "{:?}", p.logged());
    (before_record, p.rows_written() - rows, handled.response)
}

#[test]
fn an_ask_makes_one_round_trip_before_its_first_provider_call_and_writes_two_rows() {
    let (p, config) = costed();
    groq_always_answers(&p);
    // The asker key is configured: no read of the stored one.
    let (trips, rows, response) = cost(&p, &config, &ask_wise_from("203.0.113.7", "Will I win?"));
    assert_eq!(body_json(&response)["source"], "groq");
    assert_eq!(p.sent_to(GROQ_CHAT)[0].round_trips, 1, "one batch before Groq was called");
    assert_eq!(trips, 1, "and nothing more before the response");
    assert_eq!(rows, 2, "the asker's row (windows and memory) and the consultation");

    // Remembered: one round trip in all, the same two rows.
    let (trips, rows, response) = cost(&p, &config, &ask_wise_from("203.0.113.7", "Will I win?"));
    assert_eq!(body_json(&response)["remembered"], true);
    assert_eq!((trips, rows), (1, 2));
    assert_eq!(p.calls_to(GROQ), 1);

    // Limited: the 4th ask within the second: one round trip, one row (the `limited` count).
    let (trips, rows, response) = cost(&p, &config, &ask_wise_from("203.0.113.7", "Will I lose?"));
    assert_eq!(body_json(&response)["source"], "groq");
    assert_eq!((trips, rows), (1, 2));
    let (trips, rows, response) = cost(&p, &config, &ask_wise_from("203.0.113.7", "Again?"));
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!((trips, rows), (1, 1));
    let dashboard = block_on(dashboard(&p, &config)).expect("dashboard");
    assert_eq!(dashboard.limited, 1);
}

#[test]
fn groq_cooling_down_then_ollama_and_the_canned_path_stay_at_one_round_trip_before_a_provider() {
    let (p, config) = costed();
    p.reply_always(GROQ_CHAT, groq_rate_limited(60));
    ollama_always_answers(&p);
    let (_, rows, first) = cost(&p, &config, &ask_wise_from("203.0.113.7", "Will I win?"));
    assert_eq!(body_json(&first)["source"], "ollama");
    assert_eq!(rows, 3, "a 429 writes Groq's cool-down, once");
    p.advance(1_000);
    let before = p.round_trips();
    let (trips, rows, second) = cost(&p, &config, &ask_wise_from("203.0.113.8", "Will I win?"));
    assert_eq!(body_json(&second)["source"], "ollama");
    assert_eq!(p.calls_to(GROQ), 1, "cooling down: not called");
    assert_eq!(p.sent_to(OLLAMA_CHAT)[1].round_trips - before, 1, "one trip before Ollama");
    assert_eq!((trips, rows), (1, 2));

    // Nothing configured: the canned answer is a second trip (the pick), still two rows.
    let p = MemoryPlatform::new();
    let only_db = self::config(&[DEFAULT_LIMITS, MEMORY_ON, ("ASKER_KEY", "a-test-asker-key-0123")]);
    let (trips, rows, canned) = cost(&p, &only_db, &ask_wise_from("203.0.113.7", "Will I win?"));
    assert_eq!(body_json(&canned)["source"], "sqlite");
    assert_eq!((trips, rows), (2, 2));
}

#[test]
fn without_a_platform_limiter_groqs_minute_is_counted_in_the_database() {
    let p = MemoryPlatform::new();
    groq_always_answers(&p);
    ollama_always_answers(&p);
    let config = chain_config(&[DEFAULT_LIMITS, ("ASKER_KEY", "a-test-asker-key-0123"), ("GROQ_RPM", "1")]);
    let (trips, rows, response) = cost(&p, &config, &ask_wise_from("203.0.113.7", "Will I win?"));
    assert_eq!(body_json(&response)["source"], "groq");
    assert_eq!((trips, rows), (2, 3), "the minute's row, in a trip of its own");
    let (_, _, response) = cost(&p, &config, &ask_wise_from("203.0.113.7", "Will I lose?"));
    assert_eq!(body_json(&response)["source"], "ollama", "GROQ_RPM=1: the minute is full");
}

#[test]
fn over_many_asks_the_roll_up_adds_a_twentieth_of_a_row_and_the_totals_stay_exact() {
    let (p, config) = costed();
    groq_always_answers(&p);
    let asks: u32 = 256;
    let rows_before = p.rows_written();
    for n in 0..asks {
        let address = format!("198.51.100.{}", n % 16);
        let (_, rows, response) = cost(&p, &config, &ask_wise_from(&address, &format!("Question {n}?")));
        assert_eq!(response.status(), StatusCode::OK);
        assert!(rows == 2 || rows == 4, "ask {n}: {rows} rows (2, or 4 with a roll-up)");
        p.advance(3_000);
    }
    let per_ask = (p.rows_written() - rows_before) as f64 / f64::from(asks);
    // A roll-up (about one ask in 32) writes its own row and one running total per combination.
    assert!((2.0..2.1).contains(&per_ask), "{per_ask} rows written per ask");
    let dashboard = block_on(dashboard(&p, &config)).expect("dashboard");
    assert_eq!(dashboard.total, u64::from(asks));
    assert_eq!(dashboard.by_source["groq"], u64::from(asks));
    let rolled = p.inspect_count("SELECT SUM(n) AS n FROM consultation_counts", &[]);
    assert!(rolled > 0 && rolled < u64::from(asks), "rolled up now and then: {rolled}");
}

// ---------------------------------------------------------------------------------------------
// The streamed ask (#12), on the fake clock

use super::memory::StreamEnd;
use super::speak::{self, Event};

/// The streamed ask's default deadlines (`STREAM_FIRST_TOKEN_MS`, `STREAM_GAP_MS`).
const FIRST_TOKEN_MS: u64 = 3_000;
const GAP_MS: u64 = 2_000;

/// Groq's streamed reply: one SSE chunk per (delay, text), then `[DONE]` when it finishes.
fn groq_stream(pieces: &[(u64, &str)], end: StreamEnd) -> Reply {
    let mut chunks: Vec<(u64, Vec<u8>)> = pieces
        .iter()
        .map(|(delay, text)| {
            let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": GROQ_MODEL,
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
            (*delay, format!("data: {chunk}\n\n").into_bytes())
        })
        .collect();
    if end == StreamEnd::Finish {
        chunks.push((0, b"data: [DONE]\n\n".to_vec()));
    }
    Reply::stream("text/event-stream", chunks, end)
}

/// Ollama's streamed reply: one NDJSON line per (delay, text), then `done: true` when it finishes.
fn ollama_stream(pieces: &[(u64, &str)], end: StreamEnd) -> Reply {
    let line = |text: &str, done: bool| {
        let object = json!({"model": OLLAMA_MODEL, "created_at": "2025-11-25T21:26:00Z",
            "message": {"role": "assistant", "content": text}, "done": done});
        format!("{object}\n").into_bytes()
    };
    let mut chunks: Vec<(u64, Vec<u8>)> =
        pieces.iter().map(|(delay, text)| (*delay, line(text, false))).collect();
    if end == StreamEnd::Finish {
        chunks.push((0, line("", true)));
    }
    Reply::stream("application/x-ndjson", chunks, end)
}

/// Speaks `question` and returns each event with the fake time it came at (ms after the start),
/// and the consultation recorded.
fn spoken(p: &MemoryPlatform, config: &Config, question: &Question) -> (Vec<(u64, Event)>, Consultation) {
    let asking =
        Asking { asker: None, memo: None, language: question.language, personality: question.personality };
    spoken_as(p, config, question, asking)
}

/// [`spoken`] for `asking` (an asker, a memo).
fn spoken_as(
    p: &MemoryPlatform,
    config: &Config,
    question: &Question,
    asking: Asking<'_>,
) -> (Vec<(u64, Event)>, Consultation) {
    let started = p.now_ms();
    let admission = block_on(admission::admit(p, config, asking, started));
    let mut speech =
        block_on(speak::speak(p.clone(), config, question, admission, started)).expect("an answer");
    let mut events = Vec::new();
    while let Some(event) = block_on(speech.next()) {
        events.push((p.now_ms() - started, event));
    }
    let consultation = speech.consultation().clone();
    block_on(ask::record(p, &consultation)).expect("recorded");
    (events, consultation)
}

fn tokens(events: &[(u64, Event)]) -> String {
    events.iter().filter_map(|(_, e)| if let Event::Token(t) = e { Some(t.as_str()) } else { None }).collect()
}

fn done(events: &[(u64, Event)]) -> &speak::Done {
    match events.last() {
        Some((_, Event::Done(done))) => done,
        other => panic!("the last event is not done: {other:?}"),
    }
}

#[test]
fn a_streamed_answer_arrives_as_spoken_and_equals_the_plain_answer() {
    let p = MemoryPlatform::new();
    let pieces = [(300, "Spirit: \"Yes"), (40, ", the stars"), (40, " agree"), (40, " with you.\"")];
    p.reply_always(GROQ_CHAT, groq_stream(&pieces, StreamEnd::Finish));
    let (events, consultation) = spoken(&p, &chain_config(&[]), &english("Will I marry?"));
    let first = events.iter().find(|(_, e)| matches!(e, Event::Token(_))).expect("a token");
    assert_eq!(first.0, 340, "the first token once the label is known to be over");
    assert!(events.len() > 2, "{events:?}");
    let done = done(&events);
    assert_eq!(tokens(&events), "Yes, the stars agree with you.");
    assert_eq!((done.answer.answer.as_str(), done.complete), ("Yes, the stars agree with you.", true));
    assert_eq!(done.first_token_ms, 340);
    assert_eq!((done.answer.source, consultation.groq.outcome), (Source::Groq, super::domain::Outcome::Ok));
    assert_eq!(p.sent_to(GROQ_CHAT)[0].body["stream"], true);
    assert_eq!(consultations(&p), 1, "one record per ask");
    let dashboard = block_on(dashboard(&p, &chain_config(&[]))).expect("dashboard");
    let first_token = dashboard.providers["groq"].first_token_ms;
    assert_eq!(
        (first_token.p50, first_token.p95),
        (Some(340), Some(340)),
        "time to first token, per provider"
    );
    assert_eq!(dashboard.providers["ollama"].first_token_ms.p50, None);
}

#[test]
fn a_429_or_a_silence_before_the_first_token_falls_through_unseen() {
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, groq_rate_limited(30));
    p.reply_always(
        OLLAMA_CHAT,
        ollama_stream(&[(100, "The lamp"), (50, " flickers: perhaps.")], StreamEnd::Finish),
    );
    let (events, consultation) = spoken(&p, &chain_config(&[]), &english("Will it be?"));
    assert_eq!(tokens(&events), "The lamp flickers: perhaps.");
    assert_eq!(consultation.groq.outcome, super::domain::Outcome::RateLimited);
    assert_eq!(done(&events).answer.source, Source::Ollama);

    // Groq says nothing within the first-token deadline: Ollama answers, within the budget.
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, groq_stream(&[(FIRST_TOKEN_MS + 1, "Too late.")], StreamEnd::Finish));
    p.reply_always(OLLAMA_CHAT, ollama_stream(&[(10, "Perhaps.")], StreamEnd::Finish));
    let (events, consultation) = spoken(&p, &chain_config(&[]), &english("Will it be?"));
    assert_eq!(
        (tokens(&events).as_str(), consultation.groq.outcome),
        ("Perhaps.", super::domain::Outcome::Timeout)
    );
    assert_eq!(p.cancelled(), [1], "the silent Groq request was cancelled");
}

#[test]
fn a_stream_cut_or_stalled_after_the_first_token_ends_honestly_with_a_closing() {
    for (end, outcome) in
        [(StreamEnd::Cut, super::domain::Outcome::Cut), (StreamEnd::Stall, super::domain::Outcome::Stalled)]
    {
        let p = MemoryPlatform::new();
        p.reply_always(GROQ_CHAT, groq_stream(&[(100, "The shadows "), (40, "say that "), (40, "the")], end));
        let (events, consultation) = spoken(&p, &chain_config(&[]), &english("Will it be?"));
        let done = done(&events);
        assert!(!done.complete, "{end:?}");
        assert_eq!(tokens(&events), "The shadows say that the", "{end:?}: every word heard is spoken");
        let closing =
            done.answer.answer.strip_prefix("The shadows say that the ").expect("the spoken text first");
        let endings = p.inspect("SELECT text FROM stream_endings WHERE language = 'en'", &[]);
        assert!(endings.iter().any(|row| row["text"] == closing), "{end:?}: {closing}");
        assert_eq!(
            (consultation.groq.outcome, consultation.ollama.outcome),
            (outcome, super::domain::Outcome::NotReached)
        );
        if end == StreamEnd::Stall {
            assert_eq!(events.last().map(|(at, _)| *at), Some(180 + GAP_MS), "the gap deadline");
        }
        let failures = p.inspect_count(
            "SELECT consecutive_failures AS n FROM provider_state WHERE provider = 'groq'",
            &[],
        );
        assert_eq!(failures, 1, "{end:?} counts toward the breaker");
        let dashboard = block_on(dashboard(&p, &chain_config(&[]))).expect("dashboard");
        assert_eq!(dashboard.providers["groq"].outcomes.get(outcome.as_str()), Some(&1));
    }
}

#[test]
fn the_length_bound_ends_the_answer_and_cancels_the_upstream_request() {
    let p = MemoryPlatform::new();
    let sentence = "The shadows whisper yes. ";
    let pieces: Vec<(u64, &str)> = (0..40).map(|_| (20, sentence)).collect();
    p.reply_always(GROQ_CHAT, groq_stream(&pieces, StreamEnd::Finish));
    let (events, _) = spoken(&p, &chain_config(&[]), &english("Will it be?"));
    let plain = super::clean::clean_answer(&sentence.repeat(40)).expect("usable");
    assert_eq!((tokens(&events), done(&events).complete), (plain, true));
    assert_eq!(p.cancelled(), [1], "no more tokens read once the answer was whole");
}

#[test]
fn junk_before_the_first_token_falls_through_and_no_keys_stream_a_canned_answer_word_by_word() {
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, groq_stream(&[(10, "{\"answer\":"), (10, " \"yes\"}")], StreamEnd::Finish));
    p.reply_always(OLLAMA_CHAT, ollama_stream(&[(10, "Perhaps.")], StreamEnd::Finish));
    let (events, consultation) = spoken(&p, &chain_config(&[]), &english("Will it be?"));
    assert_eq!(
        (tokens(&events).as_str(), consultation.groq.outcome),
        ("Perhaps.", super::domain::Outcome::Junk)
    );

    let p = MemoryPlatform::new();
    let (events, consultation) = spoken(&p, &config(&[]), &english("Will I be rich?"));
    let done = done(&events);
    assert_eq!(done.answer.source, Source::Sqlite);
    assert_eq!(tokens(&events), done.answer.answer);
    assert!(events.len() > 3, "word by word: {events:?}");
    assert!(consultation.fallback_id.is_some());
}

#[test]
fn a_provider_that_breaks_every_stream_midway_opens_its_breaker() {
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, groq_stream(&[(10, "The shadows "), (10, "say")], StreamEnd::Cut));
    ollama_always_answers(&p);
    for _ in 0..3 {
        let (events, _) = spoken(&p, &chain_config(&[]), &english("Will it be?"));
        assert!(!done(&events).complete);
    }
    let state = p.inspect("SELECT breaker_open_until FROM provider_state WHERE provider = 'groq'", &[]);
    assert!(state[0]["breaker_open_until"].as_u64().is_some_and(|until| until > p.now_ms()), "{state:?}");
    let (_, consultation) = spoken(&p, &chain_config(&[]), &english("Will it be?"));
    assert_eq!(consultation.groq.outcome, super::domain::Outcome::BreakerOpen);
}

#[test]
fn the_ask_budget_or_out_of_role_text_ends_a_stream_without_blaming_the_provider() {
    // A steady stream longer than the ask's budget: budget_spent, not stalled.
    let p = MemoryPlatform::new();
    let pieces: Vec<(u64, &str)> = (0..40).map(|_| (300, "word ")).collect();
    p.reply_always(GROQ_CHAT, groq_stream(&pieces, StreamEnd::Finish));
    let config = chain_config(&[("ASK_BUDGET_MS", "2000")]);
    let (events, consultation) = spoken(&p, &config, &english("Will it be?"));
    assert!(!done(&events).complete);
    assert_eq!(consultation.groq.outcome, super::domain::Outcome::BudgetSpent);
    assert!(events.last().is_some_and(|(at, _)| *at <= 2_000), "within the budget: {events:?}");
    let failures = "SELECT consecutive_failures AS n FROM provider_state WHERE provider = 'groq'";
    assert_eq!(p.inspect_count(failures, &[]), 0);

    // Out of role after the first token: ended as junk, the breaker untouched.
    let p = MemoryPlatform::new();
    let pieces = [(10, "The mist "), (10, "parts. "), (10, "As an AI, "), (10, "I cannot know.")];
    p.reply_always(GROQ_CHAT, groq_stream(&pieces, StreamEnd::Finish));
    let (events, consultation) = spoken(&p, &chain_config(&[]), &english("Will it be?"));
    assert!(!done(&events).complete);
    assert!(!tokens(&events).contains("AI"), "{events:?}");
    assert_eq!(consultation.groq.outcome, super::domain::Outcome::Junk);
    assert_eq!(p.inspect_count(failures, &[]), 0);
}

#[test]
fn a_streamed_groq_answer_that_spends_the_days_quota_cools_groq_down_and_a_whole_json_reply_is_spoken() {
    let p = MemoryPlatform::new();
    let reply = groq_stream(&[(10, "Yes.")], StreamEnd::Finish).header("x-ratelimit-remaining-requests", "0");
    p.reply_always(GROQ_CHAT, reply.header("x-ratelimit-reset-requests", "2m0s"));
    let (events, _) = spoken(&p, &chain_config(&[]), &english("Will it be?"));
    assert_eq!(tokens(&events), "Yes.");
    let state = p.inspect("SELECT cool_down_until FROM provider_state WHERE provider = 'groq'", &[]);
    assert!(state[0]["cool_down_until"].as_u64().is_some_and(|until| until > p.now_ms()), "{state:?}");

    // A server that ignores `stream: true` and answers whole JSON is spoken all the same.
    let p = MemoryPlatform::new();
    p.reply_always(GROQ_CHAT, groq_answer("Spirit: \"Yes, soon.\""));
    let (events, consultation) = spoken(&p, &chain_config(&[]), &english("Will it be?"));
    assert_eq!((tokens(&events).as_str(), done(&events).complete), ("Yes, soon.", true));
    assert_eq!(consultation.groq.outcome, super::domain::Outcome::Ok);
}

#[test]
fn accept_text_event_stream_with_q_0_is_not_a_stream() {
    let p = MemoryPlatform::new();
    let mut request = post("/api/ouija", &json!({"question": "Will it be?"}));
    request
        .headers_mut()
        .insert(header::ACCEPT, "text/event-stream;q=0, application/json".parse().expect("valid"));
    let handled = block_on(handle(&p, Ok(&config(&[])), &request));
    assert!(handled.events.is_none());
    assert_eq!(header_of(&handled.response, "content-type"), Some("application/json; charset=utf-8"));
    request.headers_mut().insert(header::ACCEPT, "text/event-stream".parse().expect("valid"));
    let handled = block_on(handle(&p, Ok(&config(&[])), &request));
    assert!(handled.events.is_some());
    assert_eq!(header_of(&handled.response, "content-type"), Some("text/event-stream"));
}

#[test]
fn a_streamed_answer_cut_short_is_not_remembered_and_the_next_answer_is() {
    let p = MemoryPlatform::new();
    p.reply_in_turn(
        GROQ_CHAT,
        vec![
            groq_stream(&[(10, "The shadows "), (10, "say")], StreamEnd::Cut),
            groq_stream(&[(10, "Yes, "), (10, "soon.")], StreamEnd::Finish),
        ],
    );
    let config = chain_config(&[MEMORY_ON]);
    let key = asker::HashKey::for_tests(b"test key");
    let asker = key.asker(Some("203.0.113.9"));
    let question = english("Will it be soon?");
    let memo = super::remember::Memo::new(&key, &question.text, config.memory_ttl_s);
    let ask_once = || {
        let asking = Asking {
            asker: Some(&asker),
            memo: memo.as_ref(),
            language: question.language,
            personality: question.personality,
        };
        let (events, _) = spoken_as(&p, &config, &question, asking);
        p.advance(1_000);
        done(&events).clone()
    };
    let cut = ask_once();
    assert!(!cut.complete);
    let second = ask_once();
    assert_eq!(
        (second.answer.answer.as_str(), second.answer.remembered),
        ("Yes, soon.", false),
        "asked afresh"
    );
    // Remembered from then on: the third time it was asked, so already annoyed (the cut ask counts).
    let third = ask_once();
    assert_eq!((third.answer.remembered, third.answer.source), (true, Source::Sqlite), "{third:?}");
    assert_eq!(p.calls_to(GROQ_CHAT), 2, "no provider called for a remembered question");
}

// ---------------------------------------------------------------------------------------------
// The same chain on the key-value store (Spin where no SQLite is offered)

mod key_value;
