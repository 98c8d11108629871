//! Fermyon Spin adapter (`wasm32-wasip2`, `wasi:http@0.3.0`): the `#[http_service]` entry,
//! request/response conversion, configuration from Spin variables, and the [`Platform`] seam over
//! Spin's `sqlite` interface and outbound HTTP.

use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::StreamBody;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, IntoResponse, Request};
use spin_sdk::http_service;
use spin_sdk::key_value;
use spin_sdk::sqlite::{Connection, Value};
use spin_sdk::wasip3::clocks::system_clock;
use spin_sdk::wasip3::random::insecure;

use crate::core::Config;
use crate::core::api::{MAX_BODY_BYTES, body_worth_reading};
use crate::core::ask;
use crate::core::asker::ClientAddress;
use crate::core::config::{ConfigError, VARIABLES};
use crate::core::pages;
use crate::core::seam::{
    BodyStream, DbError, FetchError, MAX_UPSTREAM_BYTES, Platform, Row, SqlValue, Store, cap_body,
    read_capped, with_deadline,
};

#[http_service]
async fn serve(request: Request) -> impl IntoResponse {
    let request = into_http(request).await;
    // Spin has no static assets: the board and docs are embedded and answered first, like
    // Workers static assets, for the same paths.
    if let Some(page) = pages::serve(&request) {
        return page.map(|body| FullBody::new(Bytes::from(body))).into_response();
    }
    let mut request = request;
    // Spin's HTTP trigger appends spin-client-addr (the connection's ip:port) after the headers the
    // client sent, so the last value is Spin's and a client cannot choose its asker by sending one.
    // spin-host adds none and passes the client's, which lets tests act as many askers.
    let last = request.headers().get_all("spin-client-addr").iter().next_back();
    if let Some(address) = last.and_then(|v| v.to_str().ok()) {
        let address = ClientAddress(address.to_owned());
        request.extensions_mut().insert(address);
    }
    let (store, config) = store(config().await).await;
    let platform = Rc::new(Spin::open(store).await);
    let handled = crate::core::handle(&platform, config.as_ref(), &request).await;
    // Converting first spawns the task that streams the body, so it runs ahead of the record.
    let response = match handled.events {
        // A streamed answer: each event is sent as it is ready.
        Some(events) => {
            let frames = events.map(|event| Ok::<_, Infallible>(Frame::data(Bytes::from(event))));
            handled.response.map(|_| StreamBody::new(frames)).into_response()
        }
        None => handled.response.map(|body| FullBody::new(Bytes::from(body))).into_response(),
    };
    if !matches!(handled.after, ask::After::Nothing) {
        // The response is handed to the host when this function returns; the spawned task keeps
        // the component's wasi:http task alive until the write is done, so the asker does not wait.
        spin_sdk::wit_bindgen::spawn(ask::after_response(platform, handled.after));
    }
    response
}

/// Reads every variable the core knows (Spin's API is async, the core's lookup is not). Spin
/// variable names are lower case: `GROQ_API_KEY` is read as `groq_api_key` (set by
/// `SPIN_VARIABLE_GROQ_API_KEY` or `spin.toml`).
async fn config() -> Result<Config, crate::core::config::ConfigError> {
    let mut values = Vec::with_capacity(VARIABLES.len());
    for name in VARIABLES {
        // Undefined and empty are both "unset" to the core.
        values.push(spin_sdk::variables::get(name.to_ascii_lowercase()).await.ok());
    }
    Config::from_lookup(|name| {
        let index = VARIABLES.iter().position(|known| *known == name)?;
        values[index].clone()
    })
}

/// Which store the variable `store` selects: `sqlite` (the default: `spin up`, `SpinKube`) or
/// `key_value` (hosts without `SQLite`, such as Fermyon Wasm Functions; `spin-kv.toml`). Any other
/// value is a configuration error naming the variable.
async fn store(config: Result<Config, ConfigError>) -> (Store, Result<Config, ConfigError>) {
    let chosen = spin_sdk::variables::get("store").await.ok();
    match chosen.as_deref().map(str::trim) {
        None | Some("" | "sqlite") => (Store::Sql, config),
        Some("key_value") => (Store::KeyValue, config),
        Some(_) => {
            let problem = "STORE must be sqlite or key_value".to_owned();
            let mut problems = config.err().map(|e| e.0).unwrap_or_default();
            problems.push(problem);
            (Store::Sql, Err(ConfigError(problems)))
        }
    }
}

/// The seam over Spin's default `sqlite` database or default key-value store, and outbound HTTP.
struct Spin {
    db: Result<Connection, DbError>,
    kv: Option<Result<key_value::Store, DbError>>,
}

