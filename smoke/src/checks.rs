//! The checks, in the order they run. Each returns an [`Outcome`] whose text says what was seen
//! and, on failure, what to fix.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{Client, Reply, Request};
use crate::{Config, Outcome, Proxy, ms, percentile};

/// `/health` must answer within this (the architecture's promise).
pub const HEALTH_LIMIT: Duration = Duration::from_secs(1);
/// An ask must be answered within this (the seed's promise), alone and at p95.
pub const ASK_LIMIT: Duration = Duration::from_secs(10);
/// The sources an answer may come from.
pub const SOURCES: &[&str] = &["groq", "ollama", "sqlite"];

/// A check against the edge.
pub struct EdgeCheck {
    /// Its name in the report.
    pub name: &'static str,
    /// Runs it.
    pub run: fn(&Client, &Config) -> Outcome,
}

/// A check against ollama-proxy.
pub struct ProxyCheck {
    /// Its name in the report.
    pub name: &'static str,
    /// Runs it.
    pub run: fn(&Client, &Proxy) -> Outcome,
}

/// Edge checks, in order.
pub const EDGE: &[EdgeCheck] = &[
    EdgeCheck { name: "health", run: health },
    EdgeCheck { name: "ask", run: ask },
    EdgeCheck { name: "ask-bad-input", run: ask_bad_input },
    EdgeCheck { name: "dashboard-json", run: dashboard_json },
    EdgeCheck { name: "dashboard-page", run: dashboard_page },
    EdgeCheck { name: "openapi", run: openapi },
    EdgeCheck { name: "docs-page", run: docs_page },
    EdgeCheck { name: "board-page", run: board_page },
    EdgeCheck { name: "ask-p95", run: ask_p95 },
];

/// Proxy checks, in order (skipped without a proxy URL).
pub const PROXY: &[ProxyCheck] = &[
    ProxyCheck { name: "proxy-health", run: proxy_health },
    ProxyCheck { name: "proxy-auth-required", run: proxy_auth_required },
    ProxyCheck { name: "proxy-tags", run: proxy_tags },
    ProxyCheck { name: "proxy-pull-refused", run: proxy_pull_refused },
];

const DATABASE_HINT: &str = "the fallback database is missing or its migrations were not applied: run \
     `wrangler d1 migrations apply DB --remote` (Workers) or check the Spin sqlite database (DEPLOY.md, \
     \"database empty\")";

/// Polls `/health` until it answers 200 or `limit` passes (a fresh deploy may take a moment).
pub fn wait_ready(client: &Client, base: &str, limit: Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if client.send(Request::get(format!("{base}/health"))).is_ok_and(|r| r.status == 200) {
            return;
        }
        thread::sleep(Duration::from_millis(500));
    }
}

fn unreachable(error: &str) -> Outcome {
    Outcome::Fail(format!("no response: {error}"))
}

/// `status` of a JSON body's `path`, for messages.
fn text_at<'a>(body: &'a Value, pointer: &str) -> Option<&'a str> {
    body.pointer(pointer).and_then(Value::as_str)
}

/// An RFC 9457 problem's `detail`, else the start of the body.
fn problem_detail(reply: &Reply) -> String {
    reply.json().and_then(|b| text_at(&b, "/detail").map(str::to_owned)).unwrap_or_else(|| reply.snippet(160))
}

