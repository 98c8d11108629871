//! The one error type the proxy answers with, and its mapping to HTTP.
//!
//! Every refusal and upstream failure is a [`ProxyError`]; [`ProxyError::status_code`] is the single
//! place that decides the HTTP status. Clients get RFC 9457 `application/problem+json` whose text
//! comes from the variant's message only: internal details (socket errors, upstream addresses) are
//! logged, never returned.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Why a request was refused or could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No bearer token, or one that matches no configured key.
    #[error("a valid bearer token is required: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// A model-management route while `PROXY_ALLOW_ADMIN` is off.
    #[error("model-management routes are disabled on this proxy")]
    AdminRouteForbidden,
    /// A path outside the allow-list.
    #[error("no such route on this proxy")]
    NotFound,
    /// A method the route does not answer (`/health` and co.: GET and HEAD; forwarded routes: GET,
    /// HEAD, POST, and DELETE when model management is enabled).
    #[error("this route only answers {allow}")]
    MethodNotAllowed {
        /// The methods it answers, as sent in `Allow`.
        allow: &'static str,
    },
    /// A `Transfer-Encoding` other than a single `chunked` (RFC 9112 §6.1: 501).
    #[error("only `Transfer-Encoding: chunked` is supported for request bodies")]
    UnsupportedTransferCoding,
    /// The request body's framing is broken (a bad chunk size, a connection cut mid-body).
    #[error("the request body is malformed: check its chunked framing or Content-Length")]
    MalformedBody,
    /// A path whose meaning depends on how it is decoded (encoded slashes, dot segments, `//`).
    #[error(
        "the request path is ambiguous: use a plain path without encoded separators, dot segments or empty segments"
    )]
    AmbiguousPath,
    /// The request body is over `PROXY_MAX_BODY_BYTES`.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit in bytes.
        limit: u64,
    },
    /// The client stopped sending its body for longer than the read timeout.
    #[error("the request body was not received in time")]
    BodyReadTimeout,
    /// Every upstream slot is taken.
    #[error("too many requests in flight; retry after {retry_after_secs} s")]
    OverCapacity {
        /// Seconds to put in `Retry-After`.
        retry_after_secs: u64,
    },
    /// The request bodies held in memory already fill `PROXY_BODY_BUFFER_BYTES`.
    #[error("too many request bodies being received; retry after {retry_after_secs} s")]
    BodyBufferFull {
        /// Seconds to put in `Retry-After`.
        retry_after_secs: u64,
    },
    /// Ollama did not send response headers before the upstream timeout.
    #[error("Ollama did not answer in time")]
    UpstreamTimeout,
    /// Ollama could not be reached or broke the connection.
    #[error("Ollama could not be reached")]
    UpstreamUnavailable,
}

impl ProxyError {
    /// The HTTP status for this error: the only place that decides it.
    #[must_use]
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::AdminRouteForbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            Self::AmbiguousPath | Self::MalformedBody => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyReadTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::OverCapacity { .. } | Self::BodyBufferFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `reason` label of `ollama_proxy_rejected_total` for this error.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::AdminRouteForbidden => "admin_route",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::UnsupportedTransferCoding => "unsupported_transfer_coding",
            Self::MalformedBody => "malformed_body",
            Self::AmbiguousPath => "ambiguous_path",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyReadTimeout => "body_read_timeout",
            Self::OverCapacity { .. } => "over_capacity",
            Self::BodyBufferFull { .. } => "body_buffer_full",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamUnavailable => "upstream_error",
        }
    }
}

/// The marker a rejected response carries so `handle` can count and log it by reason.
#[derive(Debug, Clone, Copy)]
pub struct Rejection(pub &'static str);

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match &self {
            Self::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"ollama-proxy\""),
                );
            }
            Self::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::OverCapacity { retry_after_secs } | Self::BodyBufferFull { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response.extensions_mut().insert(Rejection(self.reason()));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_carries_www_authenticate_and_problem_json() {
        let response = ProxyError::Unauthorized.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers()[header::WWW_AUTHENTICATE].to_str().is_ok_and(|v| v.starts_with("Bearer")));
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    }

    #[test]
    fn over_capacity_carries_retry_after() {
        let response = ProxyError::OverCapacity { retry_after_secs: 3 }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }
}
