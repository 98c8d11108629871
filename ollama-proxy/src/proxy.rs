//! Forwarding: the fallback handler that checks a request and sends it to Ollama, streaming back.
//!
//! Order of checks: key, method, path, transfer coding, declared size; then the body is read whole
//! (bounded in bytes, pauses and total time, against a shared memory budget), and only then is an
//! in-flight slot taken and Ollama contacted. So a client that sends its body slowly, or breaks its
//! chunked framing, holds no slot and reaches nothing upstream. The framing Ollama gets is rebuilt
//! from the body read (never the client's `Transfer-Encoding` or `Content-Length`), and the framing
//! the client gets is rebuilt from Ollama's decoded body. Responses are streamed; the slot is held
//! until the response body ends or the client goes.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Instant;

use axum::response::IntoResponse;
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::BodyExt;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;

use crate::body::{BoxError, Guarded, IdleTimeout, IdleTimeoutError, caused_by};
use crate::error::ProxyError;
use crate::pool::{self, Upstream, failure};
use crate::upstream::{PooledBody, RequestBody, UpstreamError};
use crate::{AppState, Response, ResponseBody, X_REQUEST_ID, own_answer, route};

/// Every header the proxy may remove from a message, a bit each (see [`bit`]): first the
/// headers that describe one hop, not the message, and never cross the proxy (RFC 9110 §7.6.1;
/// `Connection` is bit 0), then those of a request that are rebuilt rather than passed on: the
/// framing (set again from the body read), `Expect` (the body is already here) and the client's
/// key. `Host` is not among them: the request for a box always gets that box's (see
/// [`upstream_request`]), which replaces every `Host` the client sent.
static REMOVABLE: [HeaderName; 12] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::EXPECT,
    header::AUTHORIZATION,
];

/// The bits of the hop-by-hop headers in [`REMOVABLE`].
const HOP_BY_HOP: u32 = 0xff;
/// The bit of `Connection`.
const CONNECTION: u32 = 1;
/// The bit of `Content-Length`.
const CONTENT_LENGTH: u32 = 1 << 8;
/// The bit of `Transfer-Encoding`.
const TRANSFER_ENCODING: u32 = 1 << 9;
/// The bit of `Authorization`.
const AUTHORIZATION: u32 = 1 << 11;
/// The bits of the request headers rebuilt for Ollama: the framing, `Expect`, the key.
const REBUILT: u32 = CONTENT_LENGTH | TRANSFER_ENCODING | 1 << 10 | AUTHORIZATION;

/// `name`'s bit in [`REMOVABLE`], 0 for any other name: one `match` on the name's text rather
/// than a comparison with each of the twelve names (that was ~20 comparisons a header).
fn bit(name: &HeaderName) -> u32 {
    match name.as_str() {
        "connection" => CONNECTION,
        "keep-alive" => 1 << 1,
        "proxy-connection" => 1 << 2,
        "proxy-authenticate" => 1 << 3,
        "proxy-authorization" => 1 << 4,
        "te" => 1 << 5,
        "trailer" => 1 << 6,
        "upgrade" => 1 << 7,
        "content-length" => CONTENT_LENGTH,
        "transfer-encoding" => TRANSFER_ENCODING,
        "expect" => 1 << 10,
        "authorization" => AUTHORIZATION,
        _ => 0,
    }
}

/// The fallback: every path that is not a route of the proxy's own comes here. Returns the route
/// label for metrics and logs (`unmatched` when the path is refused before it is known).
pub async fn forward<B>(
    state: &AppState,
    request: http::Request<B>,
    id: &HeaderValue,
) -> (&'static str, Response)
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let mut label = "unmatched";
    let response = match forward_checked(state, request, id, &mut label).await {
        Ok(response) => response,
        Err(error) => {
            if matches!(error, ProxyError::UpstreamTimeout | ProxyError::UpstreamUnavailable) {
                let request_id = id.to_str().unwrap_or_default();
                tracing::warn!(request_id, route = label, error = %error, "upstream failed");
            }
            own_answer(error.into_response())
        }
    };
    (label, response)
}

