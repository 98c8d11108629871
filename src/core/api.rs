//! The edge's HTTP surface: routing with a `match`, input validation, CORS, and the one place
//! that maps every error to an RFC 9457 `application/problem+json` response.

use http::{HeaderValue, Method, StatusCode, header};
use http_api_problem::HttpApiProblem;
use serde_json::Value;

use super::admission::{self, Asking};
use super::ask::{self, After, Attempt, ChainError, Question};
use super::asker::{self, ClientAddress};
use super::classify::guess_language;
use super::clean::{is_invisible, is_visible};
use super::config::{Config, ConfigError};
use super::dashboard::dashboard;
use super::domain::{Language, Personality};
use super::health::health;
use super::limits::Limited;
use super::pages;
use super::remember::Memo;
use super::seam::{DbError, Metered, Platform};
use super::speak;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Longest accepted question, in characters.
pub const MAX_QUESTION_CHARS: usize = 500;

/// A response, plus what is left to do once it is sent.
pub struct Handled {
    /// What to send; its body is empty when `events` is the body.
    pub response: http::Response<Vec<u8>>,
    /// The body of a streamed answer (`text/event-stream`): server-sent events, each sent as soon
    /// as it is ready. Dropping it (the client left) cancels the provider's request.
    pub events: Option<Events>,
    /// Done with [`ask::after_response`] after sending (by `wait_until` where the platform has it).
    pub after: After,
}

/// Server-sent events, encoded.
pub type Events = futures_util::stream::LocalBoxStream<'static, Vec<u8>>;

/// Everything a request can fail with, mapped to HTTP in [`ApiError::status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such route.
    #[error("there is no route {0}")]
    NotFound(String),
    /// Known route, wrong method.
    #[error("{method} is not allowed here; use {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods the route takes.
        allow: &'static str,
    },
    /// Body over [`MAX_BODY_BYTES`].
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    /// Not `application/json`.
    #[error("send the question as JSON with Content-Type: application/json")]
    UnsupportedMediaType,
    /// Unparseable JSON.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// A field is missing or wrong.
    #[error("{0}")]
    InvalidField(String),
    /// CORS preflight from an origin that is not allowed.
    #[error("this origin may not call the API")]
    OriginNotAllowed,
    /// The deployment's variables are wrong (names only, never values).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Every link of the chain failed (the cause is logged, never sent: it names database internals).
    #[error("the spirits cannot answer right now; try again in a few seconds")]
    Chain(#[from] ChainError),
    /// The metrics could not be read.
    #[error("the metrics cannot be read right now")]
    Metrics(#[from] DbError),
    /// The asker is over a per-asker limit (`ASK_LIMITS`).
    #[error("{0}")]
    Limited(Limited),
}

impl ApiError {
    /// The HTTP status of this error.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidJson(_) | ApiError::InvalidField(_) => StatusCode::BAD_REQUEST,
            ApiError::OriginNotAllowed => StatusCode::FORBIDDEN,
            ApiError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Chain(_) | ApiError::Metrics(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A short machine-readable code, sent as the problem's `code` member.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidField(_) => "invalid_field",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::Config(_) => "misconfigured",
            ApiError::Chain(_) | ApiError::Metrics(_) => "unavailable",
            ApiError::Limited(_) => "too_many_asks",
        }
    }

    fn into_response(self) -> http::Response<Vec<u8>> {
        let status = self.status();
        let mut problem = HttpApiProblem::new(status)
            .title(status.canonical_reason().unwrap_or("Error"))
            .detail(self.to_string());
        problem.set_value("code", &self.code());
        let mut response = json_response(status, problem.json_bytes());
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match self {
            ApiError::MethodNotAllowed { allow, .. } => {
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Chain(_) | ApiError::Metrics(_) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::Limited(limited) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(limited.retry_after_s));
            }
            _ => {}
        }
        response
    }
}

/// Handles one request. `config` is passed parsed, so a misconfiguration is answered, not panicked on.
pub async fn handle<P: Platform + Clone + 'static>(
    platform: &P,
    config: Result<&Config, &ConfigError>,
    request: &http::Request<Vec<u8>>,
) -> Handled {
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let (mut response, events, after) = match config {
        Ok(config) => match route(platform, config, request).await {
            Ok(done) => done,
            Err(error) => (error.into_response(), None, After::Nothing),
        },
        Err(error) => (ApiError::Config(error.clone()).into_response(), None, After::Nothing),
    };
    if let Ok(config) = config {
        add_cors(&mut response, config, origin);
    }
    Handled { response, events, after }
}

type Routed = Result<(http::Response<Vec<u8>>, Option<Events>, After), ApiError>;

