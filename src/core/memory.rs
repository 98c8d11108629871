//! An in-memory [`Platform`](super::seam::Platform) for native tests: real `SQLite` (in memory,
//! initialised from `d1-migrations/`), scripted upstreams and a fake clock.
//!
//! Nothing here sleeps or opens a socket: an upstream's latency moves the fake clock forward, and a
//! latency at or past the caller's deadline is a hang that ends in [`FetchError::Timeout`] once the
//! clock has moved by exactly that deadline, as a real platform's timer would.
//!
//! Requests in flight together (the health checks run under `join3`) overlap in fake time too: a
//! pending request moves the clock only when it is the earliest one due, so three 800 ms hangs take
//! 800 ms, not 2400.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use http::HeaderMap;
use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};
use serde_json::{Map, Value, json};

use super::domain::Provider;
use futures_util::StreamExt;

use super::seam::{BodyStream, DbError, FetchError, Platform, Row, SqlValue, Statement, Store};

/// Where the fake clock starts: 2025-11-25T21:26:00Z, on a minute boundary so rate windows start clean.
pub(crate) const EPOCH_MS: u64 = 1_764_105_960_000;

/// What a scripted upstream does with one request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// Answers after `latency_ms`; a latency at or past the caller's deadline is a hang.
    Respond {
        /// HTTP status.
        status: u16,
        /// Response headers, in order.
        headers: Vec<(String, String)>,
        /// Response body.
        body: Vec<u8>,
        /// How far the fake clock moves before the response is complete.
        latency_ms: u64,
    },
    /// Refuses the connection at once ([`FetchError::Network`]).
    Refuse,
    /// Answers `status` at once, then the body in pieces, each after its own delay, then ends
    /// as `end` says.
    Stream {
        /// HTTP status.
        status: u16,
        /// Response headers, in order.
        headers: Vec<(String, String)>,
        /// Each piece and how long the fake clock moves before it arrives.
        pieces: Vec<(u64, Vec<u8>)>,
        /// How the body ends after the last piece.
        end: StreamEnd,
    },
}

/// How a streamed reply's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// It ends cleanly.
    Finish,
    /// The connection is reset ([`FetchError::Network`]).
    Cut,
    /// Nothing more ever arrives, and it never ends.
    Stall,
}

impl Reply {
    /// A JSON response with `status`, answered at once.
    pub(crate) fn json(status: u16, body: &Value) -> Reply {
        Reply::text(status, &body.to_string()).header("content-type", "application/json")
    }

    /// A response with `status` and a raw `body`, answered at once.
    pub(crate) fn text(status: u16, body: &str) -> Reply {
        Reply::Respond { status, headers: Vec::new(), body: body.as_bytes().to_vec(), latency_ms: 0 }
    }

    /// An upstream that accepts the connection and never finishes answering.
    pub(crate) fn hang() -> Reply {
        Reply::text(200, "").after(u64::MAX)
    }

    /// The same reply, complete only after `latency_ms`.
    pub(crate) fn after(self, latency_ms: u64) -> Reply {
        match self {
            Reply::Respond { status, headers, body, .. } => {
                Reply::Respond { status, headers, body, latency_ms }
            }
            other => other,
        }
    }

    /// A `200` streamed reply with `content_type` and these pieces.
    pub(crate) fn stream(content_type: &str, pieces: Vec<(u64, Vec<u8>)>, end: StreamEnd) -> Reply {
        let headers = vec![("content-type".to_owned(), content_type.to_owned())];
        Reply::Stream { status: 200, headers, pieces, end }
    }

    /// The same reply with this header (replacing one of the same name).
    pub(crate) fn header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Respond { status, mut headers, body, latency_ms } => {
                headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
                headers.push((name.to_owned(), value.to_owned()));
                Reply::Respond { status, headers, body, latency_ms }
            }
            Reply::Stream { status, mut headers, pieces, end } => {
                headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
                headers.push((name.to_owned(), value.to_owned()));
                Reply::Stream { status, headers, pieces, end }
            }
            Reply::Refuse => Reply::Refuse,
        }
    }
}

