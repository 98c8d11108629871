//! The pool of Ollama boxes: which box a request goes to, which boxes are up, and how many
//! retries the pool can afford.
//!
//! Routing ([`Upstreams::choose`]): boxes that are up first; among them those that have the
//! requested model loaded now (`/api/ps`), then those that have it at all (`/api/tags`), then the
//! fewest requests in flight for their weight; ties go round robin (a counter per worker thread,
//! so nothing is shared for it). A box that is down is chosen only when every box is down (a pool
//! of one behaves as a single upstream always did), and never for a retry.
//!
//! Health: a prober thread of its own ([`start_probes`]) asks each box `/api/version`,
//! `/api/tags` and `/api/ps` every `HEALTH_INTERVAL_MS` (never a generation). A refused or reset
//! connection, a timeout or a 5xx (503 busy included) ejects a box (passive, [`Upstreams::eject`]); it
//! comes back only when a probe passes, and the probes of an ejected box are spaced by a back-off
//! that doubles from `UPSTREAM_EJECT_MS` up to `UPSTREAM_EJECT_MAX_MS`. `/health` and `/readyz`
//! report this state; they never fan out to the boxes.
//!
//! Per request the hot path reads a few atomics per box and takes one uncontended read lock per
//! box for its model lists; in a pool of one it reads nothing at all.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{HeaderValue, Uri, header};
use http_body_util::{BodyExt, Limited};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::config::{Settings, UpstreamSpec};
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::state::UpstreamClient;

/// Largest probe answer read (a long model list is still far below this).
const MAX_PROBE_BODY: usize = 1 << 20;

/// The `User-Agent` of probes: Ollama's logs (and the fake's) tell them from traffic.
const PROBE_USER_AGENT: &str = concat!("ollama-proxy/", env!("CARGO_PKG_VERSION"), " (probe)");

/// The window of the retry budget, in seconds.
const BUDGET_WINDOW_SECS: u64 = 10;

/// Retries the budget always allows per window, so that a lone request at low traffic can still
/// move off a refusing box.
const BUDGET_MIN_RETRIES: u64 = 5;

/// Failures, in the fixed words `/health` shows as `last_error`.
pub mod failure {
    /// Connecting failed (refused, unreachable, DNS, TLS).
    pub const REFUSED: &str = "connection refused or unreachable";
    /// The connection broke before any byte of a response.
    pub const RESET: &str = "connection reset before a response";
    /// A response head that is malformed, over a bound, badly framed or cut off.
    pub const BAD_RESPONSE: &str = "answered a malformed response";
    /// No response headers within `UPSTREAM_TIMEOUT_MS`.
    pub const TIMEOUT: &str = "no response in time";
    /// A 5xx other than 503.
    pub const SERVER_ERROR: &str = "answered 5xx";
    /// A 503: Ollama's queue is full.
    pub const BUSY: &str = "answered 503 busy";
    /// The first probe has not run yet.
    pub const UNCHECKED: &str = "not checked yet";
}

/// The pool: every box, the clock its timestamps count from, and the retry budget.
pub struct Upstreams {
    boxes: Vec<Upstream>,
    started: Instant,
    /// Retries allowed pool-wide.
    pub budget: RetryBudget,
    eject_base_ms: u64,
    eject_max_ms: u64,
    interval_ms: u64,
    /// Wakes the prober when a box is ejected, so its first back-off is kept.
    ejected: tokio::sync::Notify,
}

/// One Ollama box and what the proxy knows about it.
pub struct Upstream {
    /// `host:port` (and base path, if any): its name in metrics and logs; `/health` shows only
    /// `host:port`.
    pub label: String,
    /// Its base URL, to connect to.
    pub uri: Uri,
    /// Its base path (empty, or a prefix such as `/ollama`), put before forwarded paths.
    pub base_path: String,
    /// The `Host` it is sent.
    pub host: HeaderValue,
    /// `Bearer <token>` it is sent, if any (marked sensitive).
    pub token: Option<HeaderValue>,
    /// Its weight for least-in-flight.
    pub weight: u64,
    /// Its metric handles; `in_flight` is also what routing reads.
    pub metrics: UpstreamMetrics,
    down: AtomicBool,
    strikes: AtomicU32,
    next_probe_ms: AtomicU64,
    last_error: Mutex<Option<&'static str>>,
    probe: RwLock<Arc<Probe>>,
}