impl Spin {
    /// Opens the selected store (only that one: the other may not be granted).
    async fn open(store: Store) -> Spin {
        match store {
            Store::Sql => {
                let db = Connection::open_default().await.map_err(|e| DbError(format!("{e:?}")));
                Spin { db, kv: None }
            }
            Store::KeyValue => {
                let kv = key_value::Store::open_default().await.map_err(|e| DbError(format!("{e:?}")));
                Spin { db: Err(DbError("SQLite is not used: store = key_value".to_owned())), kv: Some(kv) }
            }
        }
    }

    fn key_value(&self) -> Result<&key_value::Store, DbError> {
        match &self.kv {
            Some(kv) => kv.as_ref().map_err(Clone::clone),
            None => Err(DbError("no key-value store: store = sqlite".to_owned())),
        }
    }
}

impl Platform for Spin {
    async fn fetch(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<http::Response<Vec<u8>>, FetchError> {
        let exchange = async {
            let request = request.map(|body| FullBody::new(Bytes::from(body)));
            let response = spin_sdk::http::send(request).await.map_err(FetchError::network)?;
            let (parts, body) = response.into_parts();
            let body =
                read_capped(&mut body.stream(), MAX_UPSTREAM_BYTES).await.map_err(FetchError::network)?;
            Ok(http::Response::from_parts(parts, body))
        };
        // The deadline covers headers and body alike; dropping the exchange cancels the subtask.
        let deadline = spin_sdk::time::sleep(Duration::from_millis(u64::from(timeout_ms)));
        with_deadline(exchange, deadline).await.unwrap_or(Err(FetchError::Timeout(timeout_ms)))
    }

    async fn fetch_streaming(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<http::Response<BodyStream>, FetchError> {
        let head = async {
            let request = request.map(|body| FullBody::new(Bytes::from(body)));
            spin_sdk::http::send(request).await.map_err(FetchError::network)
        };
        // The deadline covers the status and headers; the core times each piece of the body.
        let deadline = spin_sdk::time::sleep(Duration::from_millis(u64::from(timeout_ms)));
        let response = with_deadline(head, deadline).await.unwrap_or(Err(FetchError::Timeout(timeout_ms)))?;
        let (parts, body) = response.into_parts();
        // Dropping the body drops the request's subtask: the upstream request is cancelled.
        let body = body.stream().map(|piece| piece.map(|bytes| bytes.to_vec()).map_err(FetchError::network));
        Ok(http::Response::from_parts(parts, cap_body(body.boxed_local())))
    }

    async fn sleep(&self, ms: u64) {
        spin_sdk::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError> {
        let db = self.db.as_ref().map_err(Clone::clone)?;
        let params = params.iter().map(|value| match value {
            SqlValue::Null => Value::Null,
            SqlValue::Integer(n) => Value::Integer(*n),
            SqlValue::Text(text) => Value::Text(text.clone()),
        });
        let mut result = db.execute(sql, params).await.map_err(DbError::from_platform)?;
        let columns = result.columns().to_vec();
        let mut rows = Vec::new();
        // Rows are streamed: read them to the end, then check how the statement finished.
        while let Some(row) = result.next().await {
            rows.push(columns.iter().cloned().zip(row.values.into_iter().map(to_json)).collect());
        }
        result.result().await.map_err(DbError::from_platform)?;
        Ok(rows)
    }

    fn store(&self) -> Store {
        if self.kv.is_some() { Store::KeyValue } else { Store::Sql }
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        self.key_value()?.get(key).await.map_err(DbError::from_platform)
    }

    async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), DbError> {
        self.key_value()?.set(key, value).await.map_err(DbError::from_platform)
    }

    /// WASI's secure random source (`wasi:random/random`).
    fn secret_bytes(&self) -> Option<[u8; 32]> {
        spin_sdk::wasip3::random::random::get_random_bytes(32).try_into().ok()
    }

    fn now_ms(&self) -> u64 {
        let now = system_clock::now();
        now.seconds as u64 * 1_000 + u64::from(now.nanoseconds / 1_000_000)
    }

    fn random_u64(&self) -> u64 {
        insecure::get_insecure_random_u64()
    }

    fn log_error(&self, message: &str) {
        eprintln!("{message}");
    }
}

fn to_json(value: Value) -> serde_json::Value {
    match value {
        Value::Integer(n) => n.into(),
        Value::Real(x) => x.into(),
        Value::Text(text) => text.into(),
        Value::Blob(bytes) => bytes.into(),
        Value::Null => serde_json::Value::Null,
    }
}

/// The incoming request as `http` types; a body declared larger than the limit is not read.
async fn into_http(request: Request) -> http::Request<Vec<u8>> {
    let (parts, body) = request.into_parts();
    let body = if body_worth_reading(&parts.headers) {
        read_capped(&mut body.stream(), MAX_BODY_BYTES).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    http::Request::from_parts(parts, body)
}