async fn forward_checked<B>(
    state: &AppState,
    request: http::Request<B>,
    id: &HeaderValue,
    label: &mut &'static str,
) -> Result<Response, ProxyError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let (Parts { method, uri, headers, .. }, body) = request.into_parts();
    let found = Found::scan(&headers);
    state.settings.api_keys.check_credential(found.key)?;
    check_method(&method, state.settings.allow_admin)?;
    let target = route::classify(uri.path(), state.settings.allow_admin)?;
    *label = target.label;
    if !found.transfer_coding_ok() {
        return Err(ProxyError::UnsupportedTransferCoding);
    }
    let limit = state.settings.max_body_bytes;
    let declared = found.declared_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let (body, _held) = read_body(state, body, declared).await?;
    let remove = found.not_for_ollama();
    let slot = InFlight::take(state)?;
    let head = method == Method::HEAD;
    let started = Instant::now();
    let (response, lease) =
        send_to_pool(state, (&method, &uri, headers, remove), body, &target.path, id).await?;
    state.metrics.record_upstream_latency(target.label, started.elapsed());
    let (mut parts, body) = response.into_parts();
    // The client's hop is HTTP/1.1 whatever Ollama spoke (hyper's server writes the version it is
    // given: an HTTP/1.0 upstream's would reach the client).
    parts.version = http::Version::HTTP_11;
    let keep_length = head || parts.status == StatusCode::NOT_MODIFIED;
    response_headers(&mut parts.headers, keep_length);
    let body = IdleTimeout::new(body, state.settings.upstream_idle_timeout);
    let body = Forwarded { inner: Guarded::new(body, (slot, lease)) };
    Ok(Response::from_parts(parts, ResponseBody::Forwarded { body }))
}

pin_project_lite::pin_project! {
    /// Ollama's response body on its way to the client: cut when it pauses too long, and holding
    /// the request's in-flight slot and its lease on the box until it ends or the client goes.
    pub struct Forwarded {
        #[pin]
        inner: Guarded<IdleTimeout<PooledBody>, (InFlight, Lease)>,
    }
}

impl http_body::Body for Forwarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What became of a try that may move to another box.
enum Failed {
    /// Nothing reached the box, or it broke the connection before any byte of a response.
    Unreachable,
    /// It answered 503: its queue is full, it did not start on the request.
    Busy(Box<http::Response<PooledBody>>),
}

