//! ollama-proxy: a guarded, streaming, health-aggregating reverse proxy in front of Ollama.
//!
//! [`handle`] answers one request from an [`AppState`]; [`App`] is that as a hyper service;
//! `main.rs` only parses the configuration, sets up logging and calls [`server::run`]. Tests call
//! [`handle`] directly or start the real binary.
//!
//! The routing is a `match` on the path rather than a router: five fixed routes and a fallback
//! need no more, and every layer between hyper and the handler costs CPU on each small request.

pub mod auth;
pub mod body;
pub mod client_io;
pub mod config;
pub mod error;
pub mod h1;
pub mod header_timer;
pub mod health;
pub mod healthcheck;
pub mod kept_timer;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod route;
pub mod server;
pub mod state;
pub mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::response::IntoResponse;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

pub use state::AppState;

use crate::body::BoxError;
use crate::error::{ProxyError, Rejection};

/// `x-request-id`, parsed once: a name given as `&str` is parsed and checked on every use.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A response of the proxy.
pub type Response = http::Response<ResponseBody>;

pin_project! {
    /// The body of a response: Ollama's, streamed through, or one the proxy wrote. An enum rather
    /// than a boxed body, so a forwarded response costs no allocation and no dynamic calls.
    #[project = ResponseBodyProj]
    #[allow(missing_docs, reason = "pin-project-lite takes no docs on a variant's fields; the variants say")]
    pub enum ResponseBody {
        /// Ollama's body, with the request's in-flight slot and pause limit.
        Forwarded {
            #[pin]
            body: proxy::Forwarded,
        },
        /// An answer of the proxy's own (an error, health, metrics).
        Own {
            #[pin]
            body: axum::body::Body,
        },
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ResponseBodyProj::Forwarded { body } => body.poll_frame(cx),
            ResponseBodyProj::Own { body } => body.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Forwarded { body } => body.is_end_stream(),
            Self::Own { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Forwarded { body } => body.size_hint(),
            Self::Own { body } => body.size_hint(),
        }
    }
}

/// One of the proxy's own answers as a [`Response`].
#[must_use]
pub fn own_answer(response: axum::response::Response) -> Response {
    response.map(|body| ResponseBody::Own { body })
}

/// The proxy as hyper serves it: each request goes to [`handle`] (see [`App::call`]).
///
/// The state is behind one more `Arc` so that a request clones one pointer, not each of the
/// state's handles (settings, upstream connections, the health client's pool and connector).
#[derive(Clone)]
pub struct App(pub Arc<AppState>);

impl App {
    /// Answers one request through [`handle`], as hyper's `service_fn` calls it.
    ///
    /// The future's type is concrete, not a boxed `Service::Future`: hyper keeps it in the
    /// connection's one slot for it, so a request allocates no box for its future.
    pub fn call(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> impl Future<Output = Result<Response, Infallible>> + Send + use<> {
        let state = self.0.clone();
        async move { Ok(handle(&state, request).await) }
    }
}

/// Answers one request: the open health routes, `/metrics`, or the allow-listed forward. Gives it
/// an id (`x-request-id`), counts it and writes its access line once the response headers are ready.
///
/// Generic over the request body so that hyper's is read as it is, not boxed first.
pub async fn handle<B>(state: &AppState, request: http::Request<B>) -> Response
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let id = request_id(request.headers());
    let method = request.method().clone();
    let own = match request.uri().path() {
        "/health" => Some("/health"),
        "/livez" => Some("/livez"),
        "/readyz" => Some("/readyz"),
        "/metrics" => Some("/metrics"),
        _ => None,
    };
    let (route, mut response) = match own {
        Some(route) if method != Method::GET && method != Method::HEAD => {
            (route, own_answer(ProxyError::MethodNotAllowed { allow: "GET, HEAD" }.into_response()))
        }
        // Boxed: their futures are large and rare; inline they would make every request's future
        // (moved into place on each request) as large.
        Some("/health") => ("/health", own_answer(Box::pin(health::health(state)).await)),
        Some("/livez") => ("/livez", own_answer(health::livez())),
        Some("/readyz") => ("/readyz", own_answer(health::readyz(state))),
        Some(route) => (route, metrics_text(state, request.headers())),
        None => proxy::forward(state, request, &id).await,
    };
    let status = response.status().as_u16();
    state.metrics.record_request(route, status);
    let rejected = response.extensions().get::<Rejection>().map(|r| r.0);
    if let Some(reason) = rejected {
        state.metrics.record_rejection(reason);
    }
    logging::access(&logging::Access {
        request_id: id.to_str().unwrap_or_default(),
        method: method.as_str(),
        route,
        status,
        rejected,
        elapsed_us: started.elapsed().as_micros() as u64,
    });
    response.headers_mut().insert(&X_REQUEST_ID, id);
    response
}

/// `GET /metrics`: Prometheus text; needs a key like the forwarded routes.
fn metrics_text(state: &AppState, headers: &HeaderMap) -> Response {
    own_answer(match state.settings.api_keys.check(headers) {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            state.metrics.render(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    })
}

thread_local! {
    /// This thread's place in its sequence of request ids, from a random start.
    static ID_STATE: std::cell::Cell<u64> = std::cell::Cell::new(RandomState::new().hash_one(0u64));
}

/// The next request id of this thread: `SplitMix64` over a randomly seeded counter (a bijection,
/// so a thread never repeats one, and random starts keep threads apart) instead of `SipHash` per id.
fn next_id() -> u64 {
    let state = ID_STATE.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    ID_STATE.set(state);
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Reuses a well-formed incoming `x-request-id`, else makes a fresh one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let incoming = headers.get(&X_REQUEST_ID).filter(|v| {
        let bytes = v.as_bytes();
        (1..=64).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    if let Some(value) = incoming {
        return value.clone();
    }
    let hash = next_id();
    let mut hex = [0u8; 16];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(hash >> (60 - 4 * i) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    //! [`handle`] driven in process: no socket, no Ollama (it points at a closed port).
    use super::*;
    use axum::body::Body;
    use clap::Parser;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;

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
        let response = handle(&state(), request).await;
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
        let id = headers["x-request-id"].to_str().unwrap_or_default().to_owned();
        assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let (_, again, _) = call(get("/livez", None)).await;
        assert_ne!(again["x-request-id"], id.as_str(), "each request gets its own id");
    }

    #[tokio::test]
    async fn a_well_formed_incoming_request_id_is_kept() {
        let mut request = get("/livez", None);
        request.headers_mut().insert("x-request-id", http::HeaderValue::from_static("abc-123"));
        let (_, headers, _) = call(request).await;
        assert_eq!(headers["x-request-id"], "abc-123");
    }

    #[tokio::test]
    async fn own_routes_answer_only_get_and_head() {
        let mut request = get("/health", None);
        *request.method_mut() = http::Method::POST;
        let (status, headers, body) = call(request).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[http::header::ALLOW], "GET, HEAD");
        assert!(body.contains("GET, HEAD"), "{body}");
        let mut request = get("/livez", None);
        *request.method_mut() = http::Method::HEAD;
        assert_eq!(call(request).await.0, StatusCode::OK);
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