/// What the last passing probe saw.
#[derive(Debug, Default)]
pub struct Probe {
    /// Whether a probe has passed at least once.
    pub checked: bool,
    /// Ollama's version.
    pub version: Option<String>,
    /// Models it has (`/api/tags`), without a `:latest` suffix.
    pub present: Vec<Box<str>>,
    /// Models loaded now (`/api/ps`), without a `:latest` suffix.
    pub loaded: Vec<Box<str>>,
    /// Time the probe took.
    pub latency_ms: u64,
}

/// One box as `/health` shows it: no URL path, never its token.
#[derive(Debug, serde::Serialize)]
pub struct UpstreamReport {
    /// Its `host:port`.
    pub upstream: String,
    /// `up` or `down`.
    pub status: &'static str,
    /// Its weight.
    pub weight: u64,
    /// Ollama's version, when a probe passed.
    pub version: Option<String>,
    /// Whether it has the configured model.
    pub model_present: bool,
    /// Whether the configured model is loaded now.
    pub model_loaded: bool,
    /// Requests in flight to it now.
    pub in_flight: i64,
    /// The last failure seen, in fixed words.
    pub last_error: Option<&'static str>,
    /// Time its last passing probe took.
    pub latency_ms: u64,
}

thread_local! {
    /// Round-robin turn of this worker thread: ties need no shared counter.
    static TURN: Cell<usize> = const { Cell::new(0) };
}

impl Upstreams {
    /// The pool for `settings`, with a metric handle per box.
    #[must_use]
    pub fn new(settings: &Settings, metrics: &Metrics) -> Self {
        let boxes = settings.upstreams.iter().map(|spec| Upstream::new(spec, metrics)).collect();
        Self {
            boxes,
            started: Instant::now(),
            budget: RetryBudget::new(settings.retry_budget_percent),
            eject_base_ms: settings.eject_base.as_millis() as u64,
            eject_max_ms: settings.eject_max.as_millis() as u64,
            interval_ms: settings.health_interval.as_millis() as u64,
            ejected: tokio::sync::Notify::new(),
        }
    }

    /// Every box, in configuration order.
    #[must_use]
    pub fn boxes(&self) -> &[Upstream] {
        &self.boxes
    }

