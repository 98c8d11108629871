//! Forwarding: the fallback handler that checks a request and streams it to Ollama and back.
//!
//! Order of checks: key, path, declared size, free slot. Only then is Ollama contacted. Bodies are
//! streamed both ways; the in-flight slot is held until the response body ends or the client goes.

use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use http_body_util::{LengthLimitError, Limited};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;

use crate::body::{Guarded, IdleTimeout, IdleTimeoutError, caused_by};
use crate::error::ProxyError;
use crate::upstream::UpstreamError;
use crate::{AppState, route};

/// Headers that describe one hop, not the message, and never cross the proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// The fallback: every path that is not a route of the proxy's own comes here. Returns the route
/// label for metrics and logs (`unmatched` when the path is refused before it is known).
pub async fn forward(state: &AppState, request: Request, id: &HeaderValue) -> (&'static str, Response) {
    let mut label = "unmatched";
    let response = match forward_checked(state, request, id, &mut label).await {
        Ok(response) => response,
        Err(error) => {
            if matches!(error, ProxyError::UpstreamTimeout | ProxyError::UpstreamUnavailable) {
                let request_id = id.to_str().unwrap_or_default();
                tracing::warn!(request_id, route = label, error = %error, "upstream failed");
            }
            error.into_response()
        }
    };
    (label, response)
}

async fn forward_checked(
    state: &AppState,
    request: Request,
    id: &HeaderValue,
    label: &mut &'static str,
) -> Result<Response, ProxyError> {
    state.settings.api_keys.check(request.headers())?;
    let target = route::classify(request.uri().path(), state.settings.allow_admin)?;
    *label = target.label;
    let limit = state.settings.max_body_bytes;
    if declared_length(request.headers()).is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let slot = InFlight::take(state)?;
    let upstream_request = upstream_request(state, request, &target.path, id)?;
    let started = Instant::now();
    let sent = tokio::time::timeout(
        state.settings.upstream_timeout,
        state.pool.send(upstream_request, &state.settings.upstream),
    )
    .await;
    let response = match sent {
        Err(_) => return Err(ProxyError::UpstreamTimeout),
        Ok(Err(error)) => return Err(client_error(&error, limit, id)),
        Ok(Ok(response)) => response,
    };
    state.metrics.record_upstream_latency(target.label, started.elapsed());
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = IdleTimeout::new(body, state.settings.upstream_idle_timeout);
    Ok(Response::from_parts(parts, Body::new(Guarded::new(body, slot))))
}

/// Rebuilds the request for Ollama: canonical path, `Host` of the upstream, no client credentials.
fn upstream_request(
    state: &AppState,
    request: Request,
    path: &str,
    id: &HeaderValue,
) -> Result<http::Request<Body>, ProxyError> {
    let (parts, body) = request.into_parts();
    // Origin form: the connection is already to Ollama; `Host` says which one. When the checked
    // path is the one received and Ollama has no base path, the received path and query are reused.
    let uri = match parts.uri.path_and_query() {
        Some(received) if state.upstream_base_path.is_empty() && received.path() == path => {
            Uri::from(received.clone())
        }
        _ => {
            let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            let uri = format!("{}{path}{query}", state.upstream_base_path);
            uri.parse().map_err(|_| ProxyError::AmbiguousPath)?
        }
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    headers.insert(header::HOST, state.upstream_host.clone());
    headers.insert("x-request-id", id.clone());
    let body = if http_body::Body::is_end_stream(&body) {
        // No body (a GET, or `Content-Length: 0`): nothing to limit or time.
        Body::empty()
    } else {
        let limit = usize::try_from(state.settings.max_body_bytes).unwrap_or(usize::MAX);
        Body::new(IdleTimeout::new(Limited::new(body, limit), state.settings.body_timeout))
    };
    let mut upstream = http::Request::new(body);
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = uri;
    *upstream.headers_mut() = headers;
    Ok(upstream)
}

/// Maps a client failure to what the client did wrong, or to an upstream failure.
fn client_error(error: &UpstreamError, limit: u64, id: &HeaderValue) -> ProxyError {
    if caused_by::<LengthLimitError>(error) {
        ProxyError::BodyTooLarge { limit }
    } else if caused_by::<IdleTimeoutError>(error) {
        ProxyError::BodyReadTimeout
    } else {
        // The cause (refused, reset, DNS) goes to the log only.
        let request_id = id.to_str().unwrap_or_default();
        tracing::warn!(request_id, cause = ?error, "upstream request failed");
        ProxyError::UpstreamUnavailable
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// One upstream slot: released, and the in-flight gauge lowered, when dropped.
struct InFlight {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl InFlight {
    fn take(state: &AppState) -> Result<Self, ProxyError> {
        let permit =
            state.slots.clone().try_acquire_owned().map_err(|_| ProxyError::OverCapacity {
                retry_after_secs: state.settings.retry_after_secs,
            })?;
        let gauge = state.metrics.in_flight.clone();
        gauge.inc();
        Ok(Self { _permit: permit, gauge })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use http::HeaderValue;

    fn state(upstream: &str) -> AppState {
        let cli = crate::config::Cli::try_parse_from([
            "ollama-proxy",
            "--proxy-api-keys",
            "unit-test-key-0123456789",
            "--ollama-upstream",
            upstream,
        ]);
        match cli.map(|c| c.settings.validate()) {
            Ok(Ok(settings)) => AppState::new(settings),
            other => panic!("valid settings: {other:?}"),
        }
    }

    /// The request line Ollama would get for `uri` (as hyper's server hands it over).
    fn upstream_target(upstream: &str, uri: &str) -> String {
        let state = state(upstream);
        let request = http::Request::get(uri)
            .header(header::AUTHORIZATION, "Bearer unit-test-key-0123456789")
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let target = route::classify(request.uri().path(), false).unwrap_or_else(|e| panic!("{uri}: {e}"));
        let id = HeaderValue::from_static("unit-test");
        let sent = upstream_request(&state, request, &target.path, &id).unwrap_or_else(|e| panic!("{e}"));
        assert!(sent.headers().get(header::AUTHORIZATION).is_none(), "the client key stays here");
        assert_eq!(sent.headers()[header::HOST], state.upstream_host);
        assert_eq!(sent.headers()["x-request-id"], "unit-test");
        sent.uri().to_string()
    }

    #[test]
    fn ollama_gets_the_checked_path_in_origin_form_with_the_query() {
        let plain = "http://127.0.0.1:11434";
        assert_eq!(upstream_target(plain, "/api/tags"), "/api/tags");
        assert_eq!(upstream_target(plain, "/api/tags?x=1&y=%20"), "/api/tags?x=1&y=%20");
        // Absolute form from the client: only the path and query travel on.
        assert_eq!(upstream_target(plain, "http://evil.example/api/tags?a=1"), "/api/tags?a=1");
        // Percent-encoded letters: Ollama gets the decoded path that was checked.
        assert_eq!(upstream_target(plain, "/api/%74ags?x=1"), "/api/tags?x=1");
        // Behind a base path (a tunnel or another proxy).
        let based = "https://home.example/ollama/";
        assert_eq!(upstream_target(based, "/api/tags"), "/ollama/api/tags");
        assert_eq!(upstream_target(based, "/api/%74ags?x=1"), "/ollama/api/tags?x=1");
        assert_eq!(upstream_target(based, "/v1/models"), "/ollama/v1/models");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }
}