async fn route<P: Platform + Clone + 'static>(
    platform: &P,
    config: &Config,
    request: &http::Request<Vec<u8>>,
) -> Routed {
    let path = request.uri().path();
    let method = request.method();
    let allow = match path {
        "/api/ouija" | "/ouija/ask" => "POST, OPTIONS",
        "/health" | "/dashboard" => "GET, HEAD, OPTIONS",
        _ => return Err(ApiError::NotFound(path.to_owned())),
    };
    if method == Method::OPTIONS {
        return preflight(config, request, allow).map(|r| (r, None, After::Nothing));
    }
    match (method, path) {
        (&Method::POST, "/api/ouija" | "/ouija/ask") => ask_route(platform, config, request).await,
        (&Method::GET | &Method::HEAD, "/health") => {
            let (status, body) = health(platform, config).await;
            Ok((json_value(status, &body), None, After::Nothing))
        }
        (&Method::GET | &Method::HEAD, "/dashboard") => {
            let accept = request.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
            if pages::prefers_html(accept) {
                return Ok((pages::dashboard_page(), None, After::Nothing));
            }
            let mut response = json_value(StatusCode::OK, &dashboard(platform, config).await?);
            response.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
            Ok((response, None, After::Nothing))
        }
        _ => Err(ApiError::MethodNotAllowed { method: method.to_string(), allow }),
    }
}

/// The ask: who asks, whether a limit holds them back, whether the spirit remembers the question,
/// then the chain; every answer (a 429 too) carries `Server-Timing`.
async fn ask_route<P: Platform + Clone + 'static>(
    platform: &P,
    config: &Config,
    request: &http::Request<Vec<u8>>,
) -> Routed {
    let question = read_question(request, platform.random_u64())?;
    let metered = Metered::new(platform);
    let started = metered.now_ms();
    let address = request.extensions().get::<ClientAddress>().map(|a| a.0.as_str());
    // Without the database nobody can be told apart: the ask goes on, counted by no limit and
    // remembered by no memory, as with the minute slot.
    let key = if config.ask_limits.is_empty() && config.memory_ttl_s == 0 {
        None
    } else {
        asker::hash_key(&metered, config)
            .await
            .inspect_err(|e| platform.log_error(&format!("asker key unreadable, limits and memory off: {e}")))
            .ok()
    };
    let asker = key.as_ref().map(|key| key.asker(address));
    let memo = key.as_ref().and_then(|key| Memo::new(key, &question.text, config.memory_ttl_s));
    let asking = Asking {
        asker: asker.as_ref(),
        memo: memo.as_ref(),
        language: question.language,
        personality: question.personality,
    };
    let admission = admission::admit(&metered, config, asking, started).await;
    if let Some(limited) = admission.limited {
        let mut response = ApiError::Limited(limited).into_response();
        let total = metered.now_ms().saturating_sub(started);
        add_server_timing(&mut response, metered.db_ms(), &[], total);
        return Ok((response, None, After::Refused));
    }
    if streams(request) {
        let speech = speak::speak(platform.clone(), config, &question, admission, started)
            .await
            .inspect_err(|e| platform.log_error(&format!("no answer at all: {e}")))?;
        let total = metered.now_ms().saturating_sub(started);
        let (events, record) = speak::events(speech);
        let mut response = http::Response::new(Vec::new());
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // No buffering on the way (nginx and its kin honour this).
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        add_server_timing(&mut response, metered.db_ms(), &[], total);
        return Ok((response, Some(events), After::Streamed(record)));
    }
    let (answer, consultation) = ask::ask(&metered, config, &question, admission, started)
        .await
        .inspect_err(|e| platform.log_error(&format!("no answer at all: {e}")))?;
    let mut response = json_value(StatusCode::OK, &answer);
    let providers = [("groq", consultation.groq), ("ollama", consultation.ollama)];
    let total = metered.now_ms().saturating_sub(started);
    add_server_timing(&mut response, metered.db_ms(), &providers, total);
    Ok((response, None, After::Record(consultation)))
}

/// Whether the client asks for the answer as a stream (`Accept: text/event-stream`).
fn streams(request: &http::Request<Vec<u8>>) -> bool {
    request.headers().get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|accept| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            // `q=0` says "not acceptable" (RFC 9110 §12.4.2).
            let refused = parts.any(|p| {
                p.trim().strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            media.eq_ignore_ascii_case("text/event-stream") && !refused
        })
    })
}

/// `Server-Timing: db;dur=…, groq;dur=…, ollama;dur=…, total;dur=…`, listing only the providers
/// called, so a browser's developer tools show the edge's own share of an ask.
fn add_server_timing(
    response: &mut http::Response<Vec<u8>>,
    db_ms: u64,
    providers: &[(&str, Attempt)],
    total_ms: u64,
) {
    use std::fmt::Write as _;
    let mut timing = format!("db;dur={db_ms}");
    for (name, attempt) in providers {
        if let Some(ms) = attempt.latency_ms {
            let _ = write!(timing, ", {name};dur={ms}");
        }
    }
    let _ = write!(timing, ", total;dur={total_ms}");
    if let Ok(value) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert("server-timing", value);
    }
}