/// Sends the request to the best box of the pool (see `pool`), and to another one only when the
/// first never started on it (refused, closed or reset before any byte of a response, or 503
/// busy; never a response that is malformed or badly framed: it did answer), nothing has been
/// sent to the client yet, `MAX_TRIES` is not reached and the pool-wide retry budget allows it.
/// Once response headers are taken, the answer is the client's: a stream that breaks later is
/// never sent again.
async fn send_to_pool(
    state: &AppState,
    (method, uri, mut headers, remove): (&Method, &Uri, HeaderMap, u32),
    body: Bytes,
    path: &str,
    id: &HeaderValue,
) -> Result<(http::Response<PooledBody>, Lease), ProxyError> {
    let pool = &state.upstreams;
    let several = pool.len() > 1;
    // The model matters only when there is a choice; a pool of one never parses the body.
    let model = if several && !body.is_empty() { pool::requested_model(&body) } else { None };
    if several {
        pool.budget.record_request(pool.now_ms());
    }
    let max_tries = state.settings.max_tries.min(pool.len());
    remove_found(&mut headers, remove);
    headers.insert(&X_REQUEST_ID, id.clone());
    let mut index = pool.choose(model.as_deref(), 0, false).ok_or(ProxyError::UpstreamUnavailable)?;
    let (mut tried, mut attempts) = (0u64, 0);
    loop {
        tried |= 1 << index;
        attempts += 1;
        let last = attempts >= max_tries;
        let upstream = pool.get(index);
        // The headers are kept for another try only while one is possible.
        let these = if last { std::mem::take(&mut headers) } else { headers.clone() };
        let request = upstream_request(upstream, method, uri, these, body.clone(), path)?;
        let lease = Lease::take(upstream);
        let sent =
            state.connections[index].send(request, &upstream.uri, state.settings.upstream_timeout).await;
        let failed = match sent {
            Err(UpstreamError::Timeout) => {
                // It may be working on it: never sent again.
                pool.eject(index, failure::TIMEOUT);
                return Err(ProxyError::UpstreamTimeout);
            }
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                // A full queue: the box rests for its back-off (its load moves to the others,
                // and a pool-wide overload is then capped by the retry budget).
                pool.eject(index, failure::BUSY);
                Failed::Busy(Box::new(response))
            }
            Ok(response) => {
                if response.status().is_server_error() {
                    pool.eject(index, failure::SERVER_ERROR);
                }
                return Ok((response, lease));
            }
            Err(UpstreamError::BadResponse(error)) => {
                // It answered: it may have started on the request, so it is never sent again.
                let request_id = id.to_str().unwrap_or_default();
                tracing::warn!(request_id, upstream = upstream.label, cause = ?error, "upstream answered badly");
                pool.eject(index, failure::BAD_RESPONSE);
                return Err(ProxyError::UpstreamUnavailable);
            }
            Err(error) => {
                // The cause (refused, reset, DNS) goes to the log only.
                let request_id = id.to_str().unwrap_or_default();
                tracing::warn!(request_id, upstream = upstream.label, cause = ?error, "upstream request failed");
                let cause = match error {
                    UpstreamError::Connect(_) => failure::REFUSED,
                    UpstreamError::Exchange(_) | UpstreamError::Timeout | UpstreamError::BadResponse(_) => {
                        failure::RESET
                    }
                };
                pool.eject(index, cause);
                Failed::Unreachable
            }
        };
        let next = if last { None } else { pool.choose(model.as_deref(), tried, true) };
        if let Some(next) = next {
            if pool.budget.try_retry(pool.now_ms()) {
                state.metrics.retries.inc();
                index = next;
                continue;
            }
            state.metrics.retries_refused.inc();
        }
        return match failed {
            Failed::Busy(response) => Ok((*response, lease)),
            Failed::Unreachable => Err(ProxyError::UpstreamUnavailable),
        };
    }
}

/// Forwarded methods: GET, HEAD and POST are all Ollama's inference and read routes use; DELETE
/// only when model management is on (`DELETE /api/delete`). CONNECT, TRACE, OPTIONS and
/// unknown methods are refused with the list in `Allow`.
pub fn check_method(method: &Method, allow_admin: bool) -> Result<(), ProxyError> {
    if *method == Method::GET || *method == Method::POST || *method == Method::HEAD {
        return Ok(());
    }
    if allow_admin && *method == Method::DELETE {
        return Ok(());
    }
    let allow = if allow_admin { "GET, HEAD, POST, DELETE" } else { "GET, HEAD, POST" };
    Err(ProxyError::MethodNotAllowed { allow })
}

/// Whether the request's transfer coding is one the proxy decodes: none, or a single `chunked`
/// (hyper's server decodes it; `gzip, chunked` would leave a gzip body that nothing here undoes).
#[must_use]
pub fn transfer_coding_ok(headers: &HeaderMap) -> bool {
    Found::scan(headers).transfer_coding_ok()
}

/// What one pass over a message's headers found: the [`REMOVABLE`] names it carries, a bit each,
/// and the values the checks read (the first of each name, as `HeaderMap::get` gives). The checks
/// used to look each one up by hash, and the removal then scanned the headers again.
struct Found<'h> {
    present: u32,
    key: Option<&'h HeaderValue>,
    length: Option<&'h HeaderValue>,
    coding: Option<&'h HeaderValue>,
    codings: usize,
}

impl<'h> Found<'h> {
    fn scan(headers: &'h HeaderMap) -> Self {
        let mut found = Self { present: 0, key: None, length: None, coding: None, codings: 0 };
        for (name, value) in headers {
            let bit = bit(name);
            found.present |= bit;
            match bit {
                CONTENT_LENGTH => {
                    found.length.get_or_insert(value);
                }
                TRANSFER_ENCODING => {
                    found.codings += 1;
                    found.coding.get_or_insert(value);
                }
                AUTHORIZATION => {
                    found.key.get_or_insert(value);
                }
                _ => {}
            }
        }
        found
    }

