//! The one seam between the core and a platform: outbound HTTP with a deadline, SQL on the
//! fallback database, the clock and randomness. Each adapter implements [`Platform`]; native tests
//! implement it in memory, so the whole chain runs under plain `cargo test`.

use std::future::Future;
use std::pin::pin;

use futures_util::future::{Either, select};
use futures_util::stream::LocalBoxStream;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::domain::Provider;

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

/// One statement of a [`Platform::batch`]: SQL with `?` placeholders and their values.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The SQL.
    pub sql: &'static str,
    /// The values bound to its placeholders, in order.
    pub params: Vec<SqlValue>,
}

impl Statement {
    /// A statement.
    #[must_use]
    pub fn new(sql: &'static str, params: Vec<SqlValue>) -> Statement {
        Statement { sql, params }
    }
}

/// Reads each row as a `T`, by column name, as workers-rs's D1 `results::<T>()` does. A row that
/// does not fit `T` is a [`DbError`] naming the mismatch.
pub fn rows_of<T: DeserializeOwned>(rows: Vec<Row>) -> Result<Vec<T>, DbError> {
    rows.into_iter()
        .map(|row| {
            serde_json::from_value(Value::Object(row)).map_err(|e| DbError(format!("unexpected row: {e}")))
        })
        .collect()
}

/// A response body that arrives in pieces. Dropping it cancels the request.
pub type BodyStream = LocalBoxStream<'static, Result<Vec<u8>, FetchError>>;

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

/// Where a platform keeps the edge's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// SQL: D1 on Workers, Spin's `SQLite` (`spin up`, `SpinKube`), the tests' in-memory `SQLite`.
    Sql,
    /// A key-value store (Spin's `key_value_stores`, where a host offers no `SQLite`: Fermyon Wasm
    /// Functions); see [`super::kv`].
    KeyValue,
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

    /// Sends `request` and returns as soon as its status and headers are in (within `timeout_ms`),
    /// with the body to read piece by piece, each read under the caller's own deadline
    /// ([`Platform::sleep`]); the body ends after at most [`MAX_UPSTREAM_BYTES`]. Dropping the body
    /// cancels the request. By default the whole body is read first and given as one piece.
    async fn fetch_streaming(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<http::Response<BodyStream>, FetchError> {
        let response = self.fetch(request, timeout_ms).await?;
        Ok(response.map(|body| futures_util::stream::once(async move { Ok(body) }).boxed_local()))
    }

    /// Waits `ms` milliseconds: the platform's timer, for deadlines the core keeps itself.
    async fn sleep(&self, ms: u64);

    /// Runs one SQL statement and returns its rows (none for writes without `RETURNING`).
    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError>;

    /// Runs one SQL statement and reads each row as a `T` (see [`rows_of`]).
    async fn rows_as<T: DeserializeOwned>(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<T>, DbError> {
        rows_of(self.query(sql, params).await?)
    }

    /// Runs `statements` in order and returns each one's rows. On Workers this is one D1 `batch`:
    /// one round trip, and one transaction (a failing statement undoes the others). Where the
    /// database is in-process (Spin, the tests) they simply run one after another; there every
    /// statement the core batches is written to be atomic on its own.
    async fn batch(&self, statements: &[Statement]) -> Result<Vec<Vec<Row>>, DbError> {
        let mut results = Vec::with_capacity(statements.len());
        for statement in statements {
            results.push(self.query(statement.sql, &statement.params).await?);
        }
        Ok(results)
    }

    /// The platform's own per-minute limiter for `provider`, when it has one (the rate-limiting
    /// binding on Workers): `Some(true)` when a call may go now. `None`: the core counts the
    /// minute in the database instead.
    async fn minute_slot(&self, provider: Provider) -> Option<bool> {
        let _ = provider;
        None
    }

    /// Where the edge's state lives: SQL unless the platform says otherwise.
    fn store(&self) -> Store {
        Store::Sql
    }

    /// The value under `key` in the key-value store ([`Store::KeyValue`] only).
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        let _ = key;
        Err(DbError("no key-value store on this platform".to_owned()))
    }

    /// Writes `value` under `key` in the key-value store ([`Store::KeyValue`] only).
    async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), DbError> {
        let _ = (key, value);
        Err(DbError("no key-value store on this platform".to_owned()))
    }

    /// 32 bytes from a cryptographically secure source, when the platform has one the core may
    /// use for a stored secret (the key-value store's asker key; SQL makes its own).
    fn secret_bytes(&self) -> Option<[u8; 32]> {
        None
    }

    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// A uniformly random 64-bit number (not for secrets).
    fn random_u64(&self) -> u64;

    /// Writes one line to the platform's error log. Callers pass ids and reasons, never secrets.
    fn log_error(&self, message: &str);
}