/// One request as an upstream received it.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    /// The full URL.
    pub(crate) url: String,
    /// The method.
    pub(crate) method: http::Method,
    /// The request headers.
    pub(crate) headers: HeaderMap,
    /// The body as JSON (`null` when empty or not JSON).
    pub(crate) body: Value,
    /// The deadline the core gave this request.
    pub(crate) timeout_ms: u32,
    /// Trips to the database made before this request was sent.
    pub(crate) round_trips: usize,
}

impl Sent {
    /// A header's value as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A scripted upstream: decides the reply to each request it receives.
type Upstream = Box<dyn FnMut(&Sent) -> Reply>;

/// The in-memory platform. Single-threaded, like the wasm runtimes it stands in for. Clones share
/// one database, clock and set of upstreams (a streamed reply keeps one while it is read).
#[derive(Clone)]
pub(crate) struct MemoryPlatform(Rc<Memory>);

impl std::ops::Deref for MemoryPlatform {
    type Target = Memory;

    fn deref(&self) -> &Memory {
        &self.0
    }
}

/// What a [`MemoryPlatform`] holds.
pub(crate) struct Memory {
    db: Connection,
    db_failing: Cell<bool>,
    statements: Cell<usize>,
    round_trips: Cell<usize>,
    /// A platform limiter for Groq's minute, as Workers' binding: (limit, minute, used).
    minute_limiter: Cell<Option<(u32, u64, u32)>>,
    clock_ms: Cell<u64>,
    random_state: Cell<u64>,
    upstreams: RefCell<Vec<(String, Upstream)>>,
    sent: RefCell<Vec<Sent>>,
    /// Requests in flight: (request number, when its reply or timeout is due).
    in_flight: RefCell<Vec<(usize, u64)>>,
    /// Lines written with `log_error`.
    logged: RefCell<Vec<String>>,
    /// Timers started with `sleep` (they wait among the requests in flight).
    timers: Cell<usize>,
    /// Numbers of the streamed requests dropped before their end.
    cancelled: RefCell<Vec<usize>>,
    /// The key-value store, when the platform keeps its state there (no SQL then).
    kv: RefCell<Option<BTreeMap<String, Vec<u8>>>>,
    /// What a stale replica returns, while reads are stale.
    kv_stale: RefCell<Option<BTreeMap<String, Vec<u8>>>>,
    /// Key-value reads and writes so far.
    kv_reads: Cell<usize>,
    kv_writes: Cell<usize>,
    /// Whether writes fail while reads succeed, as a store over its write quota.
    kv_writes_failing: Cell<bool>,
}

impl MemoryPlatform {
    /// A platform with a migrated and seeded database, no upstreams, and the clock at [`EPOCH_MS`].
    pub(crate) fn new() -> MemoryPlatform {
        let db = Connection::open_in_memory().expect("SQLite can always open an in-memory database");
        for migration in migrations() {
            let sql = std::fs::read_to_string(&migration).expect("migration files are readable");
            db.execute_batch(&sql).unwrap_or_else(|e| panic!("{} does not apply: {e}", migration.display()));
        }
        MemoryPlatform(Rc::new(Memory {
            db,
            db_failing: Cell::new(false),
            statements: Cell::new(0),
            round_trips: Cell::new(0),
            minute_limiter: Cell::new(None),
            clock_ms: Cell::new(EPOCH_MS),
            random_state: Cell::new(0x5eed),
            upstreams: RefCell::new(Vec::new()),
            sent: RefCell::new(Vec::new()),
            in_flight: RefCell::new(Vec::new()),
            logged: RefCell::new(Vec::new()),
            timers: Cell::new(0),
            cancelled: RefCell::new(Vec::new()),
            kv: RefCell::new(None),
            kv_stale: RefCell::new(None),
            kv_reads: Cell::new(0),
            kv_writes: Cell::new(0),
            kv_writes_failing: Cell::new(false),
        }))
    }

    /// A platform that keeps its state in an empty key-value store, as Spin on a host without
    /// `SQLite`: every SQL statement fails, as `sqlite_databases` not granted would.
    pub(crate) fn key_value() -> MemoryPlatform {
        let platform = MemoryPlatform::new();
        *platform.kv.borrow_mut() = Some(BTreeMap::new());
        platform
    }