    /// See [`transfer_coding_ok`].
    fn transfer_coding_ok(&self) -> bool {
        match (self.codings, self.coding) {
            (0, _) => true,
            (1, Some(value)) => value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"),
            _ => false,
        }
    }

    /// The length the client declared (its first `Content-Length`), if it is a number.
    fn declared_length(&self) -> Option<u64> {
        self.length.and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    }

    /// The bits of what must not reach Ollama as sent (see [`upstream_headers`]).
    fn not_for_ollama(&self) -> u32 {
        self.present & (HOP_BY_HOP | REBUILT)
    }
}

/// Bytes of request bodies held in memory, counted against `PROXY_BODY_BUFFER_BYTES` until dropped.
struct Held<'a> {
    total: &'a AtomicU64,
    bytes: u64,
}

impl Held<'_> {
    /// Counts `more` bytes, unless that would pass `budget`.
    fn grow(&mut self, more: u64, budget: u64) -> bool {
        let before = self.total.fetch_add(more, Ordering::Relaxed);
        if before + more > budget {
            self.total.fetch_sub(more, Ordering::Relaxed);
            return false;
        }
        self.bytes += more;
        true
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Reads the whole request body before anything upstream is touched: at most
/// `PROXY_MAX_BODY_BYTES` (413), pauses under `PROXY_BODY_TIMEOUT_MS` and all of it within
/// `PROXY_BODY_DEADLINE_MS` (408), broken framing 400, and no more than `PROXY_BODY_BUFFER_BYTES`
/// held by all requests together (503). A declared length is counted at once.
async fn read_body<B>(
    state: &AppState,
    body: B,
    declared: Option<u64>,
) -> Result<(Bytes, Held<'_>), ProxyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut held = Held { total: &state.buffered_body_bytes, bytes: 0 };
    if http_body::Body::is_end_stream(&body) {
        return Ok((Bytes::new(), held));
    }
    let settings = &state.settings;
    let full = ProxyError::BodyBufferFull { retry_after_secs: settings.retry_after_secs };
    if let Some(length) = declared
        && !held.grow(length, settings.body_buffer_bytes)
    {
        return Err(full);
    }
    let read = async {
        let mut body = pin!(IdleTimeout::new(body, settings.body_timeout));
        // Most bodies come in one frame: that one is kept as it is; more are joined.
        let mut first = Bytes::new();
        let mut joined: Option<BytesMut> = None;
        let mut length = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                if caused_by::<IdleTimeoutError>(&*error) {
                    ProxyError::BodyReadTimeout
                } else {
                    ProxyError::MalformedBody
                }
            })?;
            // Trailers of a chunked body are dropped: Ollama reads none.
            let Ok(data) = frame.into_data() else { continue };
            length += data.len() as u64;
            if length > settings.max_body_bytes {
                return Err(ProxyError::BodyTooLarge { limit: settings.max_body_bytes });
            }
            if declared.is_none() && !held.grow(data.len() as u64, settings.body_buffer_bytes) {
                return Err(ProxyError::BodyBufferFull { retry_after_secs: settings.retry_after_secs });
            }
            if let Some(joined) = joined.as_mut() {
                joined.extend_from_slice(&data);
            } else if first.is_empty() {
                first = data;
            } else {
                let capacity = declared.unwrap_or(length).min(settings.max_body_bytes) as usize;
                let mut both = BytesMut::with_capacity(capacity);
                both.extend_from_slice(&first);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
        Ok(joined.map_or(first, BytesMut::freeze))
    };
    let deadline = tokio::time::Instant::now() + settings.body_deadline;
    let read = {
        let mut read = pin!(read);
        // Most bodies are all there at once: the deadline's timer is made only for one that is not.
        match poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
            Poll::Ready(read) => read,
            Poll::Pending => {
                tokio::time::timeout_at(deadline, read).await.map_err(|_| ProxyError::BodyReadTimeout)?
            }
        }
    };
    read.map(|bytes| (bytes, held))
}