    /// How many boxes there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// Whether the pool is empty (never, once validated).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// Milliseconds since the pool was made: the clock of ejections and the budget.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The box for a request for `model` that has not been tried on the boxes in `tried` (a bit
    /// per box). A retry never goes to a box that is down; a first try goes to the best box that
    /// is down only when all are.
    #[must_use]
    pub fn choose(&self, model: Option<&str>, tried: u64, retry: bool) -> Option<usize> {
        let count = self.boxes.len();
        if count == 1 {
            return (tried == 0).then_some(0);
        }
        let start = TURN.with(|turn| {
            let n = turn.get();
            turn.set(n.wrapping_add(1));
            n
        });
        let model = model.map(normalise);
        let mut best: Option<(usize, Rank)> = None;
        for k in 0..count {
            let i = (start + k) % count;
            let upstream = &self.boxes[i];
            let down = upstream.is_down();
            if tried & (1 << i) != 0 || (down && retry) {
                continue;
            }
            let rank = Rank {
                down,
                tier: model.map_or(0, |m| upstream.tier(m)),
                load: u64::try_from(upstream.metrics.in_flight.get()).unwrap_or(0) + 1,
                weight: upstream.weight,
            };
            if best.as_ref().is_none_or(|(_, b)| rank.better_than(b)) {
                best = Some((i, rank));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Box `index`.
    #[must_use]
    pub fn get(&self, index: usize) -> &Upstream {
        &self.boxes[index]
    }

    /// Ejects box `index` after a `failure` seen on a request.
    pub fn eject(&self, index: usize, failure: &'static str) {
        let upstream = &self.boxes[index];
        upstream.metrics.failures.inc();
        upstream.set_error(failure);
        if !upstream.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(upstream = upstream.label, error = failure, "upstream ejected");
            upstream.metrics.up.set(0);
            self.strike(upstream);
            self.ejected.notify_one();
        }
    }

    /// One more failure in a row: the next probe waits twice as long, up to the cap.
    fn strike(&self, upstream: &Upstream) {
        let strikes = upstream.strikes.fetch_add(1, Ordering::AcqRel).min(30);
        let back_off = self.eject_base_ms.saturating_mul(1 << strikes).min(self.eject_max_ms);
        upstream.next_probe_ms.store(self.now_ms() + back_off, Ordering::Release);
    }

    fn probe_passed(&self, upstream: &Upstream, probe: Probe) {
        if let Ok(mut last) = upstream.probe.write() {
            *last = Arc::new(probe);
        }
        upstream.strikes.store(0, Ordering::Release);
        if upstream.down.swap(false, Ordering::AcqRel) {
            tracing::info!(upstream = upstream.label, "upstream back in the pool");
        }
        upstream.metrics.up.set(1);
        upstream.next_probe_ms.store(self.now_ms() + self.interval_ms, Ordering::Release);
    }

    fn probe_failed(&self, upstream: &Upstream, error: &'static str) {
        upstream.set_error(error);
        if !upstream.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(upstream = upstream.label, error, "upstream ejected by its probe");
        }
        upstream.metrics.up.set(0);
        self.strike(upstream);
    }

    /// Each box as `/health` shows it, with `model`'s presence.
    #[must_use]
    pub fn report(&self, model: &str) -> Vec<UpstreamReport> {
        let model = normalise(model);
        self.boxes
            .iter()
            .map(|upstream| {
                let probe = upstream.probe();
                let up = probe.checked && !upstream.is_down();
                UpstreamReport {
                    // host:port only: an open /health must not show a tunnel's (maybe secret) path.
                    upstream: upstream
                        .label
                        .strip_suffix(upstream.base_path.as_str())
                        .unwrap_or(&upstream.label)
                        .to_owned(),
                    status: if up { "up" } else { "down" },
                    weight: upstream.weight,
                    version: probe.version.clone(),
                    model_present: probe.present.iter().any(|m| **m == *model),
                    model_loaded: probe.loaded.iter().any(|m| **m == *model),
                    in_flight: upstream.metrics.in_flight.get(),
                    last_error: upstream.last_error().or((!probe.checked).then_some(failure::UNCHECKED)),
                    latency_ms: probe.latency_ms,
                }
            })
            .collect()
    }
}

impl Upstream {
    fn new(spec: &UpstreamSpec, metrics: &Metrics) -> Self {
        let authority = spec.url.authority().map_or("", |a| a.as_str());
        let https = spec.url.scheme_str() == Some("https");
        let base_path = spec.url.path().trim_end_matches('/').to_owned();
        let port = spec.url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let label = format!("{}:{port}{base_path}", spec.url.host().unwrap_or_default());
        let host = spec.host.clone().unwrap_or_else(|| {
            HeaderValue::from_str(authority).unwrap_or(HeaderValue::from_static("localhost"))
        });
        let metrics = metrics.upstream(&label);
        metrics.up.set(1);
        Self {
            label,
            uri: spec.url.clone(),
            base_path,
            host,
            token: spec.token.clone(),
            weight: u64::from(spec.weight.max(1)),
            metrics,
            down: AtomicBool::new(false),
            strikes: AtomicU32::new(0),
            next_probe_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
            probe: RwLock::new(Arc::new(Probe::default())),
        }
    }

    /// Whether it is ejected.
    #[must_use]
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// The last passing probe's findings.
    #[must_use]
    pub fn probe(&self) -> Arc<Probe> {
        self.probe.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// 0: `model` loaded, 1: present, 2: neither (or not known yet).
    fn tier(&self, model: &str) -> u8 {
        let Ok(probe) = self.probe.read() else { return 2 };
        if probe.loaded.iter().any(|m| **m == *model) {
            0
        } else if probe.present.iter().any(|m| **m == *model) {
            1
        } else {
            2
        }
    }

    fn set_error(&self, error: &'static str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error);
        }
    }

    fn last_error(&self) -> Option<&'static str> {
        self.last_error.lock().ok().and_then(|e| *e)
    }

    /// The full URL of `path` on this box, for probes.
    fn url(&self, path: &str) -> String {
        let scheme = self.uri.scheme_str().unwrap_or("http");
        let authority = self.uri.authority().map_or("", |a| a.as_str());
        format!("{scheme}://{authority}{}{path}", self.base_path)
    }
}

