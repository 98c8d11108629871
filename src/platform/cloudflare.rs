//! Cloudflare Workers adapter: the `#[event(fetch)]` entry, request/response conversion,
//! configuration from the Worker's vars and secrets, and the [`Platform`] seam over D1 and `fetch`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use worker::js_sys::{Date, Math, Reflect};
use worker::wasm_bindgen::JsValue;
use worker::{
    AbortController, Context, D1Database, D1PreparedStatement, D1Result, Delay, Env, Fetch, Headers, Method,
    RateLimiter, Request, RequestInit, Response, console_error, console_log, event,
};

use crate::core::Config;
use crate::core::api::{MAX_BODY_BYTES, body_worth_reading};
use crate::core::ask;
use crate::core::asker::ClientAddress;
use crate::core::domain::Provider;
use crate::core::seam::{
    BodyStream, DbError, FetchError, MAX_UPSTREAM_BYTES, Platform, Row, SqlValue, Statement, cap_body,
    read_capped, with_deadline,
};

#[event(fetch)]
async fn fetch(request: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let mut request = into_http(request).await?;
    // Cloudflare sets CF-Connecting-IP to the client's address (and replaces one a client sends);
    // `wrangler dev` sets it only when the client sent none, which lets tests act as many askers.
    if let Some(address) = request.headers().get("cf-connecting-ip").and_then(|v| v.to_str().ok()) {
        let address = ClientAddress(address.to_owned());
        request.extensions_mut().insert(address);
    }
    let config = Config::from_lookup(|name| var(&env, name));
    let platform = Rc::new(Workers {
        db: env.d1("DB").ok(),
        groq_minute: env.rate_limiter("GROQ_MINUTE").ok(),
        meter: var(&env, "LOG_D1_ROWS").is_some_and(|v| v == "1").then(D1Meter::default),
    });
    let handled = crate::core::handle(&platform, config.as_ref(), &request).await;
    let id = handled.after.consultation().map_or("-", |c| c.id.as_str()).to_owned();
    platform.log_meter("ask", &id);
    // Pages, health and metrics leave nothing to do after the response: no task for them.
    if !matches!(handled.after, ask::After::Nothing) {
        ctx.wait_until(async move {
            ask::after_response(&platform, handled.after).await;
            platform.log_meter("record", &id);
        });
    }
    match handled.events {
        // A streamed answer: each event is sent as it is ready.
        Some(events) => {
            let body = Response::from_stream(events.map(Ok::<Vec<u8>, worker::Error>))?;
            Ok(body
                .with_status(handled.response.status().as_u16())
                .with_headers(js_headers(handled.response.headers())?))
        }
        None => from_http(handled.response),
    }
}

/// A var or secret as text; numbers in `[vars]` are accepted too.
fn var(env: &Env, name: &str) -> Option<String> {
    let value = Reflect::get(env, &JsValue::from_str(name)).ok()?;
    value.as_string().or_else(|| value.as_f64().map(|n| n.to_string()))
}

/// The seam over a Worker's D1 binding, its Groq minute limiter and global `fetch`.
struct Workers {
    db: Option<D1Database>,
    /// `[[ratelimits]] GROQ_MINUTE` in `wrangler.toml`: Groq's minute counted with no D1 write.
    groq_minute: Option<RateLimiter>,
    /// With `LOG_D1_ROWS=1` (the benchmark): D1's own `meta` summed per request.
    meter: Option<D1Meter>,
}

/// Rows read and written and round trips, from D1's per-statement `meta`.
#[derive(Default)]
struct D1Meter {
    rows_read: Cell<usize>,
    rows_written: Cell<usize>,
    round_trips: Cell<usize>,
}

impl Workers {
    fn database(&self) -> Result<&D1Database, DbError> {
        self.db.as_ref().ok_or_else(|| DbError("the D1 binding DB is missing".into()))
    }

