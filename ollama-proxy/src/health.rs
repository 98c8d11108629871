//! `/health`, `/livez` and `/readyz`: open routes that reveal no secret.
//!
//! `/health` reports the pool of Ollama boxes from its state (see `pool`: the prober's last
//! findings and the ejections; no call to Ollama is made here), and checks every `HEALTH_TARGETS`
//! URL at once, each under `HEALTH_TIMEOUT_MS`, so it answers within a second even if all hang.
//! Status policy: Ollama down, its model missing or a target down is `degraded` (HTTP 200: the
//! proxy still serves, and a 503 would make the platform restart it for nothing); `critical`
//! (HTTP 503) means the proxy itself cannot take traffic, which today is only while it drains
//! after SIGTERM. `/readyz` is the strict signal: 503 until Ollama answers with the model.
//!
//! Both are open, so the target checks are one shared result ([`checks`]): reused for
//! `HEALTH_CACHE_MS`, and computed by one caller at a time while every concurrent caller waits for
//! that one (single-flight across workers). A flood of `/health` calls costs Ollama nothing (its
//! probes run every `HEALTH_INTERVAL_MS` whatever the traffic) and each target one check per
//! `HEALTH_CACHE_MS`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, Uri, header};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use serde_json::Value;

use crate::AppState;
use crate::pool::UpstreamReport;

/// Largest health or tags answer read (a long model list is still far below this).
const MAX_CHECK_BODY: usize = 1 << 20;

/// Overall health.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything answers.
    Ok,
    /// The proxy serves, something behind it does not.
    Degraded,
    /// The proxy cannot take traffic.
    Critical,
}

/// Result of checking Ollama.
#[derive(Debug, Serialize)]
pub struct OllamaCheck {
    /// `ok`, `down` or `model_missing`.
    pub status: &'static str,
    /// Whether Ollama answered at all.
    pub available: bool,
    /// Ollama's version, when it answered.
    pub version: Option<String>,
    /// The model the proxy expects.
    pub model: String,
    /// Whether `/api/tags` lists it.
    pub model_present: bool,
    /// Time the check took.
    pub latency_ms: u64,
    /// What went wrong, in a few fixed words.
    pub error: Option<String>,
    /// Each box of the pool: up or down, model present or loaded, in flight, last error.
    pub upstreams: Vec<UpstreamReport>,
}

/// Result of checking one `HEALTH_TARGETS` URL.
#[derive(Debug, Serialize)]
pub struct TargetCheck {
    /// The URL checked (validated at start to hold no credentials or query).
    pub url: String,
    /// `ok` for a 2xx answer, else `down`.
    pub status: &'static str,
    /// The HTTP status it answered with.
    pub http_status: Option<u16>,
    /// The `status` field of its JSON answer, if any (an edge's own ok/degraded/critical).
    pub reported_status: Option<String>,
    /// Time the check took.
    pub latency_ms: u64,
    /// What went wrong, in a few fixed words.
    pub error: Option<String>,
}

/// The results of one round of checks.
#[derive(Debug)]
pub struct Checks {
    /// Each `HEALTH_TARGETS` URL's.
    pub targets: Vec<TargetCheck>,
    /// When the round started.
    started: Instant,
}

/// The last round of checks, shared by every worker. An async lock (runtime-agnostic, so workers
/// on other event loops can wait on it): whoever holds it is the one caller checking.
#[derive(Default)]
pub struct HealthCache(tokio::sync::Mutex<Option<Arc<Checks>>>);

/// The checks, reused when a round started after this call came in or less than
/// `HEALTH_CACHE_MS` ago; otherwise run now, once, for every caller waiting meanwhile.
pub async fn checks(state: &AppState) -> Arc<Checks> {
    let asked = Instant::now();
    let mut last = state.health_cache.0.lock().await;
    if let Some(checks) = last.as_ref()
        && (checks.started >= asked || checks.started.elapsed() < state.settings.health_cache)
    {
        return checks.clone();
    }
    let fresh = Arc::new(run_checks(state).await);
    *last = Some(fresh.clone());
    fresh
}

async fn run_checks(state: &AppState) -> Checks {
    let started = Instant::now();
    let deadline = state.settings.health_timeout;
    let targets = state.settings.health_targets.iter().map(|uri| check_target(state, uri, deadline));
    let targets = futures_util::future::join_all(targets).await;
    Checks { targets, started }
}

