//! ollama-proxy: a guarded, streaming, health-aggregating reverse proxy in front of Ollama.
//!
//! [`app`] builds the whole HTTP surface from an [`AppState`]; `main.rs` only parses the
//! configuration, sets up logging and calls [`server::serve`]. Tests drive [`app`] directly or
//! start the real binary.

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod health;
pub mod healthcheck;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod route;
pub mod server;
pub mod state;

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};
use tracing::Instrument;

pub use state::AppState;

use crate::error::Rejection;

/// The metrics label a handler puts on its response (a fixed route pattern).
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// The id of one request, echoed in `x-request-id`, logged, and sent upstream.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// Builds the proxy's router: open health routes, `/metrics`, and the allow-listed fallback.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics_text))
        .fallback(proxy::forward)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// `GET /metrics`: Prometheus text; needs a key like the forwarded routes.
async fn metrics_text(State(state): State<AppState>, request: Request) -> Response {
    let mut response = match state.settings.api_keys.check(request.headers()) {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            state.metrics.render(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(RouteLabel("/metrics"));
    response
}

/// Gives every request an id and a span, then counts and logs it once its headers are sent.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let id = request_id(request.headers());
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %request.method(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let route = response.extensions().get::<RouteLabel>().map_or("unmatched", |r| r.0);
    let status = response.status().as_u16();
    state.metrics.record_request(route, status);
    let rejection = response.extensions().get::<Rejection>().map(|r| r.0);
    if let Some(reason) = rejection {
        state.metrics.record_rejection(reason);
    }
    span.in_scope(|| {
        tracing::info!(
            route,
            status,
            rejected = rejection,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "answered"
        );
    });
    response.headers_mut().insert("x-request-id", id);
    response
}

/// Reuses a well-formed incoming `x-request-id`, else makes a fresh one.
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let incoming = headers.get("x-request-id").filter(|v| {
        let bytes = v.as_bytes();
        (1..=64).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    if let Some(value) = incoming {
        return value.clone();
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let hash = SEED.get_or_init(RandomState::new).hash_one(n);
    HeaderValue::from_str(&format!("{hash:016x}")).unwrap_or(HeaderValue::from_static("unknown"))
}