    fn prepare(&self, sql: &str, params: &[SqlValue]) -> Result<D1PreparedStatement, DbError> {
        let params: Vec<JsValue> = params.iter().map(to_js).collect();
        self.database()?.prepare(sql).bind(&params).map_err(DbError::from_platform)
    }

    /// Adds a round trip's results to the meter, when metering.
    fn metered(&self, results: &[D1Result]) {
        let Some(meter) = &self.meter else { return };
        meter.round_trips.set(meter.round_trips.get() + 1);
        for meta in results.iter().filter_map(|r| r.meta().ok().flatten()) {
            meter.rows_read.set(meter.rows_read.get() + meta.rows_read.unwrap_or(0));
            meter.rows_written.set(meter.rows_written.get() + meta.rows_written.unwrap_or(0));
        }
    }

    /// Logs and resets the meter: one line per phase of a request, named by its consultation.
    fn log_meter(&self, phase: &str, id: &str) {
        let Some(meter) = &self.meter else { return };
        let (read, written, trips) =
            (meter.rows_read.take(), meter.rows_written.take(), meter.round_trips.take());
        console_log!("d1 {phase} {id}: round_trips={trips} rows_read={read} rows_written={written}");
    }
}

impl Platform for Workers {
    async fn fetch(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<http::Response<Vec<u8>>, FetchError> {
        let controller = AbortController::default();
        let signal = controller.signal();
        let exchange = async {
            let request = outbound(request)?;
            let mut response = Fetch::Request(request).send_with_signal(&signal).await?;
            let builder = head_of(&response);
            let body = read_capped(&mut response.stream()?, MAX_UPSTREAM_BYTES).await?;
            builder.body(body).map_err(|e| worker::Error::RustError(e.to_string()))
        };
        // The deadline covers headers and body alike; aborting also stops a slow drip.
        let deadline = Delay::from(Duration::from_millis(u64::from(timeout_ms)));
        if let Some(result) = with_deadline(exchange, deadline).await {
            result.map_err(FetchError::network)
        } else {
            controller.abort();
            Err(FetchError::Timeout(timeout_ms))
        }
    }

    async fn fetch_streaming(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<http::Response<BodyStream>, FetchError> {
        let controller = AbortController::default();
        let signal = controller.signal();
        let head = async {
            let request = outbound(request)?;
            Fetch::Request(request).send_with_signal(&signal).await
        };
        // The deadline covers the status and headers; the core times each piece of the body.
        let deadline = Delay::from(Duration::from_millis(u64::from(timeout_ms)));
        let Some(head) = with_deadline(head, deadline).await else {
            controller.abort();
            return Err(FetchError::Timeout(timeout_ms));
        };
        let mut response = head.map_err(FetchError::network)?;
        let builder = head_of(&response);
        let stream = response.stream().map_err(FetchError::network)?;
        // Dropping the body aborts the request: no more tokens are read or paid for.
        let abort = AbortOnDrop(Some(controller));
        let body = stream.map(move |piece| {
            let _keep = &abort;
            piece.map_err(FetchError::network)
        });
        builder.body(cap_body(body.boxed_local())).map_err(FetchError::network)
    }

    async fn sleep(&self, ms: u64) {
        Delay::from(Duration::from_millis(ms)).await;
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError> {
        let result = self.prepare(sql, params)?.all().await.map_err(DbError::from_platform)?;
        self.metered(std::slice::from_ref(&result));
        result.results::<Row>().map_err(DbError::from_platform)
    }

    async fn batch(&self, statements: &[Statement]) -> Result<Vec<Vec<Row>>, DbError> {
        let prepared = statements.iter().map(|s| self.prepare(s.sql, &s.params)).collect::<Result<_, _>>()?;
        let results = self.database()?.batch(prepared).await.map_err(DbError::from_platform)?;
        self.metered(&results);
        results.iter().map(|r| r.results::<Row>().map_err(DbError::from_platform)).collect()
    }

    async fn minute_slot(&self, provider: Provider) -> Option<bool> {
        let limiter = self.groq_minute.as_ref().filter(|_| provider == Provider::Groq)?;
        // A limiter that fails lets the call go: a 429 from Groq would still cool it down.
        Some(limiter.limit(provider.as_str().to_owned()).await.map_or(true, |outcome| outcome.success))
    }

    fn now_ms(&self) -> u64 {
        Date::now() as u64
    }

    fn random_u64(&self) -> u64 {
        let half = || (Math::random() * f64::from(u32::MAX)) as u64;
        (half() << 32) | half()
    }

    fn log_error(&self, message: &str) {
        console_error!("{message}");
    }
}

/// An upstream response's status and headers, as `http` types.
fn head_of(response: &Response) -> http::response::Builder {
    let mut builder = http::Response::builder().status(response.status_code());
    for (name, value) in response.headers().entries() {
        builder = builder.header(name, value);
    }
    builder
}

/// Aborts a request when the body reading it is dropped.
struct AbortOnDrop(Option<AbortController>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(controller) = self.0.take() {
            controller.abort();
        }
    }
}

fn to_js(value: &SqlValue) -> JsValue {
    match value {
        SqlValue::Null => JsValue::NULL,
        // Milliseconds and counts stay far below 2^53, where f64 is exact.
        SqlValue::Integer(n) => JsValue::from_f64(*n as f64),
        SqlValue::Text(text) => JsValue::from_str(text),
    }
}

/// The `http` headers as a `Headers` object (values that are not visible ASCII are left out).
fn js_headers(map: &http::HeaderMap) -> worker::Result<Headers> {
    let headers = Headers::new();
    for (name, value) in map {
        if let Ok(value) = value.to_str() {
            headers.append(name.as_str(), value)?;
        }
    }
    Ok(headers)
}

fn outbound(request: http::Request<Vec<u8>>) -> worker::Result<Request> {
    let (parts, body) = request.into_parts();
    let mut init = RequestInit::new();
    init.with_method(Method::from(parts.method.to_string())).with_headers(js_headers(&parts.headers)?);
    if !body.is_empty() {
        init.with_body(Some(worker::js_sys::Uint8Array::from(body.as_slice()).into()));
    }
    Request::new_with_init(&parts.uri.to_string(), &init)
}

/// The incoming request as `http` types; a body declared larger than the limit is not read.
async fn into_http(mut request: Request) -> worker::Result<http::Request<Vec<u8>>> {
    // The method as sent: workers-rs's `Method` turns any method it does not know (QUERY, FOO) into
    // GET, which would answer them as if they were GETs instead of 405.
    let method = request.inner().method();
    let mut builder = http::Request::builder().method(method.as_str()).uri(request.url()?.as_str());
    for (name, value) in request.headers().entries() {
        builder = builder.header(name, value);
    }
    let has_body = !matches!(request.method(), Method::Get | Method::Head | Method::Options);
    let body = if has_body && builder.headers_ref().is_some_and(body_worth_reading) {
        // Chunked bodies have no declared length: keep one byte past the limit at most, so a huge
        // upload is a 413 and not an isolate out of memory. The rest is drained, not stored: an
        // unread body left behind breaks the next request on the connection under `wrangler dev`.
        match request.stream() {
            Ok(mut stream) => {
                let body = read_capped(&mut stream, MAX_BODY_BYTES).await.unwrap_or_default();
                while let Some(Ok(_)) = stream.next().await {}
                body
            }
            Err(_) => Vec::new(),
        }
    } else {
        Vec::new()
    };
    builder.body(body).map_err(|e| worker::Error::RustError(e.to_string()))
}

fn from_http(response: http::Response<Vec<u8>>) -> worker::Result<Response> {
    let (parts, body) = response.into_parts();
    // A null body, not an empty one: 204 responses may not have a body at all.
    let response = if body.is_empty() { Response::empty()? } else { Response::from_bytes(body)? };
    Ok(response.with_status(parts.status.as_u16()).with_headers(js_headers(&parts.headers)?))
}