    /// From now on reads see the store as it is now (`true`), as a replica that stops receiving
    /// writes would, until `false`; writes still land.
    pub(crate) fn stale_reads(&self, stale: bool) {
        *self.kv_stale.borrow_mut() = if stale { self.kv.borrow().clone() } else { None };
    }

    /// The JSON under `key` in the key-value store.
    pub(crate) fn kv_value(&self, key: &str) -> Option<Value> {
        let kv = self.kv.borrow();
        kv.as_ref()?.get(key).map(|bytes| serde_json::from_slice(bytes).expect("values are JSON"))
    }

    /// Every key in the key-value store, and every value, as text.
    pub(crate) fn kv_entries(&self) -> Vec<(String, String)> {
        let kv = self.kv.borrow();
        kv.iter().flatten().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect()
    }

    /// Key-value writes so far.
    pub(crate) fn kv_writes(&self) -> usize {
        self.kv_writes.get()
    }

    /// Key-value reads so far.
    pub(crate) fn kv_reads(&self) -> usize {
        self.kv_reads.get()
    }

    /// From now on every key-value write fails and reads still succeed (`true`), as a hosted
    /// store over its write quota, until `false`.
    pub(crate) fn fail_kv_writes(&self, failing: bool) {
        self.kv_writes_failing.set(failing);
    }

    /// Every line logged so far.
    pub(crate) fn logged(&self) -> Vec<String> {
        self.logged.borrow().clone()
    }

    /// Routes requests whose URL starts with `prefix` to `upstream` (the longest matching prefix wins).
    pub(crate) fn upstream(&self, prefix: &str, upstream: impl FnMut(&Sent) -> Reply + 'static) {
        let mut upstreams = self.upstreams.borrow_mut();
        upstreams.retain(|(p, _)| p != prefix);
        upstreams.push((prefix.to_owned(), Box::new(upstream)));
    }

    /// Answers every request under `prefix` with `reply`.
    pub(crate) fn reply_always(&self, prefix: &str, reply: Reply) {
        self.upstream(prefix, move |_| reply.clone());
    }

    /// Answers requests under `prefix` with `replies` in turn, repeating the last one.
    pub(crate) fn reply_in_turn(&self, prefix: &str, replies: Vec<Reply>) {
        assert!(!replies.is_empty(), "a script needs at least one reply");
        let mut replies = replies.into_iter();
        let mut last = None;
        self.upstream(prefix, move |_| {
            if let Some(next) = replies.next() {
                last = Some(next);
            }
            last.clone().expect("the first call takes the first reply")
        });
    }

    /// Every request sent so far, in order.
    pub(crate) fn sent(&self) -> Vec<Sent> {
        self.sent.borrow().clone()
    }

    /// The requests sent to URLs starting with `prefix`.
    pub(crate) fn sent_to(&self, prefix: &str) -> Vec<Sent> {
        self.sent.borrow().iter().filter(|s| s.url.starts_with(prefix)).cloned().collect()
    }

    /// How many requests went to URLs starting with `prefix`.
    pub(crate) fn calls_to(&self, prefix: &str) -> usize {
        self.sent.borrow().iter().filter(|s| s.url.starts_with(prefix)).count()
    }

    /// Makes every later query fail (`true`) or work again (`false`).
    pub(crate) fn fail_db(&self, failing: bool) {
        self.db_failing.set(failing);
    }

    /// Statements the core has run through [`Platform::query`], failed ones included.
    pub(crate) fn statements(&self) -> usize {
        self.statements.get()
    }

    /// Trips to the database: a query is one, a batch of any size is one (as on D1).
    pub(crate) fn round_trips(&self) -> usize {
        self.round_trips.get()
    }

    /// Rows the database has written so far (inserted, updated or deleted, by triggers too: what
    /// D1 bills as rows written, as no table the asks write has an index beyond its key).
    pub(crate) fn rows_written(&self) -> u64 {
        self.db.total_changes()
    }