/// How good a box is for one request; smaller is better, field by field.
struct Rank {
    down: bool,
    tier: u8,
    /// In flight, plus the request being placed.
    load: u64,
    weight: u64,
}

impl Rank {
    fn better_than(&self, other: &Rank) -> bool {
        match (self.down, self.tier).cmp(&(other.down, other.tier)) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            // load / weight, compared without division.
            std::cmp::Ordering::Equal => self.load * other.weight < other.load * self.weight,
        }
    }
}

/// A model name as Ollama lists it, without the implied `:latest`.
fn normalise(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
}

/// Retries pool-wide: at most `RETRY_BUDGET_PERCENT` of the requests of the last 10 s (and at
/// least [`BUDGET_MIN_RETRIES`] per window), so a pool-wide outage cannot multiply the load. Ten
/// one-second buckets of atomics: approximate under races, never locked.
pub struct RetryBudget {
    percent: u64,
    buckets: [Bucket; BUDGET_WINDOW_SECS as usize],
}

#[derive(Default)]
struct Bucket {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    fn new(percent: u64) -> Self {
        Self { percent, buckets: Default::default() }
    }

    fn bucket(&self, second: u64) -> &Bucket {
        let bucket = &self.buckets[(second % BUDGET_WINDOW_SECS) as usize];
        let seen = bucket.second.load(Ordering::Acquire);
        if seen != second
            && bucket.second.compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            bucket.requests.store(0, Ordering::Release);
            bucket.retries.store(0, Ordering::Release);
        }
        bucket
    }

    /// Counts one request (its first try) at `now_ms`.
    pub fn record_request(&self, now_ms: u64) {
        self.bucket(now_ms / 1000).requests.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes one retry from the budget at `now_ms`, if there is one left.
    pub fn try_retry(&self, now_ms: u64) -> bool {
        if self.percent == 0 {
            return false;
        }
        let second = now_ms / 1000;
        let (mut requests, mut retries) = (0, 0);
        for bucket in &self.buckets {
            let at = bucket.second.load(Ordering::Acquire);
            if at <= second && at + BUDGET_WINDOW_SECS > second {
                requests += bucket.requests.load(Ordering::Acquire);
                retries += bucket.retries.load(Ordering::Acquire);
            }
        }
        if retries >= (requests * self.percent / 100).max(BUDGET_MIN_RETRIES) {
            return false;
        }
        self.bucket(second).retries.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// The `model` field of a JSON request body, read only as far as needed: parsing stops at the
/// field (whatever follows, such as base64 images, is not scanned). `None` for anything else.
#[must_use]
pub fn requested_model(body: &[u8]) -> Option<Box<str>> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    // Stopping early is reported as an error by design: the value is already in `found`.
    let _ = ModelField(&mut found).deserialize(&mut deserializer);
    found
}

/// Looks for a top-level `model` string and stops there.
struct ModelField<'a>(&'a mut Option<Box<str>>);