/// A platform behind a reference or an `Rc` is a platform: work that takes one by value
/// (`after_response`) can run on a borrowed one, and a streamed answer can own a shared one.
macro_rules! forward_platform {
    ($($wrapper:ty),+) => {$(
        impl<P: Platform> Platform for $wrapper {
            async fn fetch(
                &self,
                request: http::Request<Vec<u8>>,
                timeout_ms: u32,
            ) -> Result<http::Response<Vec<u8>>, FetchError> {
                (**self).fetch(request, timeout_ms).await
            }

            async fn fetch_streaming(
                &self,
                request: http::Request<Vec<u8>>,
                timeout_ms: u32,
            ) -> Result<http::Response<BodyStream>, FetchError> {
                (**self).fetch_streaming(request, timeout_ms).await
            }

            async fn sleep(&self, ms: u64) {
                (**self).sleep(ms).await;
            }

            async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError> {
                (**self).query(sql, params).await
            }

            async fn batch(&self, statements: &[Statement]) -> Result<Vec<Vec<Row>>, DbError> {
                (**self).batch(statements).await
            }

            async fn minute_slot(&self, provider: Provider) -> Option<bool> {
                (**self).minute_slot(provider).await
            }

            fn store(&self) -> Store {
                (**self).store()
            }

            async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, DbError> {
                (**self).kv_get(key).await
            }

            async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), DbError> {
                (**self).kv_set(key, value).await
            }

            fn secret_bytes(&self) -> Option<[u8; 32]> {
                (**self).secret_bytes()
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
    )+};
}

forward_platform!(&P, std::rc::Rc<P>);

/// A platform that counts and times the queries made through it: the ask's `Server-Timing` (`db`)
/// and the tests' bounds on statements and round trips per ask read it. Time is read from the platform's clock
/// around the queries, so on Workers (whose clock moves only across I/O) it is the database's time;
/// queries sent together (the memory and the provider state) count their wait once.
pub struct Metered<'a, P> {
    inner: &'a P,
    statements: std::cell::Cell<u32>,
    round_trips: std::cell::Cell<u32>,
    db_ms: std::cell::Cell<u64>,
    /// Queries in flight, and when the first of them started.
    in_flight: std::cell::Cell<(u32, u64)>,
}

