//! The two LLM clients of the chain, as pure request builders and response parsers:
//! Groq's OpenAI-compatible chat completions and Ollama's `/api/chat` (non-streaming).

use serde_json::{Value, json};

use super::clean::{Junk, clean_answer};
use super::config::{GroqConfig, OllamaConfig};
use super::domain::Outcome;

/// Answer length limit asked of the models (tokens); the cleaner bounds characters as well.
const MAX_TOKENS: u32 = 60;
/// Cool-down used when a 429 carries no usable `retry-after`.
const DEFAULT_RETRY_AFTER_MS: u64 = 60_000;
/// Longest cool-down honoured from a `retry-after` header.
const MAX_RETRY_AFTER_MS: u64 = 3_600_000;

/// Why a provider gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 429 rate limit: cool down for this long.
    RateLimited {
        /// From `retry-after`, bounded.
        retry_after_ms: u64,
    },
    /// 413, or a 429 saying the request itself is too large: not a rate limit.
    TooLarge,
    /// No whole response within the deadline.
    Timeout,
    /// Connection-level failure.
    Network,
    /// Any other non-2xx status.
    Http(u16),
    /// A 2xx whose body is not the expected JSON.
    Malformed,
    /// A well-formed answer that is empty or junk after cleaning.
    Junk(Junk),
    /// A stream broke after its answer had begun.
    Cut,
    /// A stream fell silent past the gap deadline after its answer had begun.
    Stalled,
}

impl Failure {
    /// The outcome recorded for the dashboard.
    #[must_use]
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::RateLimited { .. } => Outcome::RateLimited,
            Failure::TooLarge => Outcome::TooLarge,
            Failure::Timeout => Outcome::Timeout,
            Failure::Network => Outcome::NetworkError,
            Failure::Http(_) => Outcome::HttpError,
            Failure::Malformed => Outcome::Malformed,
            Failure::Junk(_) => Outcome::Junk,
            Failure::Cut => Outcome::Cut,
            Failure::Stalled => Outcome::Stalled,
        }
    }

    /// Whether this failure says the provider itself is unwell, and so counts toward opening the
    /// breaker that keeps it out for every asker. Only failures no question can cause count: a
    /// deadline, a broken connection, a 5xx, a rejected key (401/403) or a missing route (404), and
    /// a 2xx that is not the provider's JSON. Junk answers do not: what a model says depends on the
    /// question, so counting them would let anyone switch a provider off for everyone with a few
    /// crafted questions. Nor do other 4xx (the request's fault), nor 429s (they cool down instead).
    #[must_use]
    pub fn trips_breaker(&self) -> bool {
        match self {
            Failure::Timeout | Failure::Network | Failure::Malformed | Failure::Cut | Failure::Stalled => {
                true
            }
            Failure::Http(status) => *status >= 500 || matches!(status, 401 | 403 | 404),
            Failure::RateLimited { .. } | Failure::TooLarge | Failure::Junk(_) => false,
        }
    }
}

impl From<super::seam::FetchError> for Failure {
    fn from(error: super::seam::FetchError) -> Self {
        match error {
            super::seam::FetchError::Timeout(_) => Failure::Timeout,
            super::seam::FetchError::Network(_) => Failure::Network,
        }
    }
}