fn health(client: &Client, config: &Config) -> Outcome {
    // The first request may include a cold start, DNS and a TLS handshake: up to three tries,
    // and the check passes when one answers 200 within the limit.
    let mut first: Option<Duration> = None;
    for _ in 0..3 {
        let reply = match client.send(Request::get(format!("{}/health", config.base))) {
            Ok(reply) => reply,
            Err(e) => return unreachable(&e),
        };
        let body = reply.json().unwrap_or(Value::Null);
        if reply.status != 200 {
            let status = text_at(&body, "/status").unwrap_or("?");
            let database = text_at(&body, "/checks/database/error").unwrap_or("no detail");
            let hint =
                if status == "critical" || reply.status == 503 { DATABASE_HINT } else { "see DEPLOY.md" };
            return Outcome::Fail(format!(
                "HTTP {} status {status}, database: {database}; {hint}",
                reply.status
            ));
        }
        let Some(status) = text_at(&body, "/status").filter(|s| ["ok", "degraded"].contains(s)) else {
            return Outcome::Fail(format!("HTTP 200 but not the health JSON: {}", reply.snippet(120)));
        };
        if reply.elapsed < HEALTH_LIMIT {
            let slow_first =
                first.map(|d| format!(" (first try {} ms: cold start)", ms(d))).unwrap_or_default();
            let count = body.pointer("/checks/database/count").and_then(Value::as_u64).unwrap_or(0);
            let groq = text_at(&body, "/checks/groq/status").unwrap_or("?");
            let ollama = text_at(&body, "/checks/ollama/status").unwrap_or("?");
            return Outcome::Pass(format!(
                "200 {status} in {} ms{slow_first}; database {count} answers, groq {groq}, ollama {ollama}",
                ms(reply.elapsed)
            ));
        }
        first.get_or_insert(reply.elapsed);
    }
    Outcome::Fail(format!(
        "200 but slower than {} ms three times (first {} ms)",
        ms(HEALTH_LIMIT),
        ms(first.unwrap_or_default())
    ))
}

/// Checks one ask's reply; `Ok(source)` or what was wrong.
fn judge_answer(reply: &Reply, expect_source: Option<&str>) -> Result<String, String> {
    if reply.status != 200 {
        let hint = match reply.status {
            503 => "; every provider and the database failed: check /health",
            500 => "; a configuration problem: the detail names the variables",
            _ => "",
        };
        return Err(format!("HTTP {}: {}{hint}", reply.status, problem_detail(reply)));
    }
    let body = reply.json().ok_or_else(|| format!("200 but not JSON: {}", reply.snippet(120)))?;
    let source = text_at(&body, "/source").unwrap_or_default();
    if !SOURCES.contains(&source) {
        return Err(format!("`source` is {:?}, not one of groq, ollama, sqlite", body.get("source")));
    }
    let answer = text_at(&body, "/answer").unwrap_or_default();
    if answer.trim().is_empty() || text_at(&body, "/response") != Some(answer) {
        return Err("`answer` is empty or `response` differs from it".to_owned());
    }
    if let Some(expected) = expect_source.filter(|e| *e != source) {
        return Err(format!("answered by {source}, expected {expected}"));
    }
    if reply.elapsed >= ASK_LIMIT {
        return Err(format!(
            "answered by {source} but in {} ms (limit {} ms)",
            ms(reply.elapsed),
            ms(ASK_LIMIT)
        ));
    }
    Ok(source.to_owned())
}

fn ask_request(base: &str, question: &str, language: &str) -> Request<'static> {
    Request::post_json(format!("{base}/api/ouija"), &json!({ "question": question, "language": language }))
}

fn ask(client: &Client, config: &Config) -> Outcome {
    let request = ask_request(&config.base, "Will the spirits answer this smoke test?", "en");
    match client.send(request) {
        Err(e) => unreachable(&e),
        Ok(reply) => match judge_answer(&reply, config.expect_source.as_deref()) {
            Ok(source) => Outcome::Pass(format!("answered by {source} in {} ms", ms(reply.elapsed))),
            Err(problem) => Outcome::Fail(problem),
        },
    }
}

fn ask_bad_input(client: &Client, config: &Config) -> Outcome {
    match client.send(Request::post_json(format!("{}/api/ouija", config.base), &json!({ "question": "" }))) {
        Err(e) => unreachable(&e),
        Ok(reply) if reply.status == 400 && reply.is("application/problem+json") => {
            Outcome::Pass(format!("empty question refused: 400 problem+json ({})", problem_detail(&reply)))
        }
        Ok(reply) => Outcome::Fail(format!(
            "empty question: expected 400 application/problem+json, got {} {}",
            reply.status, reply.content_type
        )),
    }
}

/// GETs `path` with `accept` and expects 200 with media type `media`.
fn page(client: &Client, url: &str, accept: &str, media: &str) -> Result<Reply, String> {
    let reply = client.send(Request::get(url.to_owned()).header("accept", accept))?;
    if reply.status == 200 && reply.is(media) {
        Ok(reply)
    } else {
        Err(format!("GET {url}: expected 200 {media}, got {} {:?}", reply.status, reply.content_type))
    }
}