    /// Gives the platform a per-minute limiter of `limit` calls for Groq, as a Worker with the
    /// rate-limiting binding has: the core then counts Groq's minute there, not in the database.
    pub(crate) fn with_minute_limiter(&self, limit: u32) {
        self.minute_limiter.set(Some((limit, 0, 0)));
    }

    /// Moves the fake clock forward.
    pub(crate) fn advance(&self, ms: u64) {
        self.clock_ms.set(self.clock_ms.get() + ms);
    }

    /// Reads the database directly, bypassing the failure switch and the statement count.
    pub(crate) fn inspect(&self, sql: &str, params: &[SqlValue]) -> Vec<Row> {
        run(&self.db, sql, params).unwrap_or_else(|e| panic!("inspection query {sql:?} failed: {e}"))
    }

    /// The single integer a counting query returns.
    pub(crate) fn inspect_count(&self, sql: &str, params: &[SqlValue]) -> u64 {
        let rows = self.inspect(sql, params);
        let first = rows.first().and_then(|r| r.values().next()).and_then(Value::as_u64);
        first.unwrap_or_else(|| panic!("{sql:?} returned no count"))
    }

    /// Records `request` as sent and finds its scripted reply, with the request's number.
    fn send(&self, request: &http::Request<Vec<u8>>, timeout_ms: u32) -> Result<(usize, Reply), FetchError> {
        let sent = Sent {
            url: request.uri().to_string(),
            method: request.method().clone(),
            headers: request.headers().clone(),
            body: serde_json::from_slice(request.body()).unwrap_or(Value::Null),
            timeout_ms,
            round_trips: self.round_trips.get(),
        };
        self.sent.borrow_mut().push(sent.clone());
        let number = self.sent.borrow().len();
        let reply = self.reply_to(&sent);
        reply
            .map(|reply| (number, reply))
            .ok_or_else(|| FetchError::Network(format!("no upstream scripted for {}", sent.url)))
    }

    /// The reply to request `number` read whole, within `timeout_ms`.
    async fn answer_whole(
        &self,
        number: usize,
        reply: Reply,
        timeout_ms: u32,
    ) -> Result<http::Response<Vec<u8>>, FetchError> {
        match reply {
            Reply::Refuse => Err(FetchError::Network("connection refused".to_owned())),
            Reply::Respond { latency_ms, .. } if latency_ms >= u64::from(timeout_ms) => {
                self.wait(number, u64::from(timeout_ms)).await;
                Err(FetchError::Timeout(timeout_ms))
            }
            Reply::Respond { status, headers, body, latency_ms } => {
                self.wait(number, latency_ms).await;
                Ok(response(status, &headers, body))
            }
            // Read whole: the pieces' time in all; a stall or a reset as a whole fetch sees them.
            Reply::Stream { status, headers, pieces, end } => {
                let latency_ms: u64 = pieces.iter().map(|(delay, _)| delay).sum();
                if end == StreamEnd::Stall || latency_ms >= u64::from(timeout_ms) {
                    self.wait(number, u64::from(timeout_ms)).await;
                    return Err(FetchError::Timeout(timeout_ms));
                }
                self.wait(number, latency_ms).await;
                if end == StreamEnd::Cut {
                    return Err(FetchError::Network("connection reset".to_owned()));
                }
                Ok(response(status, &headers, pieces.into_iter().flat_map(|(_, piece)| piece).collect()))
            }
        }
    }

    /// Streamed replies whose reader let go before they ended: the request was cancelled.
    pub(crate) fn cancelled(&self) -> Vec<usize> {
        self.cancelled.borrow().clone()
    }

    /// Waits `ms` of fake time for request `number`, overlapping with the other requests in flight.
    fn wait(&self, number: usize, ms: u64) -> InFlight<'_> {
        InFlight { platform: self, number, due: self.now_ms() + ms, registered: false }
    }

    fn reply_to(&self, sent: &Sent) -> Option<Reply> {
        let mut upstreams = self.upstreams.borrow_mut();
        let (_, upstream) = upstreams
            .iter_mut()
            .filter(|(prefix, _)| sent.url.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())?;
        Some(upstream(sent))
    }
}