fn json_post(url: &str, bearer: Option<&str>, body: &Value) -> http::Request<Vec<u8>> {
    let mut builder = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json");
    if let Some(token) = bearer {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(body.to_string().into_bytes())
        .expect("method, URL and headers are valid: URLs are checked when configuration is parsed")
}

fn chat_messages(system_prompt: &str, question: &str) -> Value {
    json!([
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": question},
    ])
}

/// `POST {base}/chat/completions` for Groq.
#[must_use]
pub fn groq_request(config: &GroqConfig, system_prompt: &str, question: &str) -> http::Request<Vec<u8>> {
    let body = json!({
        "model": config.model,
        "messages": chat_messages(system_prompt, question),
        "max_tokens": MAX_TOKENS,
        "temperature": 0.9,
    });
    json_post(&format!("{}/chat/completions", config.base_url), Some(&config.api_key), &body)
}

/// The same chat request, asking for the answer as a stream (`stream: true`): Groq answers with
/// server-sent events, Ollama with NDJSON.
#[must_use]
pub fn streaming(request: http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let (mut parts, body) = request.into_parts();
    let mut json: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
    json["stream"] = Value::Bool(true);
    parts.headers.remove(http::header::ACCEPT);
    http::Request::from_parts(parts, json.to_string().into_bytes())
}

/// `GET {base}/models` for Groq: a health probe that spends no completion.
#[must_use]
pub fn groq_models_request(config: &GroqConfig) -> http::Request<Vec<u8>> {
    http::Request::get(format!("{}/models", config.base_url))
        .header(http::header::AUTHORIZATION, format!("Bearer {}", config.api_key))
        .body(Vec::new())
        .expect("URL checked when configuration is parsed")
}

/// `POST {url}/api/chat` for Ollama, non-streaming.
#[must_use]
pub fn ollama_request(config: &OllamaConfig, system_prompt: &str, question: &str) -> http::Request<Vec<u8>> {
    let body = json!({
        "model": config.model,
        "messages": chat_messages(system_prompt, question),
        "stream": false,
        "options": {"num_predict": MAX_TOKENS, "temperature": 0.9},
    });
    json_post(&format!("{}/api/chat", config.url), config.token.as_deref(), &body)
}

/// `GET {url}/api/tags` for Ollama: lists the models it has.
#[must_use]
pub fn ollama_tags_request(config: &OllamaConfig) -> http::Request<Vec<u8>> {
    let mut builder = http::Request::get(format!("{}/api/tags", config.url));
    if let Some(token) = &config.token {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Vec::new()).expect("URL checked when configuration is parsed")
}

/// The cleaned answer of a Groq chat completion.
pub fn parse_groq(response: &http::Response<Vec<u8>>) -> Result<String, Failure> {
    let body = checked_body(response)?;
    let content =
        body.pointer("/choices/0/message/content").and_then(Value::as_str).ok_or(Failure::Malformed)?;
    clean_answer(content).map_err(Failure::Junk)
}

/// The cleaned answer of an Ollama `/api/chat` response.
pub fn parse_ollama(response: &http::Response<Vec<u8>>) -> Result<String, Failure> {
    let body = checked_body(response)?;
    let content = body.pointer("/message/content").and_then(Value::as_str).ok_or(Failure::Malformed)?;
    clean_answer(content).map_err(Failure::Junk)
}

/// Whether a model listing (Groq `/models` or Ollama `/api/tags`) names `model`.
pub fn lists_model(response: &http::Response<Vec<u8>>, model: &str) -> Result<bool, Failure> {
    let body = checked_body(response)?;
    let entries = body
        .get("data")
        .or_else(|| body.get("models"))
        .and_then(Value::as_array)
        .ok_or(Failure::Malformed)?;
    Ok(entries
        .iter()
        .any(|m| ["id", "name", "model"].iter().any(|key| m.get(key).and_then(Value::as_str) == Some(model))))
}

fn checked_body(response: &http::Response<Vec<u8>>) -> Result<Value, Failure> {
    let status = response.status();
    if status == http::StatusCode::TOO_MANY_REQUESTS {
        return Err(rate_limit_failure(response));
    }
    if status == http::StatusCode::PAYLOAD_TOO_LARGE {
        return Err(Failure::TooLarge);
    }
    if !status.is_success() {
        return Err(Failure::Http(status.as_u16()));
    }
    serde_json::from_slice(response.body()).map_err(|_| Failure::Malformed)
}

/// A 429 is a cool-down for `retry-after`, unless its body says the request itself is too large.
fn rate_limit_failure(response: &http::Response<Vec<u8>>) -> Failure {
    let message = serde_json::from_slice::<Value>(response.body())
        .ok()
        .and_then(|b| b.pointer("/error/message").and_then(Value::as_str).map(str::to_lowercase))
        .unwrap_or_default();
    if message.contains("request too large") || message.contains("too large for model") {
        return Failure::TooLarge;
    }
    let retry_after = header(response, http::header::RETRY_AFTER.as_str())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(|secs| (secs * 1000.0).ceil() as u64);
    let retry_after_ms = retry_after
        .or_else(|| header(response, "x-ratelimit-reset-requests").and_then(go_duration_ms))
        .unwrap_or(DEFAULT_RETRY_AFTER_MS)
        .clamp(1_000, MAX_RETRY_AFTER_MS);
    Failure::RateLimited { retry_after_ms }
}

/// When a Groq answer says the daily request quota is now spent (`x-ratelimit-remaining-requests:
/// 0`), how long until it resets (`x-ratelimit-reset-requests`), so the next ask skips Groq
/// instead of spending a 429.
#[must_use]
pub fn groq_daily_quota_spent(response: &http::Response<Vec<u8>>) -> Option<u64> {
    let remaining = header(response, "x-ratelimit-remaining-requests")?.parse::<u64>().ok()?;
    (remaining == 0).then(|| {
        header(response, "x-ratelimit-reset-requests")
            .and_then(go_duration_ms)
            .unwrap_or(DEFAULT_RETRY_AFTER_MS)
            .clamp(1_000, MAX_RETRY_AFTER_MS)
    })
}

fn header<'a>(response: &'a http::Response<Vec<u8>>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Parses the Go-style durations in Groq's reset headers (`2m59.56s`, `690ms`, `1h2m3s`) to ms.
fn go_duration_ms(text: &str) -> Option<u64> {
    let mut total = 0.0_f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_end] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            _ => return None,
        };
        total += value * unit_ms;
        rest = &rest[unit_end..];
    }
    Some(total.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response<Vec<u8>> {
        let mut builder = http::Response::builder().status(status);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(body.as_bytes().to_vec()).expect("valid test response")
    }

    fn groq() -> GroqConfig {
        GroqConfig {
            api_key: "gsk_test".into(),
            base_url: "http://127.0.0.1:1/openai/v1".into(),
            model: "llama-3.1-8b-instant".into(),
            timeout_ms: 1000,
            requests_per_minute: 30,
        }
    }

    #[test]
    fn groq_request_is_an_openai_chat_completion_with_bearer_key() {
        let request = groq_request(&groq(), "be a spirit", "will it rain?");
        assert_eq!(request.uri(), "http://127.0.0.1:1/openai/v1/chat/completions");
        assert_eq!(request.headers()["authorization"], "Bearer gsk_test");
        let body: Value = serde_json::from_slice(request.body()).expect("json");
        assert_eq!(body["model"], "llama-3.1-8b-instant");
        assert_eq!(body["messages"][1]["content"], "will it rain?");
    }

    #[test]
    fn ollama_request_is_non_streaming_and_carries_proxy_token_only_when_set() {
        let mut config =
            OllamaConfig { url: "http://o".into(), model: "qwen2.5:0.5b".into(), token: None, timeout_ms: 1 };
        let request = ollama_request(&config, "p", "q");
        assert!(request.headers().get("authorization").is_none());
        let body: Value = serde_json::from_slice(request.body()).expect("json");
        assert_eq!(body["stream"], false);
        config.token = Some("tok".into());
        assert_eq!(ollama_request(&config, "p", "q").headers()["authorization"], "Bearer tok");
    }

    #[test]
    fn groq_answer_is_cleaned() {
        let ok = response(200, &[], r#"{"choices":[{"message":{"role":"assistant","content":"\"Yes.\""}}]}"#);
        assert_eq!(parse_groq(&ok), Ok("Yes.".into()));
    }

    #[test]
    fn groq_429_with_retry_after_is_a_cool_down_of_that_length() {
        let limited = response(
            429,
            &[("retry-after", "60")],
            r#"{"error":{"message":"Rate limit reached for model on requests per minute (RPM)","type":"requests","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(parse_groq(&limited), Err(Failure::RateLimited { retry_after_ms: 60_000 }));
        let fractional = response(429, &[("retry-after", "2.5")], "{}");
        assert_eq!(parse_groq(&fractional), Err(Failure::RateLimited { retry_after_ms: 2_500 }));
        let missing = response(429, &[], "not json");
        assert_eq!(parse_groq(&missing), Err(Failure::RateLimited { retry_after_ms: 60_000 }));
    }

    #[test]
    fn groq_reset_headers_are_go_durations() {
        assert_eq!(go_duration_ms("2m59.56s"), Some(179_560));
        assert_eq!(go_duration_ms("690ms"), Some(690));
        assert_eq!(go_duration_ms("1h0m3s"), Some(3_603_000));
        assert_eq!(go_duration_ms("soon"), None);
        assert_eq!(go_duration_ms(""), None);
    }

    #[test]
    fn a_429_without_retry_after_waits_for_the_reset_header() {
        let limited = response(429, &[("x-ratelimit-reset-requests", "12.5s")], "{}");
        assert_eq!(parse_groq(&limited), Err(Failure::RateLimited { retry_after_ms: 12_500 }));
    }

    #[test]
    fn the_last_answer_of_the_daily_quota_cools_groq_down_until_its_reset() {
        let last = response(
            200,
            &[("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "2m59.56s")],
            r#"{"choices":[{"message":{"content":"Yes."}}]}"#,
        );
        assert_eq!(groq_daily_quota_spent(&last), Some(179_560));
        let plenty = response(200, &[("x-ratelimit-remaining-requests", "14399")], "{}");
        assert_eq!(groq_daily_quota_spent(&plenty), None);
    }

    #[test]
    fn request_too_large_429_is_not_a_rate_limit() {
        let too_large = response(
            429,
            &[("retry-after", "7")],
            r#"{"error":{"message":"Request too large for model `llama-3.1-8b-instant` on tokens per minute (TPM): Limit 6000, Requested 9000","type":"tokens","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(parse_groq(&too_large), Err(Failure::TooLarge));
        assert!(!Failure::TooLarge.trips_breaker());
    }

    #[test]
    fn errors_garbage_and_junk_are_failures() {
        assert_eq!(parse_groq(&response(500, &[], "oops")), Err(Failure::Http(500)));
        assert_eq!(parse_groq(&response(200, &[], "<html>")), Err(Failure::Malformed));
        assert_eq!(parse_groq(&response(200, &[], r#"{"choices":[]}"#)), Err(Failure::Malformed));
        assert_eq!(
            parse_ollama(&response(200, &[], r#"{"message":{"content":"  "}}"#)),
            Err(Failure::Junk(Junk::Empty))
        );
        assert_eq!(
            parse_ollama(&response(
                200,
                &[],
                r#"{"message":{"role":"assistant","content":"Sí."},"done":true}"#
            )),
            Ok("Sí.".into())
        );
    }

    #[test]
    fn model_listings_of_both_providers_are_understood() {
        let groq = response(
            200,
            &[],
            r#"{"object":"list","data":[{"id":"llama-3.1-8b-instant","object":"model"}]}"#,
        );
        assert_eq!(lists_model(&groq, "llama-3.1-8b-instant"), Ok(true));
        let ollama = response(200, &[], r#"{"models":[{"name":"qwen2.5:0.5b","model":"qwen2.5:0.5b"}]}"#);
        assert_eq!(lists_model(&ollama, "llama3"), Ok(false));
    }
}