impl<'de> DeserializeSeed<'de> for ModelField<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ModelField<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "model" {
                let model = map.next_value::<std::borrow::Cow<'de, str>>()?;
                *self.0 = Some(model.into());
                return Err(serde::de::Error::custom("found"));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Starts the prober thread (its own event loop and client) and returns once its first round is
/// done, or after `HEALTH_TIMEOUT_MS` and a little more, so the first requests and `/health` see
/// a checked pool.
pub fn start_probes(state: &crate::AppState) -> std::io::Result<()> {
    let state = state.clone();
    let wait = state.settings.health_timeout + Duration::from_millis(500);
    let (ready, first_round) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("health-probe".into()).spawn(move || {
        runtime.block_on(async move {
            // Connections of this thread's own, made on this event loop.
            let state = state.for_worker();
            probe_round(&state, true).await;
            let _ = ready.send(());
            loop {
                let pool = &state.upstreams;
                let now = pool.now_ms();
                let next = pool.boxes.iter().map(|b| b.next_probe_ms.load(Ordering::Acquire)).min();
                let pause = next.unwrap_or(now + pool.interval_ms).saturating_sub(now).min(pool.interval_ms);
                let sleep = tokio::time::sleep(Duration::from_millis(pause.max(1)));
                tokio::select! {
                    () = sleep => {}
                    () = pool.ejected.notified() => continue,
                }
                probe_round(&state, false).await;
            }
        });
    })?;
    let _ = first_round.recv_timeout(wait);
    Ok(())
}

/// Probes every box that is due (all of them on the first round), together.
async fn probe_round(state: &crate::AppState, all: bool) {
    let pool = &state.upstreams;
    let now = pool.now_ms();
    let due = pool.boxes.iter().filter(|b| all || b.next_probe_ms.load(Ordering::Acquire) <= now);
    let probes = due.map(|upstream| async move {
        let started = Instant::now();
        let probe = tokio::time::timeout(state.settings.health_timeout, probe(&state.client, upstream)).await;
        match probe {
            Ok(Ok(mut probe)) => {
                probe.latency_ms = started.elapsed().as_millis() as u64;
                pool.probe_passed(upstream, probe);
            }
            Ok(Err(error)) => pool.probe_failed(upstream, error),
            Err(_) => pool.probe_failed(upstream, "probe timed out"),
        }
    });
    futures_util::future::join_all(probes).await;
}

/// One probe: version, then tags, then ps, one after the other on one connection. Version and
/// tags must answer; an Ollama without `/api/ps` just has nothing loaded.
async fn probe(client: &UpstreamClient, upstream: &Upstream) -> Result<Probe, &'static str> {
    let version = get_json(client, upstream, "/api/version").await?;
    let tags = get_json(client, upstream, "/api/tags").await?;
    let present = model_names(&tags).ok_or("probe: unexpected /api/tags answer")?;
    let loaded = match get_json(client, upstream, "/api/ps").await {
        Ok(ps) => model_names(&ps).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    Ok(Probe {
        checked: true,
        version: version.get("version").and_then(Value::as_str).map(str::to_owned),
        present,
        loaded,
        latency_ms: 0,
    })
}

/// The `name` (or `model`) of each entry of `models`, without `:latest`.
fn model_names(answer: &Value) -> Option<Vec<Box<str>>> {
    let models = answer.get("models")?.as_array()?;
    Some(
        models
            .iter()
            .filter_map(|m| m.get("name").or_else(|| m.get("model"))?.as_str())
            .map(|name| normalise(name).into())
            .collect(),
    )
}

/// GETs `path` from the box (its `Host`, its token) and parses a 2xx JSON answer.
async fn get_json(client: &UpstreamClient, upstream: &Upstream, path: &str) -> Result<Value, &'static str> {
    let mut request = http::Request::get(upstream.url(path))
        .header(header::HOST, upstream.host.clone())
        .header(header::USER_AGENT, PROBE_USER_AGENT)
        .body(Body::empty())
        .map_err(|_| "probe: bad URL")?;
    if let Some(token) = &upstream.token {
        request.headers_mut().insert(header::AUTHORIZATION, token.clone());
    }
    let response = client.request(request).await.map_err(|_| "probe: unreachable")?;
    if !response.status().is_success() {
        return Err("probe: unhealthy status");
    }
    let body = Limited::new(response.into_body(), MAX_PROBE_BODY)
        .collect()
        .await
        .map_err(|_| "probe: body unreadable")?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|_| "probe: invalid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn pool(upstreams: &str, extra: &[&str]) -> Upstreams {
        let mut args = vec![
            "ollama-proxy".to_owned(),
            "--proxy-api-keys=unit-test-key-0123456789".to_owned(),
            format!("--ollama-upstreams={upstreams}"),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let settings = crate::config::Cli::try_parse_from(args).map(|c| c.settings.validate());
        match settings {
            Ok(Ok(settings)) => Upstreams::new(&settings, &Metrics::new()),
            other => panic!("valid settings: {other:?}"),
        }
    }

    fn saw(pool: &Upstreams, index: usize, present: &[&str], loaded: &[&str]) {
        let probe = Probe {
            checked: true,
            present: present.iter().map(|m| (*m).into()).collect(),
            loaded: loaded.iter().map(|m| (*m).into()).collect(),
            ..Probe::default()
        };
        pool.probe_passed(&pool.boxes[index], probe);
    }