impl Platform for MemoryPlatform {
    async fn fetch(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<http::Response<Vec<u8>>, FetchError> {
        let (number, reply) = self.send(&request, timeout_ms)?;
        self.answer_whole(number, reply, timeout_ms).await
    }

    async fn fetch_streaming(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<http::Response<BodyStream>, FetchError> {
        let (number, reply) = self.send(&request, timeout_ms)?;
        let Reply::Stream { status, headers, pieces, end } = reply else {
            // A reply scripted whole arrives as one piece once it is complete.
            let whole = self.answer_whole(number, reply, timeout_ms).await?;
            return Ok(whole.map(|body| futures_util::stream::once(async move { Ok(body) }).boxed_local()));
        };
        let reading =
            Reading { platform: self.clone(), number, pieces: pieces.into_iter(), end, over: false };
        let body = futures_util::stream::unfold(reading, |mut reading| async move {
            let piece = reading.next().await?;
            Some((piece, reading))
        });
        Ok(response(status, &headers, ()).map(|()| body.boxed_local()))
    }

    async fn sleep(&self, ms: u64) {
        let number = self.timers.get() + 1;
        self.timers.set(number);
        self.wait(usize::MAX - number, ms).await;
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, DbError> {
        self.statements.set(self.statements.get() + 1);
        self.round_trips.set(self.round_trips.get() + 1);
        if self.kv.borrow().is_some() {
            return Err(DbError("AccessDenied: no SQLite database granted".to_owned()));
        }
        if self.db_failing.get() {
            return Err(DbError("D1_ERROR: database unavailable (scripted)".to_owned()));
        }
        run(&self.db, sql, params).map_err(|e| DbError(e.to_string()))
    }

    /// As D1's `batch`: one round trip, one transaction (a failing statement undoes the others).
    async fn batch(&self, statements: &[Statement]) -> Result<Vec<Vec<Row>>, DbError> {
        self.statements.set(self.statements.get() + statements.len());
        self.round_trips.set(self.round_trips.get() + 1);
        if self.kv.borrow().is_some() {
            return Err(DbError("AccessDenied: no SQLite database granted".to_owned()));
        }
        if self.db_failing.get() {
            return Err(DbError("D1_ERROR: database unavailable (scripted)".to_owned()));
        }
        let run_all = || -> rusqlite::Result<Vec<Vec<Row>>> {
            self.db.execute_batch("SAVEPOINT batch")?;
            let results: rusqlite::Result<Vec<_>> =
                statements.iter().map(|s| run(&self.db, s.sql, &s.params)).collect();
            let end = if results.is_ok() { "RELEASE batch" } else { "ROLLBACK TO batch; RELEASE batch" };
            self.db.execute_batch(end)?;
            results
        };
        run_all().map_err(|e| DbError(e.to_string()))
    }

    async fn minute_slot(&self, provider: Provider) -> Option<bool> {
        let (limit, minute, used) = self.minute_limiter.get()?;
        if provider != Provider::Groq {
            return None;
        }
        let now = self.clock_ms.get() / 60_000;
        let used = if now == minute { used } else { 0 };
        self.minute_limiter.set(Some((limit, now, used + 1)));
        Some(used < limit)
    }

    fn store(&self) -> Store {
        if self.kv.borrow().is_some() { Store::KeyValue } else { Store::Sql }
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        self.statements.set(self.statements.get() + 1);
        self.round_trips.set(self.round_trips.get() + 1);
        if self.db_failing.get() {
            return Err(DbError("key-value store unavailable (scripted)".to_owned()));
        }
        let stale = self.kv_stale.borrow();
        let kv = self.kv.borrow();
        let store = stale.as_ref().or(kv.as_ref()).ok_or_else(|| DbError("no key-value store".to_owned()))?;
        self.kv_reads.set(self.kv_reads.get() + 1);
        Ok(store.get(key).cloned())
    }

    /// Refuses what the hosted stores refuse, as spin-host does.
    async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), DbError> {
        self.statements.set(self.statements.get() + 1);
        self.round_trips.set(self.round_trips.get() + 1);
        if self.db_failing.get() || self.kv_writes_failing.get() {
            return Err(DbError("key-value store unavailable (scripted)".to_owned()));
        }
        super::kv::check_limits(key, value)?;
        let mut kv = self.kv.borrow_mut();
        kv.as_mut()
            .ok_or_else(|| DbError("no key-value store".to_owned()))?
            .insert(key.to_owned(), value.to_vec());
        self.kv_writes.set(self.kv_writes.get() + 1);
        Ok(())
    }

    fn secret_bytes(&self) -> Option<[u8; 32]> {
        let mut bytes = [0; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.random_u64().to_le_bytes());
        }
        Some(bytes)
    }

    fn now_ms(&self) -> u64 {
        self.clock_ms.get()
    }

    /// `SplitMix64`: deterministic, well spread, no crate needed.
    fn random_u64(&self) -> u64 {
        let mut random = SplitMix(self.random_state.get());
        let number = random.next();
        self.random_state.set(random.0);
        number
    }

    fn log_error(&self, message: &str) {
        self.logged.borrow_mut().push(message.to_owned());
    }
}

/// `SplitMix64`: deterministic, well spread, no crate needed. The fake platform's randomness, and
/// the property tests' choices.
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    /// The next number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `true` about one time in `n`.
    pub(crate) fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One of `items`.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A request in flight until the fake clock reaches `due`.
///
/// It moves the clock only when it is the earliest request due, that is when every request in flight
/// is waiting: then the clock jumps to its time, as it would pass while they all wait.
struct InFlight<'a> {
    platform: &'a MemoryPlatform,
    number: usize,
    due: u64,
    registered: bool,
}