impl<'a, P: Platform> Metered<'a, P> {
    /// Meters `inner` from now on.
    pub fn new(inner: &'a P) -> Metered<'a, P> {
        Metered {
            inner,
            statements: std::cell::Cell::new(0),
            round_trips: std::cell::Cell::new(0),
            db_ms: std::cell::Cell::new(0),
            in_flight: std::cell::Cell::new((0, 0)),
        }
    }

    /// Statements run so far.
    pub fn statements(&self) -> u32 {
        self.statements.get()
    }

    /// Trips to the database so far: a query is one, and so is a batch of any size.
    pub fn round_trips(&self) -> u32 {
        self.round_trips.get()
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

    async fn fetch_streaming(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<http::Response<BodyStream>, FetchError> {
        self.inner.fetch_streaming(request, timeout_ms).await
    }

    async fn sleep(&self, ms: u64) {
        self.inner.sleep(ms).await;
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError> {
        let _waiting = Waiting::start(self);
        let rows = self.inner.query(sql, params).await;
        self.statements.set(self.statements.get() + 1);
        self.round_trips.set(self.round_trips.get() + 1);
        rows
    }

    async fn batch(&self, statements: &[Statement]) -> Result<Vec<Vec<Row>>, DbError> {
        let _waiting = Waiting::start(self);
        let results = self.inner.batch(statements).await;
        let sent = u32::try_from(statements.len()).unwrap_or(u32::MAX);
        self.statements.set(self.statements.get().saturating_add(sent));
        self.round_trips.set(self.round_trips.get() + 1);
        results
    }

    async fn minute_slot(&self, provider: Provider) -> Option<bool> {
        self.inner.minute_slot(provider).await
    }

    fn store(&self) -> Store {
        self.inner.store()
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        let _waiting = Waiting::start(self);
        let value = self.inner.kv_get(key).await;
        self.statements.set(self.statements.get() + 1);
        self.round_trips.set(self.round_trips.get() + 1);
        value
    }

    async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), DbError> {
        let _waiting = Waiting::start(self);
        let written = self.inner.kv_set(key, value).await;
        self.statements.set(self.statements.get() + 1);
        self.round_trips.set(self.round_trips.get() + 1);
        written
    }

    fn secret_bytes(&self) -> Option<[u8; 32]> {
        self.inner.secret_bytes()
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

/// One query's wait on a [`Metered`] platform, ended when dropped (also when the query is
/// cancelled): the last query of those in flight adds their common wait to `db_ms`.
struct Waiting<'m, 'a, P: Platform> {
    metered: &'m Metered<'a, P>,
}

impl<'m, 'a, P: Platform> Waiting<'m, 'a, P> {
    fn start(metered: &'m Metered<'a, P>) -> Self {
        let (running, since) = metered.in_flight.get();
        let since = if running == 0 { metered.inner.now_ms() } else { since };
        metered.in_flight.set((running + 1, since));
        Waiting { metered }
    }
}

impl<P: Platform> Drop for Waiting<'_, '_, P> {
    fn drop(&mut self) {
        let metered = self.metered;
        let (running, since) = metered.in_flight.get();
        if running == 1 {
            metered.db_ms.set(metered.db_ms.get() + metered.inner.now_ms().saturating_sub(since));
        }
        metered.in_flight.set((running.saturating_sub(1), since));
    }
}

/// A row of one `count` column (`SELECT COUNT(*) AS count`, `RETURNING count`).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Count {
    /// The number.
    pub count: u64,
}

/// Ends a streamed body after [`MAX_UPSTREAM_BYTES`] (an error then, as a reset), so an upstream
/// that never stops cannot make an adapter hold or pass on more.
#[must_use]
pub fn cap_body(body: BodyStream) -> BodyStream {
    let mut left = MAX_UPSTREAM_BYTES;
    body.scan(false, move |over, piece| {
        if *over {
            return std::future::ready(None);
        }
        let piece = piece.and_then(|bytes| {
            left = left
                .checked_sub(bytes.len())
                .ok_or_else(|| FetchError::Network(format!("body over {MAX_UPSTREAM_BYTES} bytes")))?;
            Ok(bytes)
        });
        *over = piece.is_err();
        std::future::ready(Some(piece))
    })
    .boxed_local()
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

    /// A database where every query takes 10 ms from when it starts, overlapping with others.
    struct SlowDatabase {
        clock_ms: std::cell::Cell<u64>,
    }

    impl Platform for SlowDatabase {
        async fn fetch(
            &self,
            _: http::Request<Vec<u8>>,
            _: u32,
        ) -> Result<http::Response<Vec<u8>>, FetchError> {
            Err(FetchError::Network("no network here".to_owned()))
        }

        async fn query(&self, _: &str, _: &[SqlValue]) -> Result<Vec<Row>, DbError> {
            let done = self.clock_ms.get() + 10;
            let mut waited = false;
            // Yield once, so queries joined together are all in flight before any ends.
            std::future::poll_fn(|cx| {
                if waited {
                    return std::task::Poll::Ready(());
                }
                waited = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            })
            .await;
            self.clock_ms.set(self.clock_ms.get().max(done));
            Ok(Vec::new())
        }

        async fn sleep(&self, ms: u64) {
            self.clock_ms.set(self.clock_ms.get() + ms);
        }

        fn now_ms(&self) -> u64 {
            self.clock_ms.get()
        }

        fn random_u64(&self) -> u64 {
            4
        }

        fn log_error(&self, _: &str) {}
    }

    #[test]
    fn metered_counts_every_statement_and_the_wait_of_queries_sent_together_once() {
        let database = SlowDatabase { clock_ms: std::cell::Cell::new(1_000) };
        let metered = Metered::new(&database);
        let (a, b) =
            pollster::block_on(futures_util::future::join(metered.query("a", &[]), metered.query("b", &[])));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!((metered.statements(), metered.db_ms()), (2, 10));
        pollster::block_on(metered.query("c", &[])).expect("no error");
        assert_eq!((metered.statements(), metered.db_ms()), (3, 20));
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