fn dashboard_json(client: &Client, config: &Config) -> Outcome {
    let reply =
        match page(client, &format!("{}/dashboard", config.base), "application/json", "application/json") {
            Ok(reply) => reply,
            Err(problem) => return Outcome::Fail(problem),
        };
    match reply.json() {
        Some(Value::Object(body)) => {
            let total = body.get("total").and_then(Value::as_u64).map_or("?".to_owned(), |t| t.to_string());
            Outcome::Pass(format!("JSON metrics, {total} consultations recorded"))
        }
        _ => Outcome::Fail(format!("200 application/json but not a JSON object: {}", reply.snippet(120))),
    }
}

fn html_page(client: &Client, url: &str, what: &str) -> Outcome {
    match page(client, url, "text/html", "text/html") {
        Ok(reply) if reply.body.to_ascii_lowercase().contains("<html") => {
            Outcome::Pass(format!("{what}: HTML, {} bytes", reply.body.len()))
        }
        Ok(reply) => {
            Outcome::Fail(format!("{what}: text/html without an <html> element: {}", reply.snippet(80)))
        }
        Err(problem) => Outcome::Fail(problem),
    }
}

fn dashboard_page(client: &Client, config: &Config) -> Outcome {
    html_page(client, &format!("{}/dashboard", config.base), "dashboard for browsers")
}

fn docs_page(client: &Client, config: &Config) -> Outcome {
    html_page(client, &format!("{}/api/docs", config.base), "API docs")
}

fn board_page(client: &Client, config: &Config) -> Outcome {
    html_page(client, &format!("{}/", config.base), "board")
}

fn openapi(client: &Client, config: &Config) -> Outcome {
    let reply = match page(
        client,
        &format!("{}/api/openapi.json", config.base),
        "application/json",
        "application/json",
    ) {
        Ok(reply) => reply,
        Err(problem) => return Outcome::Fail(problem),
    };
    let Some(document) = reply.json() else {
        return Outcome::Fail(format!("not JSON: {}", reply.snippet(120)));
    };
    let version = text_at(&document, "/openapi").unwrap_or_default();
    if !version.starts_with("3.1.") {
        return Outcome::Fail(format!("`openapi` is {:?}, expected 3.1.x", document.get("openapi")));
    }
    if document.pointer("/paths/~1api~1ouija").is_none() {
        return Outcome::Fail("OpenAPI document has no /api/ouija path".to_owned());
    }
    let paths = document.get("paths").and_then(Value::as_object).map_or(0, serde_json::Map::len);
    Outcome::Pass(format!("OpenAPI {version}, {paths} paths"))
}

const QUESTIONS: &[(&str, &str)] = &[
    ("¿Encontraré el amor este año?", "es"),
    ("Will I get the job I applied for?", "en"),
    ("¿Tendré buena salud?", "es"),
    ("What does the future hold for my family?", "en"),
    ("¿Seré rico algún día?", "es"),
    ("Is there something after death?", "en"),
    ("¿Qué me depara el destino?", "es"),
    ("Should I trust my intuition?", "en"),
];

/// Most times one ask of the p95 check waits out a 429's `Retry-After` before it counts as failed.
const MAX_LIMIT_WAITS: u32 = 5;
/// Longest `Retry-After` the p95 check waits out (the edge's longest default limit is a minute).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(15);

/// Ask number `n` of the p95 check, as a polite client: a 429 from the edge's per-asker limits
/// (`ASK_LIMITS`, 3 a second and 20 per 10 s by default, and one runner is one asker) is waited
/// out as its `Retry-After` says, and only the answered ask is timed. Each ask is a question of its
/// own: the spirit remembers a question asked again (`MEMORY_TTL_S`) and would answer it from its
/// memory, not through the chain this check measures.
fn ask_politely(
    client: &Client,
    config: &Config,
    n: usize,
    waits: &AtomicUsize,
) -> Result<(String, Duration), String> {
    let (question, language) = QUESTIONS[n % QUESTIONS.len()];
    let question = format!("{question} ({})", n + 1);
    let mut waited = 0;
    loop {
        let reply = client.send(ask_request(&config.base, &question, language))?;
        match reply.retry_after {
            Some(wait) if reply.status == 429 && waited < MAX_LIMIT_WAITS && wait <= MAX_RETRY_AFTER => {
                waited += 1;
                waits.fetch_add(1, Ordering::SeqCst);
                thread::sleep(wait);
            }
            _ => {
                return judge_answer(&reply, config.expect_source.as_deref())
                    .map(|source| (source, reply.elapsed));
            }
        }
    }
}