impl Future for InFlight<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let platform = self.platform;
        if platform.now_ms() >= self.due {
            return Poll::Ready(());
        }
        if !self.registered {
            // First poll: join the requests in flight and let the others start theirs.
            platform.in_flight.borrow_mut().push((self.number, self.due));
            self.registered = true;
        } else if platform.in_flight.borrow().iter().all(|&(_, due)| due >= self.due) {
            platform.clock_ms.set(self.due);
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let number = self.number;
        self.platform.in_flight.borrow_mut().retain(|&(n, _)| n != number);
    }
}

/// A streamed reply's body being read: each piece after its delay on the fake clock, then its
/// end. Dropped before its end, it counts as a cancelled request.
struct Reading {
    platform: MemoryPlatform,
    number: usize,
    pieces: std::vec::IntoIter<(u64, Vec<u8>)>,
    end: StreamEnd,
    over: bool,
}

impl Reading {
    async fn next(&mut self) -> Option<Result<Vec<u8>, FetchError>> {
        if self.over {
            return None;
        }
        if let Some((delay, piece)) = self.pieces.next() {
            self.platform.wait(self.number, delay).await;
            return Some(Ok(piece));
        }
        match self.end {
            StreamEnd::Finish => {
                self.over = true;
                None
            }
            StreamEnd::Cut => {
                self.over = true;
                Some(Err(FetchError::Network("connection reset".to_owned())))
            }
            StreamEnd::Stall => futures_util::future::pending().await,
        }
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        // Every piece of a finishing reply read: all was said, nothing is cut short.
        let all_said = self.pieces.len() == 0 && self.end == StreamEnd::Finish;
        if !self.over && !all_said {
            self.platform.cancelled.borrow_mut().push(self.number);
        }
    }
}

/// A scripted response with `body`.
fn response<B>(status: u16, headers: &[(String, String)], body: B) -> http::Response<B> {
    let mut builder = http::Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(body).expect("scripted status and headers are valid")
}

/// The migration files, in name order.
pub(crate) fn migrations() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("d1-migrations");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{} is unreadable: {e}", dir.display()));
    let mut files: Vec<_> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no migrations in {}", dir.display());
    files
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            SqlValue::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            SqlValue::Integer(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            SqlValue::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
        })
    }
}

/// Runs one statement, read or write, and returns its rows as D1 does: column name to JSON value.
fn run(db: &Connection, sql: &str, params: &[SqlValue]) -> rusqlite::Result<Vec<Row>> {
    let mut statement = db.prepare(sql)?;
    let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
    let mut rows = statement.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut map = Map::new();
        for (i, name) in names.iter().enumerate() {
            map.insert(name.clone(), to_json(row.get_ref(i)?));
        }
        out.push(map);
    }
    Ok(out)
}