/// Builds the request for one box: canonical path under its base path, its `Host` and token,
/// framing from the body read. `headers` are the client's, already cleaned by [`upstream_headers`].
fn upstream_request(
    upstream: &Upstream,
    method: &Method,
    received: &Uri,
    mut headers: HeaderMap,
    body: Bytes,
    path: &str,
) -> Result<http::Request<RequestBody>, ProxyError> {
    // Origin form: the connection is already to Ollama; `Host` says which one. When the checked
    // path is the one received and Ollama has no base path, the received path and query are reused.
    let uri = match received.path_and_query() {
        Some(received) if upstream.base_path.is_empty() && received.path() == path => {
            Uri::from(received.clone())
        }
        _ => {
            let query = received.query().map(|q| format!("?{q}")).unwrap_or_default();
            let uri = format!("{}{path}{query}", upstream.base_path);
            uri.parse().map_err(|_| ProxyError::AmbiguousPath)?
        }
    };
    headers.insert(header::HOST, upstream.host.clone());
    if let Some(token) = &upstream.token {
        headers.insert(header::AUTHORIZATION, token.clone());
    }
    // The body's length is written as `Content-Length` (none for an empty GET).
    let mut request = http::Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Removes from the client's headers what must not reach Ollama as sent: hop-by-hop headers
/// (and those `Connection` names), the framing, `Expect` and the key (`Host` is replaced later).
/// The framing Ollama gets is the body's own, written by [`crate::h1::encode_request`].
pub fn upstream_headers(headers: &mut HeaderMap) {
    let remove = Found::scan(headers).not_for_ollama();
    remove_found(headers, remove);
}

/// Normalises Ollama's response framing: the upstream client has already decoded the body (with
/// both `Transfer-Encoding` and `Content-Length`, the transfer coding wins, RFC 9112 §6.3), so both
/// headers go and hyper's server frames the body again for the client from what it really is
/// (`crate::h1` leaves them out of a response with a body already). A reply to
/// HEAD, or a 304, has no body: its `Content-Length` describes the resource and is kept, unless a
/// transfer coding made it meaningless.
pub fn response_headers(headers: &mut HeaderMap, keep_length: bool) {
    let present = Found::scan(headers).present;
    let framing = if keep_length && present & TRANSFER_ENCODING == 0 {
        TRANSFER_ENCODING
    } else {
        TRANSFER_ENCODING | CONTENT_LENGTH
    };
    remove_found(headers, present & (HOP_BY_HOP | framing));
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
#[cfg(test)]
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let present = Found::scan(headers).present;
    remove_found(headers, present & HOP_BY_HOP);
}

/// Removes the [`REMOVABLE`] names whose bits are set in `remove` (found by [`Found::scan`], so a
/// message pays a hashed removal only for what it carries: a request, its key and maybe its
/// length), and those the `Connection` header names when its bit is set.
fn remove_found(headers: &mut HeaderMap, remove: u32) {
    if remove & CONNECTION != 0 {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::try_from(name.trim()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    let mut rest = remove;
    while rest != 0 {
        headers.remove(&REMOVABLE[rest.trailing_zeros() as usize]);
        rest &= rest - 1;
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

/// One try in flight at one box: counted in its `requests` and `in_flight` (which routing
/// reads); the gauge is lowered when dropped, so a stream counts until it ends.
struct Lease(Gauge);

impl Lease {
    fn take(upstream: &Upstream) -> Self {
        upstream.metrics.requests.inc();
        upstream.metrics.in_flight.inc();
        Self(upstream.metrics.in_flight.clone())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.dec();
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
            .header(header::HOST, "evil.example")
            .body(axum::body::Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let id = HeaderValue::from_static("unit-test");
        let (mut parts, _) = request.into_parts();
        let target = route::classify(parts.uri.path(), false).unwrap_or_else(|e| panic!("{uri}: {e}"));
        upstream_headers(&mut parts.headers);
        parts.headers.insert(&X_REQUEST_ID, id);
        let upstream = state.upstreams.get(0);
        let sent =
            upstream_request(upstream, &parts.method, &parts.uri, parts.headers, Bytes::new(), &target.path)
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(sent.headers().get(header::AUTHORIZATION).is_none(), "the client key stays here");
        assert_eq!(sent.headers().get_all(header::HOST).iter().collect::<Vec<_>>(), [&upstream.host]);
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
    fn each_removable_name_has_its_own_bit() {
        for (i, name) in REMOVABLE.iter().enumerate() {
            assert_eq!(bit(name), 1 << i, "{name}");
        }
        assert_eq!(bit(&header::HOST), 0);
        assert_eq!(bit(&header::CONTENT_TYPE), 0);
        assert_eq!(bit(&HeaderName::from_static("x-request-id")), 0);
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

    #[test]
    fn the_clients_framing_expect_and_key_never_go_upstream() {
        let mut headers = HeaderMap::new();
        headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip, chunked"));
        headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        upstream_headers(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), [header::CONTENT_TYPE]);
    }

    #[test]
    fn the_length_ollama_gets_is_the_body_read_whatever_the_client_said() {
        let sent = |method: Method, lengths: &[&'static str], chunked: bool, read: usize| {
            let mut headers = HeaderMap::new();
            for length in lengths {
                headers.append(header::CONTENT_LENGTH, HeaderValue::from_static(length));
            }
            if chunked {
                headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            }
            upstream_headers(&mut headers);
            let mut head = Vec::new();
            crate::h1::encode_request(&mut head, &method, &Uri::from_static("/api/chat"), &headers, read);
            String::from_utf8_lossy(&head).into_owned()
        };
        for (lengths, chunked, read) in [
            (&["92"][..], false, 92),
            (&["92"][..], true, 92),
            (&["92", "92"][..], false, 92),
            (&["91"][..], false, 92),
            (&["092"][..], false, 92),
            (&["+92"][..], false, 92),
            (&[][..], true, 92),
        ] {
            let head = sent(Method::POST, lengths, chunked, read);
            assert_eq!(
                head, "POST /api/chat HTTP/1.1\r\ncontent-length: 92\r\n\r\n",
                "{lengths:?} {chunked}"
            );
        }
        // A POST says its length even when empty, however the client framed it; a GET does not.
        for (lengths, chunked) in
            [(&["0"][..], false), (&["00"][..], false), (&[][..], true), (&[][..], false)]
        {
            let head = sent(Method::POST, lengths, chunked, 0);
            assert_eq!(head, "POST /api/chat HTTP/1.1\r\ncontent-length: 0\r\n\r\n", "{lengths:?} {chunked}");
            assert_eq!(sent(Method::GET, lengths, chunked, 0), "GET /api/chat HTTP/1.1\r\n\r\n");
        }
    }

    #[test]
    fn only_a_single_chunked_transfer_coding_is_accepted() {
        let coded = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            transfer_coding_ok(&headers)
        };
        assert!(coded(&[]));
        assert!(coded(&["chunked"]));
        assert!(coded(&["Chunked "]));
        assert!(!coded(&["gzip, chunked"]));
        assert!(!coded(&["chunked", "chunked"]));
        assert!(!coded(&["chunked, chunked"]));
        assert!(!coded(&["identity"]));
    }

    #[test]
    fn only_get_head_post_are_forwarded_and_delete_only_for_admin() {
        for method in [Method::GET, Method::HEAD, Method::POST] {
            assert!(check_method(&method, false).is_ok(), "{method}");
        }
        for method in ["CONNECT", "TRACE", "OPTIONS", "PUT", "PATCH", "DELETE", "BREW"] {
            let method = Method::from_bytes(method.as_bytes()).unwrap_or_default();
            let refused = check_method(&method, false);
            assert!(
                matches!(refused, Err(ProxyError::MethodNotAllowed { allow: "GET, HEAD, POST" })),
                "{method}"
            );
        }
        assert!(check_method(&Method::DELETE, true).is_ok());
    }

    #[test]
    fn a_reply_with_both_lengths_loses_both_and_is_framed_again() {
        let mut headers = HeaderMap::new();
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        response_headers(&mut headers, true);
        assert!(headers.is_empty());
        let mut head = HeaderMap::new();
        head.insert(header::CONTENT_LENGTH, HeaderValue::from_static("120"));
        response_headers(&mut head, true);
        assert_eq!(head[header::CONTENT_LENGTH], "120", "a HEAD reply keeps its length");
    }
}