/// `GET /health`.
pub async fn health(state: &AppState) -> Response {
    let checks = checks(state).await;
    let (ollama, targets) = (&ollama_check(state), &checks.targets);
    let status = if state.is_draining() {
        Status::Critical
    } else if ollama.status == "ok" && targets.iter().all(|t| t.status == "ok") {
        Status::Ok
    } else {
        Status::Degraded
    };
    let code = if status == Status::Critical { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = serde_json::json!({
        "status": status,
        "timestamp": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "checks": { "ollama": ollama, "targets": targets },
    });
    (code, no_store(), Json(body)).into_response()
}

/// `GET /livez`: the process is up and serving.
#[must_use]
pub fn livez() -> Response {
    (no_store(), Json(serde_json::json!({ "status": "alive" }))).into_response()
}

/// `GET /readyz`: 200 only when Ollama answers and has the model, and the proxy is not draining.
#[must_use]
pub fn readyz(state: &AppState) -> Response {
    let (code, reason) = if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Some("shutting down".to_owned()))
    } else {
        let ollama = ollama_check(state);
        match (ollama.status, &ollama.error) {
            ("ok", _) => (StatusCode::OK, None),
            ("model_missing", _) => (StatusCode::SERVICE_UNAVAILABLE, Some("model missing".to_owned())),
            (_, error) => (StatusCode::SERVICE_UNAVAILABLE, Some(error.clone().unwrap_or_default())),
        }
    };
    let body = serde_json::json!({
        "status": if code == StatusCode::OK { "ready" } else { "not_ready" },
        "model": state.settings.model,
        "reason": reason,
    });
    (code, no_store(), Json(body)).into_response()
}

/// Ollama as a whole, from the pool's state (the prober's last findings and the ejections): up
/// when at least one box is, `ok` when one that is up has the model. No call is made here.
fn ollama_check(state: &AppState) -> OllamaCheck {
    let model = &state.settings.model;
    let upstreams = state.upstreams.report(model);
    let up: Vec<&UpstreamReport> = upstreams.iter().filter(|u| u.status == "up").collect();
    let with_model = up.iter().find(|u| u.model_present);
    let (status, error) = match (with_model, up.first()) {
        (Some(_), _) => ("ok", None),
        (None, Some(_)) => ("model_missing", Some("model not in /api/tags".to_owned())),
        (None, None) => {
            let error = upstreams.iter().find_map(|u| u.last_error).unwrap_or("down");
            ("down", Some(error.to_owned()))
        }
    };
    let answering = with_model.or(up.first());
    OllamaCheck {
        status,
        available: !up.is_empty(),
        version: answering.and_then(|u| u.version.clone()),
        model: model.clone(),
        model_present: with_model.is_some(),
        latency_ms: answering.map_or(0, |u| u.latency_ms),
        error,
        upstreams,
    }
}

async fn check_target(state: &AppState, uri: &Uri, deadline: Duration) -> TargetCheck {
    let started = Instant::now();
    let answer = tokio::time::timeout(deadline, fetch(state, uri.clone())).await;
    let (http_status, reported_status, error) = match answer {
        Err(_) => (None, None, Some("timeout")),
        Ok(Err(error)) => (None, None, Some(error)),
        Ok(Ok((code, body))) => {
            let reported = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("status")?.as_str().map(str::to_owned));
            (Some(code.as_u16()), reported, (!code.is_success()).then_some("unhealthy status"))
        }
    };
    TargetCheck {
        url: uri.to_string(),
        status: if error.is_none() { "ok" } else { "down" },
        http_status,
        reported_status,
        latency_ms: started.elapsed().as_millis() as u64,
        error: error.map(str::to_owned),
    }
}

/// One GET with the shared client; the body is read up to [`MAX_CHECK_BODY`].
async fn fetch(state: &AppState, uri: Uri) -> Result<(StatusCode, bytes::Bytes), &'static str> {
    let request = http::Request::get(uri).body(Body::empty()).map_err(|_| "bad URL")?;
    let response = state.client.request(request).await.map_err(|_| "unreachable")?;
    let code = response.status();
    let body = Limited::new(response.into_body(), MAX_CHECK_BODY)
        .collect()
        .await
        .map_err(|_| "body unreadable")?
        .to_bytes();
    Ok((code, body))
}

fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}