fn to_json(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::from(n),
        ValueRef::Real(x) => serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number),
        ValueRef::Text(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        ValueRef::Blob(bytes) => Value::Array(bytes.iter().map(|&b| Value::from(b)).collect()),
    }
}

/// Groq's per-day request headers, which say nothing about the per-minute limit.
fn with_groq_rate_headers(reply: Reply, remaining_requests: u32) -> Reply {
    reply
        .header("x-ratelimit-limit-requests", "14400")
        .header("x-ratelimit-remaining-requests", &remaining_requests.to_string())
        .header("x-ratelimit-reset-requests", "6s")
        .header("x-ratelimit-limit-tokens", "6000")
        .header("x-ratelimit-remaining-tokens", "5912")
        .header("x-ratelimit-reset-tokens", "880ms")
        .header("x-request-id", "req_01jb0test0000000000000000")
}

/// A Groq chat completion answering `content`.
pub(crate) fn groq_answer(content: &str) -> Reply {
    let body = json!({
        "id": "chatcmpl-7f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f",
        "object": "chat.completion",
        "created": EPOCH_MS / 1000,
        "model": "llama-3.1-8b-instant",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "queue_time": 0.017, "prompt_tokens": 88, "prompt_time": 0.004, "completion_tokens": 12,
            "completion_time": 0.016, "total_tokens": 100, "total_time": 0.02
        },
        "system_fingerprint": "fp_a4265e44d5",
        "x_groq": {"id": "req_01jb0test0000000000000000"}
    });
    with_groq_rate_headers(Reply::json(200, &body), 14_399)
}

/// Groq's 429 for the per-minute request limit, with `retry-after: {retry_after_secs}`.
pub(crate) fn groq_rate_limited(retry_after_secs: u32) -> Reply {
    let body = json!({"error": {
        "message": "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_01test` \
                    service tier `on_demand` on requests per minute (RPM): Limit 30, Used 30, Requested 1. \
                    Please try again in 2s. Need more tokens? Upgrade to Dev Tier today at \
                    https://console.groq.com/settings/billing",
        "type": "requests",
        "code": "rate_limit_exceeded"
    }});
    with_groq_rate_headers(Reply::json(429, &body), 14_370)
        .header("retry-after", &retry_after_secs.to_string())
}

/// Groq's 429 for a request larger than the tokens-per-minute limit: not a rate limit to wait out.
pub(crate) fn groq_request_too_large() -> Reply {
    let body = json!({"error": {
        "message": "Request too large for model `llama-3.1-8b-instant` in organization `org_01test` \
                    service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 9000, \
                    please reduce your message size and try again.",
        "type": "tokens",
        "code": "rate_limit_exceeded"
    }});
    with_groq_rate_headers(Reply::json(429, &body), 14_380).header("retry-after", "7")
}

/// Groq's `GET /models` listing `models`.
pub(crate) fn groq_models(models: &[&str]) -> Reply {
    let data: Vec<Value> = models
        .iter()
        .map(|id| {
            json!({"id": id, "object": "model", "created": 1_693_721_698, "owned_by": "Meta",
                   "active": true, "context_window": 131_072, "public_apps": null})
        })
        .collect();
    Reply::json(200, &json!({"object": "list", "data": data}))
}

/// Ollama's non-streaming `POST /api/chat` answer from `model`.
pub(crate) fn ollama_answer(model: &str, content: &str) -> Reply {
    Reply::json(
        200,
        &json!({
            "model": model,
            "created_at": "2025-11-25T21:26:00.123456789Z",
            "message": {"role": "assistant", "content": content},
            "done_reason": "stop",
            "done": true,
            "total_duration": 412_000_000_u64,
            "load_duration": 9_000_000,
            "prompt_eval_count": 61,
            "prompt_eval_duration": 120_000_000,
            "eval_count": 14,
            "eval_duration": 280_000_000
        }),
    )
}

