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
pub mod upstream;

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

#[cfg(test)]
mod tests {
    //! The router driven in process with `oneshot`: no socket, no Ollama (it points at a closed port).
    use super::*;
    use axum::body::Body;
    use clap::Parser;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const KEY: &str = "in-process-key-0123456789";

    fn state() -> AppState {
        let cli = config::Cli::try_parse_from([
            "ollama-proxy",
            "--proxy-api-keys",
            KEY,
            "--ollama-upstream",
            "http://127.0.0.1:9",
            "--health-timeout-ms",
            "200",
        ]);
        let settings = cli.map(|c| c.settings.validate());
        match settings {
            Ok(Ok(settings)) => AppState::new(settings),
            other => panic!("test settings are valid: {other:?}"),
        }
    }

    async fn call(request: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
        let response = app(state()).oneshot(request).await.unwrap_or_else(|e| match e {});
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn get(path: &str, key: Option<&str>) -> Request<Body> {
        let mut builder = Request::get(path);
        if let Some(key) = key {
            builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        builder.body(Body::empty()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn livez_needs_no_key_and_carries_a_request_id() {
        let (status, headers, body) = call(get("/livez", None)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("alive"));
        assert!(headers.contains_key("x-request-id"));
    }

    #[tokio::test]
    async fn a_well_formed_incoming_request_id_is_kept() {
        let mut request = get("/livez", None);
        request.headers_mut().insert("x-request-id", http::HeaderValue::from_static("abc-123"));
        let (_, headers, _) = call(request).await;
        assert_eq!(headers["x-request-id"], "abc-123");
    }

    #[tokio::test]
    async fn metrics_need_a_key() {
        assert_eq!(call(get("/metrics", None)).await.0, StatusCode::UNAUTHORIZED);
        let (status, _, body) = call(get("/metrics", Some(KEY))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("ollama_proxy_in_flight"));
    }

    #[tokio::test]
    async fn unreachable_ollama_is_a_502_problem_without_details() {
        let (status, headers, body) = call(get("/api/tags", Some(KEY))).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(headers[http::header::CONTENT_TYPE], "application/problem+json");
        assert!(!body.contains("127.0.0.1"), "{body}");
    }

    #[tokio::test]
    async fn health_is_degraded_but_200_without_ollama() {
        let (status, _, body) = call(get("/health", None)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"status\":\"degraded\""), "{body}");
    }
}