fn ask_p95(client: &Client, config: &Config) -> Outcome {
    use std::fmt::Write as _;
    let next = AtomicUsize::new(0);
    let waits = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    let sources = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..config.concurrency.clamp(1, config.asks.max(1)) {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= config.asks {
                        break;
                    }
                    match ask_politely(client, config, n, &waits) {
                        Ok((source, elapsed)) => {
                            lock(&latencies).push(elapsed);
                            lock(&sources).push(source);
                        }
                        Err(problem) => lock(&failures).push(problem),
                    }
                }
            });
        }
    });
    let latencies = into_inner(latencies);
    let failures = into_inner(failures);
    let mut sources = into_inner(sources);
    sources.sort();
    sources.dedup_by(|a, b| a == b);
    let (Some(p50), Some(p95)) = (percentile(&latencies, 50), percentile(&latencies, 95)) else {
        return Outcome::Fail(format!(
            "none of {} asks answered: {}",
            config.asks,
            failures.first().map_or("", String::as_str)
        ));
    };
    let mut summary = format!(
        "{} asks ({} at once): p50 {} ms, p95 {} ms; sources {}",
        config.asks,
        config.concurrency,
        ms(p50),
        ms(p95),
        sources.join(", ")
    );
    let waits = waits.into_inner();
    if waits > 0 {
        let _ = write!(summary, "; waited out {waits} per-asker limit(s) (429 Retry-After)");
    }
    if let Some(first) = failures.first() {
        Outcome::Fail(format!("{} of {} asks failed, first: {first}; {summary}", failures.len(), config.asks))
    } else if p95 >= ASK_LIMIT {
        Outcome::Fail(format!("p95 over {} ms: {summary}", ms(ASK_LIMIT)))
    } else {
        Outcome::Pass(summary)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking ask thread leaves its samples valid: keep them.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn proxy_health(client: &Client, proxy: &Proxy) -> Outcome {
    let reply = match client.send(Request::get(format!("{}/health", proxy.url))) {
        Ok(reply) => reply,
        Err(e) => return unreachable(&e),
    };
    let body = reply.json().unwrap_or(Value::Null);
    let status = text_at(&body, "/status").unwrap_or("?");
    if reply.status != 200 || !["ok", "degraded"].contains(&status) {
        return Outcome::Fail(format!(
            "HTTP {} status {status}: the proxy is not serving (draining or down)",
            reply.status
        ));
    }
    let ollama = text_at(&body, "/checks/ollama/status").unwrap_or("?");
    let model = text_at(&body, "/checks/ollama/model").unwrap_or("?");
    Outcome::Pass(format!("200 {status} in {} ms; ollama {ollama} (model {model})", ms(reply.elapsed)))
}

fn authed<'a>(request: Request<'a>, bearer: &'a str) -> Request<'a> {
    request.header("authorization", bearer)
}

const WRONG_KEY: &str = "the proxy refused the key (401): PROXY_KEY must be one of the proxy's PROXY_API_KEYS \
     (DEPLOY.md, \"401 from the proxy\")";

fn proxy_auth_required(client: &Client, proxy: &Proxy) -> Outcome {
    match client.send(Request::get(format!("{}/api/tags", proxy.url))) {
        Err(e) => unreachable(&e),
        Ok(reply) if reply.status == 401 => Outcome::Pass("/api/tags without a key: 401".to_owned()),
        Ok(reply) => Outcome::Fail(format!(
            "/api/tags without a key answered {}, expected 401: the proxy is open",
            reply.status
        )),
    }
}

fn proxy_tags(client: &Client, proxy: &Proxy) -> Outcome {
    let Some(key) = &proxy.key else {
        return Outcome::Fail("no proxy key given (PROXY_KEY / SMOKE_PROXY_KEY)".to_owned());
    };
    let bearer = format!("Bearer {key}");
    match client.send(authed(Request::get(format!("{}/api/tags", proxy.url)), &bearer)) {
        Err(e) => unreachable(&e),
        Ok(reply) if reply.status == 401 => Outcome::Fail(WRONG_KEY.to_owned()),
        Ok(reply) if reply.status == 200 => {
            let models: Vec<String> = reply
                .json()
                .and_then(|b| b.get("models").and_then(Value::as_array).cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|m| m.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect();
            if reply.json().and_then(|b| b.get("models").cloned()).is_some() {
                Outcome::Pass(format!(
                    "key accepted; Ollama has {}",
                    if models.is_empty() { "no models".to_owned() } else { models.join(", ") }
                ))
            } else {
                Outcome::Fail(format!("200 but not Ollama's tags JSON: {}", reply.snippet(120)))
            }
        }
        Ok(reply) if matches!(reply.status, 502..=504) => Outcome::Fail(format!(
            "key accepted, but Ollama did not answer ({}): {}; see DEPLOY.md, \"Ollama not starting on 512 MB\"",
            reply.status,
            problem_detail(&reply)
        )),
        Ok(reply) => Outcome::Fail(format!("HTTP {}: {}", reply.status, problem_detail(&reply))),
    }
}

fn proxy_pull_refused(client: &Client, proxy: &Proxy) -> Outcome {
    let Some(key) = &proxy.key else {
        return Outcome::Fail("no proxy key given (PROXY_KEY / SMOKE_PROXY_KEY)".to_owned());
    };
    let bearer = format!("Bearer {key}");
    // A model that does not exist: if the proxy forwards it after all, Ollama downloads nothing.
    let body = json!({ "model": "ouija-smoke/does-not-exist", "stream": false });
    match client.send(authed(Request::post_json(format!("{}/api/pull", proxy.url), &body), &bearer)) {
        Err(e) => unreachable(&e),
        Ok(reply) if reply.status == 403 => {
            Outcome::Pass("/api/pull with a valid key: 403 (model management off)".to_owned())
        }
        Ok(reply) if reply.status == 401 => Outcome::Fail(WRONG_KEY.to_owned()),
        Ok(reply) => Outcome::Fail(format!(
            "/api/pull answered {}, expected 403: model management is open (unset PROXY_ALLOW_ADMIN)",
            reply.status
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, content_type: &str, body: &str, elapsed_ms: u64) -> Reply {
        Reply {
            status,
            content_type: content_type.to_owned(),
            body: body.to_owned(),
            elapsed: Duration::from_millis(elapsed_ms),
            retry_after: None,
        }
    }

    const GOOD: &str = r#"{"answer":"Sí.","response":"Sí.","source":"sqlite"}"#;

    #[test]
    fn an_answer_needs_a_known_source_and_the_same_text_twice() {
        assert_eq!(judge_answer(&reply(200, "application/json", GOOD, 5), None), Ok("sqlite".to_owned()));
        let unknown = r#"{"answer":"a","response":"a","source":"openai"}"#;
        assert!(
            judge_answer(&reply(200, "application/json", unknown, 5), None)
                .unwrap_err()
                .contains("not one of")
        );
        let differs = r#"{"answer":"a","response":"b","source":"groq"}"#;
        assert!(judge_answer(&reply(200, "application/json", differs, 5), None).is_err());
    }

    #[test]
    fn a_slow_or_unexpected_answer_fails() {
        assert!(
            judge_answer(&reply(200, "application/json", GOOD, 10_000), None).unwrap_err().contains("limit")
        );
        assert!(
            judge_answer(&reply(200, "application/json", GOOD, 5), Some("ollama"))
                .unwrap_err()
                .contains("expected ollama")
        );
    }

    #[test]
    fn an_error_reply_shows_the_problem_detail() {
        let problem = r#"{"type":"about:blank","title":"x","status":503,"detail":"every provider failed"}"#;
        let message = judge_answer(&reply(503, "application/problem+json", problem, 5), None).unwrap_err();
        assert!(
            message.contains("HTTP 503: every provider failed; every provider and the database failed"),
            "{message}"
        );
    }

    #[test]
    fn media_types_ignore_parameters() {
        assert!(reply(200, "text/html; charset=utf-8", "", 0).is("text/html"));
        assert!(!reply(200, "text/plain", "", 0).is("text/html"));
    }
}