/// Ollama's `GET /api/tags` listing `models`.
pub(crate) fn ollama_tags(models: &[&str]) -> Reply {
    let list: Vec<Value> = models
        .iter()
        .map(|name| {
            json!({
                "name": name, "model": name, "modified_at": "2025-11-01T10:00:00.000000000Z",
                "size": 397_821_319, "digest": "a8b0c5157701",
                "details": {"parent_model": "", "format": "gguf", "family": "qwen2",
                            "families": ["qwen2"], "parameter_size": "494.03M", "quantization_level": "Q4_K_M"}
            })
        })
        .collect();
    Reply::json(200, &json!({"models": list}))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use pollster::block_on;

    use super::*;

    fn get(url: &str) -> http::Request<Vec<u8>> {
        http::Request::builder().uri(url).body(Vec::new()).expect("a valid request")
    }

    #[test]
    fn a_streamed_reply_arrives_piece_by_piece_on_the_fake_clock() {
        let p = MemoryPlatform::new();
        let pieces = vec![(300, b"one ".to_vec()), (40, b"two ".to_vec()), (40, b"three".to_vec())];
        p.reply_always("https://up.test", Reply::stream("text/event-stream", pieces, StreamEnd::Finish));
        let response = block_on(p.fetch_streaming(get("https://up.test/x"), 1_000)).expect("headers");
        assert_eq!(p.now_ms(), EPOCH_MS, "the status and headers come at once");
        let mut body = response.into_body();
        let mut arrived = Vec::new();
        while let Some(piece) = block_on(body.next()) {
            arrived.push((p.now_ms() - EPOCH_MS, String::from_utf8(piece.expect("a piece")).expect("text")));
        }
        assert_eq!(arrived, [(300, "one ".to_owned()), (340, "two ".to_owned()), (380, "three".to_owned())]);
        drop(body);
        assert!(p.cancelled().is_empty(), "read to its end: not cancelled");
    }

    #[test]
    fn a_cut_stream_errs_a_stalled_one_never_ends_and_a_dropped_one_is_cancelled() {
        let p = MemoryPlatform::new();
        let piece = vec![(10, b"half".to_vec())];
        p.reply_always("https://cut.test", Reply::stream("text/plain", piece.clone(), StreamEnd::Cut));
        p.reply_always("https://stall.test", Reply::stream("text/plain", piece, StreamEnd::Stall));
        let mut cut =
            block_on(p.fetch_streaming(get("https://cut.test/"), 1_000)).expect("headers").into_body();
        assert!(matches!(block_on(cut.next()), Some(Ok(_))));
        assert!(matches!(block_on(cut.next()), Some(Err(FetchError::Network(_)))));
        assert!(block_on(cut.next()).is_none());

        let mut stalled =
            block_on(p.fetch_streaming(get("https://stall.test/"), 1_000)).expect("headers").into_body();
        assert!(matches!(block_on(stalled.next()), Some(Ok(_))));
        // A timer on the same fake clock wins against a stream that never says more.
        let next = stalled.next();
        let waited = block_on(crate::core::seam::with_deadline(next, p.sleep(5_000)));
        assert!(waited.is_none(), "the stall outlasted the timer");
        drop(stalled);
        assert_eq!(p.cancelled(), [2], "the stalled request was let go before its end");
        // Read whole, the same replies are a reset and a timeout.
        assert!(matches!(block_on(p.fetch(get("https://cut.test/"), 1_000)), Err(FetchError::Network(_))));
        assert!(matches!(block_on(p.fetch(get("https://stall.test/"), 700)), Err(FetchError::Timeout(700))));
    }

    #[test]
    fn a_reply_scripted_whole_streams_as_one_piece() {
        let p = MemoryPlatform::new();
        p.reply_always("https://whole.test", Reply::text(200, "all of it").after(50));
        let response = block_on(p.fetch_streaming(get("https://whole.test/"), 1_000)).expect("complete");
        let pieces: Vec<_> = block_on(response.into_body().collect::<Vec<_>>());
        assert_eq!(pieces, [Ok(b"all of it".to_vec())]);
        assert_eq!(p.now_ms(), EPOCH_MS + 50);
    }
}