    #[test]
    fn the_model_is_read_from_the_body_and_parsing_stops_there() {
        assert_eq!(
            requested_model(br#"{"model":"qwen2.5:0.5b","messages":[]}"#).as_deref(),
            Some("qwen2.5:0.5b")
        );
        assert_eq!(
            requested_model(br#"{"stream":false,"options":{"model":"x"},"model":"m"}"#).as_deref(),
            Some("m")
        );
        // What follows the field is not even looked at.
        assert_eq!(requested_model(br#"{"model":"m", this is not JSON"#).as_deref(), Some("m"));
        assert_eq!(requested_model(b"[1,2]"), None);
        assert_eq!(requested_model(b""), None);
        assert_eq!(requested_model(br#"{"model":7}"#), None);
    }

    #[test]
    fn loaded_beats_present_beats_absent() {
        let pool = pool("http://a:1,http://b:2,http://c:3", &[]);
        saw(&pool, 0, &["m"], &[]);
        saw(&pool, 1, &["m", "other"], &["m"]);
        saw(&pool, 2, &["other"], &["other"]);
        for _ in 0..6 {
            assert_eq!(pool.choose(Some("m"), 0, false), Some(1));
            assert_eq!(pool.choose(Some("m:latest"), 0, false), Some(1));
        }
        // Without box 1, the one that has it.
        assert_eq!(pool.choose(Some("m"), 0b010, true), Some(0));
        assert_eq!(pool.choose(Some("other"), 0, false), Some(2));
    }

    #[test]
    fn least_in_flight_then_round_robin_and_weight_counts() {
        let pool = pool("http://a:1,http://b:2;weight=2", &[]);
        pool.boxes[1].metrics.in_flight.set(1);
        // a: (0+1)/1 = 1 and b: (1+1)/2 = 1 tie: both get turns.
        let picks: std::collections::BTreeSet<_> =
            (0..8).filter_map(|_| pool.choose(None, 0, false)).collect();
        assert_eq!(picks.len(), 2, "{picks:?}");
        pool.boxes[1].metrics.in_flight.set(3);
        assert!((0..8).all(|_| pool.choose(None, 0, false) == Some(0)));
        pool.boxes[0].metrics.in_flight.set(3);
        assert!((0..8).all(|_| pool.choose(None, 0, false) == Some(1)), "weight 2 takes more");
    }

    #[test]
    fn a_down_box_is_last_for_a_first_try_and_never_for_a_retry() {
        let pool = pool("http://a:1,http://b:2", &["--upstream-eject-ms=100", "--upstream-eject-max-ms=350"]);
        pool.eject(0, failure::REFUSED);
        assert!((0..4).all(|_| pool.choose(None, 0, false) == Some(1)));
        assert_eq!(pool.choose(None, 0b10, true), None, "no retry onto a down box");
        pool.eject(1, failure::TIMEOUT);
        assert!(pool.choose(None, 0, false).is_some(), "all down: still try one");
        // The back-off doubles per strike up to the cap; a passing probe resets it.
        let now = pool.now_ms();
        let due = |i: usize| pool.boxes[i].next_probe_ms.load(Ordering::Acquire) - now;
        assert!((90..=110).contains(&due(0)), "{}", due(0));
        pool.probe_failed(&pool.boxes[0], "probe: unreachable");
        assert!((190..=210).contains(&due(0)), "{}", due(0));
        pool.probe_failed(&pool.boxes[0], "probe: unreachable");
        pool.probe_failed(&pool.boxes[0], "probe: unreachable");
        assert!((340..=360).contains(&due(0)), "capped: {}", due(0));
        saw(&pool, 0, &[], &[]);
        assert!(!pool.boxes[0].is_down());
        assert_eq!(pool.boxes[0].strikes.load(Ordering::Acquire), 0);
        let report = pool.report("m");
        assert_eq!((report[0].status, report[1].status), ("up", "down"));
        assert_eq!(report[1].last_error, Some(failure::TIMEOUT));
    }

    #[test]
    fn the_budget_allows_a_share_of_recent_requests() {
        let budget = RetryBudget::new(20);
        for _ in 0..100 {
            budget.record_request(1_000);
        }
        let granted = (0..100).filter(|_| budget.try_retry(1_500)).count();
        assert_eq!(granted, 20);
        // Ten seconds later the window has moved on: only the floor is left.
        let later = (0..100).filter(|_| budget.try_retry(12_000)).count();
        assert_eq!(later as u64, BUDGET_MIN_RETRIES);
        assert!(!RetryBudget::new(0).try_retry(0));
    }
}
