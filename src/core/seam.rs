//! The one seam between the core and a platform: outbound HTTP with a deadline, SQL on the
//! fallback database, the clock and randomness. Each adapter implements [`Platform`]; native tests
//! implement it in memory, so the whole chain runs under plain `cargo test`.

use std::future::Future;
use std::pin::pin;

use futures_util::future::{Either, select};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// One row of a query result, column name to value.
pub type Row = Map<String, Value>;

/// A value bound to a `?` placeholder in SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// UTF-8 text.
    Text(String),
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        SqlValue::Integer(value)
    }
}

impl From<u64> for SqlValue {
    fn from(value: u64) -> Self {
        SqlValue::Integer(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(value.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        SqlValue::Text(value)
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(value: Option<T>) -> Self {
        value.map_or(SqlValue::Null, Into::into)
    }
}

/// Why an outbound request produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The deadline passed before the whole response (headers and body) arrived.
    #[error("no complete response within {0} ms")]
    Timeout(u32),
    /// Connection refused, reset, DNS failure and the like.
    #[error("network error: {0}")]
    Network(String),
}

/// A failure of the fallback database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("database error: {0}")]
pub struct DbError(pub String);

impl DbError {
    /// A platform's database error, as its `Debug` says it.
    #[allow(clippy::needless_pass_by_value)] // used as `map_err(DbError::from_platform)`
    pub fn from_platform(error: impl std::fmt::Debug) -> DbError {
        DbError(format!("{error:?}"))
    }
}

impl FetchError {
    /// A platform's connection error, as its `Debug` says it.
    #[allow(clippy::needless_pass_by_value)] // used as `map_err(FetchError::network)`
    pub fn network(error: impl std::fmt::Debug) -> FetchError {
        FetchError::Network(format!("{error:?}"))
    }
}

/// Largest upstream response body an adapter reads; provider answers are a few hundred bytes.
pub const MAX_UPSTREAM_BYTES: usize = 1 << 20;

/// Runs `work` until `deadline` (a platform's timer) fires: `None` when the timer won. Dropping
/// `work` cancels it; an adapter may also abort what it started (Workers' `AbortController`).
pub async fn with_deadline<W: Future, D: Future<Output = ()>>(work: W, deadline: D) -> Option<W::Output> {
    match select(pin!(work), pin!(deadline)).await {
        Either::Left((done, _)) => Some(done),
        Either::Right(((), _)) => None,
    }
}

/// What a platform provides to the core.
///
/// The futures are not `Send`: both wasm runtimes are single-threaded, and the native test
/// implementation runs on one thread too.
#[allow(async_fn_in_trait)]
pub trait Platform {
    /// Sends `request`; the whole exchange, body included, must finish within `timeout_ms`.
    async fn fetch(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<http::Response<Vec<u8>>, FetchError>;

    /// Runs one SQL statement and returns its rows (none for writes without `RETURNING`).
    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError>;

    /// Runs one SQL statement and reads each row as a `T`, by column name, as workers-rs's D1
    /// `results::<T>()` does. A row that does not fit `T` is a [`DbError`] naming the mismatch.
    async fn rows_as<T: DeserializeOwned>(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<T>, DbError> {
        self.query(sql, params)
            .await?
            .into_iter()
            .map(|row| {
                serde_json::from_value(Value::Object(row))
                    .map_err(|e| DbError(format!("unexpected row: {e}")))
            })
            .collect()
    }

    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// A uniformly random 64-bit number (not for secrets).
    fn random_u64(&self) -> u64;

    /// Writes one line to the platform's error log. Callers pass ids and reasons, never secrets.
    fn log_error(&self, message: &str);
}

/// A borrowed platform is a platform, so work that takes one by value (`after_response`) can
/// also run on a borrowed one.
impl<P: Platform> Platform for &P {
    async fn fetch(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<http::Response<Vec<u8>>, FetchError> {
        (**self).fetch(request, timeout_ms).await
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError> {
        (**self).query(sql, params).await
    }

    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }

    fn random_u64(&self) -> u64 {
        (**self).random_u64()
    }

    fn log_error(&self, message: &str) {
        (**self).log_error(message);
    }
}

/// A platform that counts and times the queries made through it: the ask's `Server-Timing` (`db`)
/// and the tests' bound on statements per ask read it. Time is read from the platform's clock
/// around each query, so on Workers (whose clock moves only across I/O) it is the database's time.
pub struct Metered<'a, P> {
    inner: &'a P,
    statements: std::cell::Cell<u32>,
    db_ms: std::cell::Cell<u64>,
}

impl<'a, P: Platform> Metered<'a, P> {
    /// Meters `inner` from now on.
    pub fn new(inner: &'a P) -> Metered<'a, P> {
        Metered { inner, statements: std::cell::Cell::new(0), db_ms: std::cell::Cell::new(0) }
    }

    /// Statements run so far.
    pub fn statements(&self) -> u32 {
        self.statements.get()
    }

    /// Milliseconds spent waiting for the database so far.
    pub fn db_ms(&self) -> u64 {
        self.db_ms.get()
    }
}

impl<P: Platform> Platform for Metered<'_, P> {
    async fn fetch(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<http::Response<Vec<u8>>, FetchError> {
        self.inner.fetch(request, timeout_ms).await
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError> {
        let started = self.inner.now_ms();
        let rows = self.inner.query(sql, params).await;
        self.statements.set(self.statements.get() + 1);
        self.db_ms.set(self.db_ms.get() + self.inner.now_ms().saturating_sub(started));
        rows
    }

    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }

    fn random_u64(&self) -> u64 {
        self.inner.random_u64()
    }

    fn log_error(&self, message: &str) {
        self.inner.log_error(message);
    }
}

/// A row of one `count` column (`SELECT COUNT(*) AS count`, `RETURNING count`).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Count {
    /// The number.
    pub count: u64,
}

/// Reads a body stream up to `cap` bytes and one more, so an oversized body is still seen as
/// oversized without ever being held whole. Both adapters read request and upstream bodies with it.
pub async fn read_capped<S, B, E>(stream: &mut S, cap: usize) -> Result<Vec<u8>, E>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(chunk?.as_ref());
        if bytes.len() > cap {
            bytes.truncate(cap + 1);
            break;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_deadline_returns_the_work_or_none_when_the_timer_fires_first() {
        let done = pollster::block_on(with_deadline(async { 7 }, futures_util::future::pending()));
        assert_eq!(done, Some(7));
        let cut = pollster::block_on(with_deadline(futures_util::future::pending::<u8>(), async {}));
        assert_eq!(cut, None);
    }

    #[test]
    fn read_capped_keeps_one_byte_past_the_cap_and_stops() {
        let chunks = vec![Ok::<_, ()>(vec![1u8; 5]), Ok(vec![2; 5]), Ok(vec![3; 5])];
        let mut stream = futures_util::stream::iter(chunks);
        let read = pollster::block_on(read_capped(&mut stream, 7)).expect("no error");
        assert_eq!(read.len(), 8);
        let mut small = futures_util::stream::iter(vec![Ok::<_, ()>(b"abc".to_vec())]);
        assert_eq!(pollster::block_on(read_capped(&mut small, 7)), Ok(b"abc".to_vec()));
        let mut failing = futures_util::stream::iter(vec![Ok(b"a".to_vec()), Err("reset")]);
        assert_eq!(pollster::block_on(read_capped(&mut failing, 7)), Err("reset"));
    }
}