/// Whether an adapter should read a request's body: not when its declared length is already over
/// [`MAX_BODY_BYTES`], since the ask answers 413 from that header alone.
#[must_use]
pub fn body_worth_reading(headers: &http::HeaderMap) -> bool {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    declared.is_none_or(|n| n <= MAX_BODY_BYTES as u64)
}

/// Validates an ask request into a [`Question`]; `random` picks the personality when none is given.
pub fn read_question(request: &http::Request<Vec<u8>>, random: u64) -> Result<Question, ApiError> {
    if !body_worth_reading(request.headers()) || request.body().len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body: Value =
        serde_json::from_slice(request.body()).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let Value::Object(fields) = body else {
        return Err(ApiError::InvalidField("the body must be a JSON object with a \"question\"".into()));
    };

    let text = match fields.get("question") {
        None | Some(Value::Null) => return Err(field("question is required")),
        Some(Value::String(text)) => text.trim(),
        Some(_) => return Err(field("question must be a string")),
    };
    if text.is_empty() {
        return Err(field("question must not be empty"));
    }
    let length = text.chars().count();
    if length > MAX_QUESTION_CHARS {
        return Err(ApiError::InvalidField(format!(
            "question is {length} characters long; the limit is {MAX_QUESTION_CHARS}"
        )));
    }
    if !text.chars().any(is_visible) {
        return Err(field(
            "question must contain something visible: it has only invisible, format or control characters",
        ));
    }
    // What reaches a model and the classifier: no bidi or zero-width tricks, no control characters.
    let text: String =
        text.chars().filter(|&c| !is_invisible(c)).map(|c| if c.is_control() { ' ' } else { c }).collect();
    let text = text.trim();

    let language_field = fields.get("language").filter(|v| !v.is_null()).or_else(|| fields.get("lang"));
    let language = match choice(language_field, "language", "\"es\" or \"en\"", Language::parse)? {
        Some(language) => language,
        None => guess_language(text),
    };
    let personality = choice(
        fields.get("personality"),
        "personality",
        "\"wise\", \"cryptic\", \"dark\" or \"playful\"",
        Personality::parse,
    )?
    .unwrap_or(Personality::ALL[(random % Personality::ALL.len() as u64) as usize]);

    Ok(Question { text: text.to_owned(), language, personality })
}

fn field(message: &str) -> ApiError {
    ApiError::InvalidField(message.to_owned())
}

/// An optional enumerated field: absent or null is `None`; anything else must parse.
fn choice<T>(
    value: Option<&Value>,
    name: &str,
    allowed: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => parse(text.trim())
            .map(Some)
            .ok_or_else(|| ApiError::InvalidField(format!("{name} must be {allowed}"))),
        Some(_) => Err(ApiError::InvalidField(format!("{name} must be {allowed}"))),
    }
}

fn preflight(
    config: &Config,
    request: &http::Request<Vec<u8>>,
    allow: &'static str,
) -> Result<http::Response<Vec<u8>>, ApiError> {
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if config.cors_origins.allow(origin).is_none() {
        return Err(ApiError::OriginNotAllowed);
    }
    let mut response = http::Response::new(Vec::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(allow));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    Ok(response)
}

fn add_cors(response: &mut http::Response<Vec<u8>>, config: &Config, origin: Option<&str>) {
    let Some(allowed) = config.cors_origins.allow(origin) else { return };
    if origin.is_none() && allowed != "*" {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(&allowed) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if allowed != "*" {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

fn json_value<T: serde::Serialize>(status: StatusCode, value: &T) -> http::Response<Vec<u8>> {
    // Serializing these plain structs cannot fail: no maps with non-string keys, no foreign types.
    let body = serde_json::to_vec(value).expect("response bodies are plain serializable structs");
    json_response(status, body)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> http::Response<Vec<u8>> {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask_body(body: &str) -> http::Request<Vec<u8>> {
        http::Request::post("/api/ouija")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.as_bytes().to_vec())
            .expect("valid request")
    }

    #[test]
    fn a_question_of_only_invisible_characters_is_refused() {
        for invisible in
            ["\\u200b", "\\ufeff", "\\u0000", "\\u202e\\u2066", "\\u2800 \\u3164", "\\u00ad\\u200d"]
        {
            let error = read_question(&ask_body(&format!("{{\"question\":\"{invisible}\"}}")), 0)
                .expect_err(invisible);
            assert!(error.to_string().contains("visible"), "{invisible}: {error}");
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn invisible_and_control_characters_are_removed_from_a_visible_question() {
        let question =
            read_question(&ask_body("{\"question\":\"\\u202eWill\\u200b I\\u0000win?\\ufeff\"}"), 0)
                .expect("visible question");
        assert_eq!(question.text, "Will I win?");
    }
}
