//! The key-value backend: the edge's state on Spin's key-value store, for hosts that offer no
//! `SQLite` (Fermyon Wasm Functions on Akamai). A platform selects it ([`Store::KeyValue`]); each of
//! the core's storage operations (the admission, the record, the providers' state, the minute's
//! budget, the refused count, the asker key, the dashboard, `/health`) branches here.
//!
//! Keys, all bounded (at most 271, under Fermyon Cloud's 1,024), values well under the hosted
//! stores' 1 MB:
//! - `askers/<hh>`: 256 shards by the asker hash's first two hex digits, each a map from asker
//!   hash to its limit windows and three memory slots (the question's keyed hash, the count, and
//!   the spirit's answer once recorded). Askers unseen for a day (or the memory's time, if longer)
//!   are dropped whenever their shard is written, and those unseen longest too while the shard is
//!   over [`SHARD_BUDGET_BYTES`].
//! - `totals/<n>`: [`TOTALS_SHARDS`] shards of running totals per source and outcomes, each with
//!   its latest consultations' latencies (together the dashboard's [`LATENCY_WINDOW`]).
//! - `state/<provider>/cool-down` and `state/<provider>/breaker`: apart, so that no write of one
//!   can undo the other from a stale read.
//! - `minute/<provider>`, `counts/limited`, `secret/asker`.
//!
//! Nothing of a question or an address is stored: keyed hashes only, as in SQL.
//!
//! The canned answers, the annoyed ones and the stream closings are compiled in from
//! `d1-migrations/` (the seed D1 and `SQLite` apply): they are read-only, versioned with the code,
//! and the chain's last link then needs no store at all.
//!
//! Consistency: the store has no transactions and no atomic increment, and hosted stores
//! replicate eventually. Every write here is a read-modify-write of one key, so two asks racing
//! on a key can lose one update (the last write wins). DEPLOY.md says what that means for the
//! limits, the memory, the cool-down, the minute's budget and the totals.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use futures_util::future::{join, join_all};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::admission::{Admission, Asking};
use super::ask::Consultation;
use super::asker::{Asker, HashKey};
use super::config::{AskLimit, Config, MAX_ASK_LIMITS};
use super::dashboard::{CountsRow, LATENCY_WINDOW, LatencyRow, Readings};
use super::domain::{Category, Language, Outcome, Personality, Provider, Source};
use super::fallback::{Candidate, CannedAnswer};
use super::limits::{Limited, WindowsRow, limit_at};
use super::providers::Failure;
use super::remember::{self, ANNOYED_FROM, MemoryRow};
use super::seam::{DbError, Platform};
use super::state::{BREAKER_OPEN_MS, BREAKER_THRESHOLD, ProviderState, States};

/// Longest key the store takes (Fermyon Cloud's limit; Fermyon Wasm Functions allows more).
pub const MAX_KEY_BYTES: usize = 255;
/// Largest value the store takes (both hosted stores: "1 MB", read as the smaller 10^6 bytes).
pub const MAX_VALUE_BYTES: usize = 1_000_000;
/// Size an asker shard is kept under: a quarter of the largest value, so a shard is never
/// refused and stays quick to read (a few thousand askers a shard).
pub const SHARD_BUDGET_BYTES: usize = MAX_VALUE_BYTES / 4;
/// Shards of the running totals: asks racing on one shard can lose a count, so they are spread.
pub const TOTALS_SHARDS: u64 = 8;
/// Latest consultations each totals shard keeps for the dashboard's percentiles.
const LATEST_PER_SHARD: usize = (LATENCY_WINDOW / TOTALS_SHARDS) as usize;
/// Askers kept at least this long after their last ask (no limit window is longer).
const ASKER_KEPT_MS: u64 = 86_400_000;
const MINUTE_MS: u64 = 60_000;

/// Reads `key` as JSON; `None` when absent, and when what is there cannot be read (written by
/// another version, say): logged, and replaced by the next write instead of jamming the key.
async fn get<T: DeserializeOwned, P: Platform>(platform: &P, key: &str) -> Result<Option<T>, DbError> {
    let Some(bytes) = platform.kv_get(key).await? else { return Ok(None) };
    match serde_json::from_slice(&bytes) {
        Ok(value) => Ok(Some(value)),
        Err(error) => {
            platform.log_error(&format!("unreadable value under {key}, starting it afresh: {error}"));
            Ok(None)
        }
    }
}

/// Writes `value` as JSON under `key`, refusing (writing nothing) a key or value over the
/// store's limits.
async fn put<T: Serialize, P: Platform>(platform: &P, key: &str, value: &T) -> Result<(), DbError> {
    let bytes = serde_json::to_vec(value).map_err(|e| DbError(format!("cannot encode {key}: {e}")))?;
    put_bytes(platform, key, &bytes).await
}

/// Writes `bytes` under `key`, within the store's limits.
async fn put_bytes<P: Platform>(platform: &P, key: &str, bytes: &[u8]) -> Result<(), DbError> {
    check_limits(key, bytes)?;
    platform.kv_set(key, bytes).await
}

/// Whether `key` and `value` fit the store.
pub fn check_limits(key: &str, value: &[u8]) -> Result<(), DbError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(DbError(format!("key of {} bytes, over the store's {MAX_KEY_BYTES}", key.len())));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(DbError(format!(
            "value of {} bytes under {key}, over the store's {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

// ---- askers: limits and memory ----

/// One asker in its shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct AskerEntry {
    /// Each limit window's start and count.
    #[serde(rename = "w")]
    windows: [(u64, u64); MAX_ASK_LIMITS],
    /// The last ask counted.
    #[serde(rename = "s")]
    seen: u64,
    /// The memory's slots (at most [`super::admission::MEMORY_SLOTS`]).
    #[serde(rename = "m", default)]
    memory: Vec<Slot>,
}

/// One remembered question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Slot {
    /// The question's keyed hash.
    q: String,
    /// When it was first asked, this time round.
    at: u64,
    /// Times asked since.
    n: u64,
    /// Which record fills it: low 8 bits the shard, so the record finds it.
    tag: u64,
    /// The spirit's answer, once recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Remembered>,
}

/// A remembered answer (the shape [`remember::recall`] reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Remembered {
    answer: String,
    source: Source,
    language: Language,
    personality: Personality,
    category: Category,
}

/// An asker shard: asker hash to entry.
type Shard = BTreeMap<String, AskerEntry>;

fn shard_of(asker: &Asker) -> u8 {
    u8::from_str_radix(asker.as_str().get(..2).unwrap_or("00"), 16).unwrap_or(0)
}

fn askers_key(shard: u8) -> String {
    format!("askers/{shard:02x}")
}

/// The admission on the key-value store: the asker's shard and the providers' state read
/// together, the shard written back when the ask is let through. See [`super::admission::admit`].
pub(crate) async fn admit<P: Platform>(
    platform: &P,
    config: &Config,
    asking: Asking<'_>,
    asker: Option<&Asker>,
    providers: bool,
    mut admission: Admission,
    now_ms: u64,
) -> Admission {
    let shard = async {
        match asker {
            Some(asker) => get::<Shard, _>(platform, &askers_key(shard_of(asker))).await.map(Some),
            None => Ok(None),
        }
    };
    let states = async { if providers { load_states(platform).await.map(Some) } else { Ok(None) } };
    let (shard, states) = join(shard, states).await;
    match states {
        Ok(states) => admission.states = states.unwrap_or_default(),
        Err(error) => platform.log_error(&format!("provider state unreadable: {error}")),
    }
    let Some(asker) = asker else { return admission };
    let mut shard = match shard {
        Ok(shard) => shard.flatten().unwrap_or_default(),
        Err(error) => {
            platform.log_error(&format!("admission unreadable, limits and memory off for this ask: {error}"));
            return admission;
        }
    };
    let entry = shard.entry(asker.as_str().to_owned()).or_default();
    if let Some(limited) = count_windows(entry, &config.ask_limits, now_ms) {
        admission.limited = Some(limited);
        return admission;
    }
    entry.seen = now_ms;
    if let Some(memo) = asking.memo {
        let tag = ((platform.random_u64() >> 19) << 8) | u64::from(shard_of(asker));
        let slot = count_question(entry, &memo.question, memo.ttl_ms, now_ms, tag);
        let annoyed = (slot.n >= ANNOYED_FROM).then(|| annoyed_answers(asking.language, asking.personality));
        let row = MemoryRow {
            times: slot.n,
            remembered: slot.a.as_ref().and_then(|a| serde_json::to_string(a).ok()),
            annoyed: annoyed.and_then(|answers| serde_json::to_string(&answers).ok()),
        };
        match remember::recall(memo, &row, asking.language, asking.personality) {
            Ok(Some(recalled)) => admission.recalled = Some(recalled),
            Ok(None) => admission.record.memo_tag = Some(slot.tag),
            Err(error) => platform.log_error(&format!("memory unreadable: {error}")),
        }
    }
    let ttl_ms = u64::from(config.memory_ttl_s) * 1_000;
    let written = match encoded_shard(&mut shard, now_ms, ttl_ms, asker.as_str()) {
        Ok(bytes) => put_bytes(platform, &askers_key(shard_of(asker)), &bytes).await,
        Err(error) => Err(error),
    };
    if let Err(error) = written {
        platform.log_error(&format!("asker not written, this ask uncounted: {error}"));
    }
    admission
}

/// Counts the ask in each limit window, as the SQL admission does; the limit that refuses it
/// (nothing counted then), if any.
fn count_windows(entry: &mut AskerEntry, limits: &[AskLimit], now_ms: u64) -> Option<Limited> {
    if let Some(limited) = WindowsRow::new(entry.windows).limited(limits, now_ms) {
        return Some(limited);
    }
    for (i, window) in entry.windows.iter_mut().enumerate() {
        let period = limit_at(limits, i).period_ms;
        *window = if now_ms >= window.0.saturating_add(period) {
            (now_ms, 1)
        } else {
            (window.0, window.1.saturating_add(1))
        };
    }
    None
}

/// Counts the question in the asker's memory: one more time within the memory's time, else a
/// fresh slot (the question's own once expired, else a free one or the one asked longest ago).
fn count_question<'e>(
    entry: &'e mut AskerEntry,
    question: &str,
    ttl_ms: u64,
    now_ms: u64,
    tag: u64,
) -> &'e Slot {
    let fresh = Slot { q: question.to_owned(), at: now_ms, n: 1, tag, a: None };
    let index = match entry.memory.iter().position(|slot| slot.q == question) {
        Some(i) if entry.memory[i].at > now_ms.saturating_sub(ttl_ms) => {
            entry.memory[i].n += 1;
            i
        }
        Some(i) => {
            entry.memory[i] = fresh;
            i
        }
        None if entry.memory.len() < super::admission::MEMORY_SLOTS => {
            entry.memory.push(fresh);
            entry.memory.len() - 1
        }
        None => {
            let oldest = (0..entry.memory.len()).min_by_key(|&i| entry.memory[i].at).unwrap_or(0);
            entry.memory[oldest] = fresh;
            oldest
        }
    };
    &entry.memory[index]
}

/// The shard as it is written: askers unseen for longer than any window or memory lasts dropped,
/// then, while it is over [`SHARD_BUDGET_BYTES`], those unseen longest, never `keep` (this ask's
/// asker). Encoded once, unless it has to shrink.
fn encoded_shard(shard: &mut Shard, now_ms: u64, memory_ttl_ms: u64, keep: &str) -> Result<Vec<u8>, DbError> {
    let before = now_ms.saturating_sub(memory_ttl_ms.max(ASKER_KEPT_MS));
    shard.retain(|key, entry| entry.seen >= before || key == keep);
    loop {
        let bytes = serde_json::to_vec(shard).map_err(|e| DbError(format!("cannot encode a shard: {e}")))?;
        let mut by_age: Vec<(u64, String)> =
            shard.iter().filter(|(key, _)| *key != keep).map(|(key, e)| (e.seen, key.clone())).collect();
        if bytes.len() <= SHARD_BUDGET_BYTES || by_age.is_empty() {
            return Ok(bytes);
        }
        // A tenth at a time: re-encoding after each one would cost the shard's size squared.
        by_age.sort_unstable();
        for (_, key) in by_age.iter().take((by_age.len() / 10).max(1)) {
            shard.remove(key);
        }
    }
}

// ---- the record and the totals ----

/// Running totals and latest latencies of one shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Totals {
    counts: Vec<Counted>,
    latest: Vec<Latest>,
}

/// A running total per source and outcomes (as `consultation_counts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Counted {
    source: Source,
    groq: Outcome,
    ollama: Outcome,
    n: u64,
    first_at: u64,
}

/// One recent consultation's latencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Latest {
    at: u64,
    ms: u64,
    source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ollama: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_token: Option<u64>,
}

impl Totals {
    fn add(&mut self, c: &Consultation) {
        match self
            .counts
            .iter_mut()
            .find(|t| (t.source, t.groq, t.ollama) == (c.source, c.groq.outcome, c.ollama.outcome))
        {
            Some(total) => {
                total.n += 1;
                total.first_at = total.first_at.min(c.created_at);
            }
            None => self.counts.push(Counted {
                source: c.source,
                groq: c.groq.outcome,
                ollama: c.ollama.outcome,
                n: 1,
                first_at: c.created_at,
            }),
        }
        self.latest.push(Latest {
            at: c.created_at,
            ms: c.latency_ms,
            source: c.source,
            groq: c.groq.latency_ms,
            ollama: c.ollama.latency_ms,
            first_token: c.first_token_ms,
        });
        let over = self.latest.len().saturating_sub(LATEST_PER_SHARD);
        self.latest.drain(..over);
    }
}

fn totals_key(shard: u64) -> String {
    format!("totals/{shard}")
}

/// Records a consultation: counted in a random totals shard and, when the memory points at it,
/// its answer kept in the asker's slot.
pub(crate) async fn record<P: Platform>(platform: &P, c: &Consultation) -> Result<(), DbError> {
    let totals = async {
        let key = totals_key(platform.random_u64() % TOTALS_SHARDS);
        let mut totals: Totals = get(platform, &key).await?.unwrap_or_default();
        totals.add(c);
        put(platform, &key, &totals).await
    };
    let remembered = async {
        let (Some(answer), Some(tag)) = (c.remember.as_ref(), c.record.memo_tag) else { return Ok(()) };
        let key = askers_key((tag & 0xff) as u8);
        let mut shard: Shard = get(platform, &key).await?.unwrap_or_default();
        // The slot this ask's admission started (gone if the asker asked three other questions
        // since, or was dropped: nothing to remember then).
        let held = shard.iter_mut().find_map(|(asker, entry)| {
            let slot = entry.memory.iter_mut().find(|slot| slot.tag == tag)?;
            Some((asker.clone(), slot))
        });
        let Some((asker, slot)) = held else { return Ok(()) };
        slot.a = Some(Remembered {
            answer: answer.clone(),
            source: c.source,
            language: c.language,
            personality: c.personality,
            category: c.category,
        });
        let bytes = encoded_shard(&mut shard, c.created_at, c.memory_ttl_ms, &asker)?;
        put_bytes(platform, &key, &bytes).await
    };
    let (totals, remembered) = join(totals, remembered).await;
    totals.and(remembered)
}

/// What the dashboard reads: every totals shard, the refused count and the providers' state.
pub(crate) async fn readings<P: Platform>(platform: &P) -> Result<Readings, DbError> {
    let shards =
        join_all((0..TOTALS_SHARDS).map(|n| async move { get::<Totals, _>(platform, &totals_key(n)).await }));
    let limited = get::<u64, _>(platform, LIMITED_KEY);
    let (shards, (limited, states)) = join(shards, join(limited, load_states(platform))).await;
    let mut counts = Vec::new();
    let mut latest = Vec::new();
    for shard in shards {
        let shard = shard?.unwrap_or_default();
        counts.extend(shard.counts.into_iter().map(|t| CountsRow {
            source: Some(t.source.as_str().to_owned()),
            groq_outcome: Some(t.groq.as_str().to_owned()),
            ollama_outcome: Some(t.ollama.as_str().to_owned()),
            n: t.n,
            first_at: Some(t.first_at),
        }));
        latest.extend(shard.latest);
    }
    latest.sort_unstable_by_key(|l| std::cmp::Reverse(l.at));
    latest.truncate(LATENCY_WINDOW as usize);
    let latest = latest
        .into_iter()
        .map(|l| LatencyRow {
            latency_ms: Some(l.ms),
            groq_latency_ms: l.groq,
            ollama_latency_ms: l.ollama,
            source: Some(l.source.as_str().to_owned()),
            first_token_ms: l.first_token,
        })
        .collect();
    Ok(Readings { counts, latest, limited: limited?.unwrap_or(0), states: states? })
}

const LIMITED_KEY: &str = "counts/limited";

/// One refused ask in this many writes the count, adding this many: a client hammering past its
/// limit must not spend the store's writes (Akamai: 50 a second per app) that other asks need,
/// and Spin's instance per request cannot batch refusals as a Worker's isolate does. The count
/// stays right on average; the dashboard's `limited` is an estimate in steps of 16 here.
pub const REFUSED_SAMPLE: u64 = 16;

/// Adds `pending` refused asks to the dashboard's count (sampled, see [`REFUSED_SAMPLE`]).
pub(crate) async fn add_refused<P: Platform>(platform: &P, pending: u64) -> Result<(), DbError> {
    if !platform.random_u64().is_multiple_of(REFUSED_SAMPLE) {
        return Ok(());
    }
    let limited: u64 = get(platform, LIMITED_KEY).await?.unwrap_or(0);
    put(platform, LIMITED_KEY, &limited.saturating_add(pending.saturating_mul(REFUSED_SAMPLE))).await
}

// ---- providers' state and the minute's budget ----

/// A 429's cool-down.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct CoolDown {
    until: u64,
    at: u64,
    failure: String,
}

/// The circuit breaker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Breaker {
    failures: u32,
    open_until: u64,
    at: u64,
    #[serde(default)]
    failure: Option<String>,
}

fn state_key(provider: Provider, part: &str) -> String {
    format!("state/{}/{part}", provider.as_str())
}

/// Both providers' state (four keys read together).
pub(crate) async fn load_states<P: Platform>(platform: &P) -> Result<States, DbError> {
    let one = |provider| async move {
        let (cool, breaker) = join(
            get::<CoolDown, _>(platform, &state_key(provider, "cool-down")),
            get::<Breaker, _>(platform, &state_key(provider, "breaker")),
        )
        .await;
        let (cool, breaker) = (cool?.unwrap_or_default(), breaker?.unwrap_or_default());
        let last_failure = if cool.at > breaker.at { Some(cool.failure) } else { breaker.failure };
        Ok::<_, DbError>(ProviderState {
            cool_down_until: cool.until,
            consecutive_failures: breaker.failures,
            breaker_open_until: breaker.open_until,
            last_failure,
        })
    };
    let (groq, ollama) = join(one(Provider::Groq), one(Provider::Ollama)).await;
    Ok(States { groq: groq?, ollama: ollama? })
}

/// Records a failed call: a 429 writes only the cool-down (never shortening one read), any other
/// failure only the breaker.
pub(crate) async fn record_failure<P: Platform>(
    platform: &P,
    provider: Provider,
    failure: &Failure,
    now_ms: u64,
) -> Result<(), DbError> {
    let outcome = failure.outcome().as_str().to_owned();
    if let Failure::RateLimited { retry_after_ms } = failure {
        let key = state_key(provider, "cool-down");
        let cool: CoolDown = get(platform, &key).await?.unwrap_or_default();
        let until = cool.until.max(now_ms + retry_after_ms);
        return put(platform, &key, &CoolDown { until, at: now_ms, failure: outcome }).await;
    }
    if !failure.trips_breaker() {
        // The question's fault, not the provider's: nothing to count, and no write (SQL only
        // notes the failure; here a write from a stale read could undo a breaker just opened).
        return Ok(());
    }
    let key = state_key(provider, "breaker");
    let mut breaker: Breaker = get(platform, &key).await?.unwrap_or_default();
    // As in SQL: opening the breaker starts the count again.
    if breaker.failures + 1 >= BREAKER_THRESHOLD {
        breaker.open_until = now_ms + BREAKER_OPEN_MS;
        breaker.failures = 0;
    } else {
        breaker.failures += 1;
    }
    breaker.at = now_ms;
    breaker.failure = Some(outcome);
    put(platform, &key, &breaker).await
}

/// Records a success: closes the breaker and clears the count (written only when there is one).
pub(crate) async fn record_success<P: Platform>(
    platform: &P,
    provider: Provider,
    _now_ms: u64,
) -> Result<(), DbError> {
    let key = state_key(provider, "breaker");
    let breaker: Breaker = get(platform, &key).await?.unwrap_or_default();
    if breaker.failures == 0 && breaker.open_until == 0 {
        return Ok(());
    }
    put(platform, &key, &Breaker { failures: 0, open_until: 0, ..breaker }).await
}

/// The per-minute budget's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Minute {
    window: u64,
    count: u64,
}

/// Spends one request of the minute's budget; `false` when it is spent (nothing written then),
/// and `false` when the store cannot count it: unlike SQL, where a failing database leaves Groq as
/// the only way to answer, here the canned answers need no store, and a store that fails is most
/// likely throttling (Akamai: 1,000 reads and 50 writes a second per app), when an uncounted
/// minute would let a flood through to Groq (and the cool-down could not be written either).
pub(crate) async fn take_minute_slot<P: Platform>(
    platform: &P,
    provider: Provider,
    now_ms: u64,
    per_minute: u32,
) -> bool {
    let key = format!("minute/{}", provider.as_str());
    let window = now_ms - now_ms % MINUTE_MS;
    let Ok(minute) = get::<Minute, _>(platform, &key).await else {
        return false;
    };
    let minute = minute.unwrap_or_default();
    let count = if minute.window == window { minute.count } else { 0 };
    if count >= u64::from(per_minute) {
        return false;
    }
    put(platform, &key, &Minute { window, count: count + 1 }).await.is_ok()
}

// ---- the asker key ----

const SECRET_KEY: &str = "secret/asker";

/// The stored asker key, made from the platform's secure randomness on first use.
pub(crate) async fn hash_key<P: Platform>(platform: &P) -> Result<HashKey, DbError> {
    if let Some(key) = get::<String, _>(platform, SECRET_KEY).await? {
        return Ok(HashKey::from_stored(key));
    }
    let bytes = platform
        .secret_bytes()
        .ok_or_else(|| DbError("no secure randomness for an asker key: set ASKER_KEY".to_owned()))?;
    let key = super::asker::hex(&bytes);
    // Two instances making the first key at once: the last write wins, and the few askers hashed
    // with the other key meanwhile start afresh once.
    put(platform, SECRET_KEY, &key).await?;
    Ok(HashKey::from_stored(key))
}

/// Whether the store answers, for `/health`.
pub(crate) async fn reachable<P: Platform>(platform: &P) -> Result<(), DbError> {
    platform.kv_get(SECRET_KEY).await.map(drop)
}

// ---- compiled-in seed ----

/// A canned answer as the seed inserts it (`fallback_responses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedAnswer {
    /// The row id `SQLite` gives it (insertion order from 1).
    pub id: i64,
    /// `es` or `en`.
    pub language: String,
    /// The personality.
    pub personality: String,
    /// The category.
    pub category: String,
    /// The answer.
    pub text: String,
    /// Space-separated keywords.
    pub keywords: String,
}

/// The seed's rows, parsed once per instance.
pub struct Seed {
    /// `fallback_responses`.
    pub canned: Vec<SeedAnswer>,
    /// `repeat_answers`: language, personality, text, in id order.
    pub repeats: Vec<(String, String, String)>,
    /// `stream_endings`: language, text, in id order.
    pub endings: Vec<(String, String)>,
}

/// The seed compiled in from `d1-migrations/`.
pub static SEED: LazyLock<Seed> = LazyLock::new(|| {
    let canned = inserted(include_str!("../../d1-migrations/0002_seed.sql"), "fallback_responses");
    let repeats = inserted(include_str!("../../d1-migrations/0005_memories.sql"), "repeat_answers");
    let endings = inserted(include_str!("../../d1-migrations/0007_stream_endings.sql"), "stream_endings");
    let column = |row: &[(String, String)], name: &str| {
        row.iter().find(|(column, _)| column == name).map(|(_, value)| value.clone()).unwrap_or_default()
    };
    Seed {
        canned: canned
            .iter()
            .zip(1..)
            .map(|(row, id)| SeedAnswer {
                id,
                language: column(row, "language"),
                personality: column(row, "personality"),
                category: column(row, "category"),
                text: column(row, "text"),
                keywords: column(row, "keywords"),
            })
            .collect(),
        repeats: repeats
            .iter()
            .map(|row| (column(row, "language"), column(row, "personality"), column(row, "text")))
            .collect(),
        endings: endings.iter().map(|row| (column(row, "language"), column(row, "text"))).collect(),
    }
});

/// The canned answers that may answer a question in `category` (its own and `general`).
pub(crate) fn candidates(category: Category, personality: Personality, language: Language) -> Vec<Candidate> {
    SEED.canned
        .iter()
        .filter(|row| row.language == language.as_str() && row.personality == personality.as_str())
        .filter(|row| row.category == category.as_str() || row.category == "general")
        .map(|row| Candidate::new(row.id, &row.text, &row.category, &row.keywords, 0))
        .collect()
}

/// The annoyed answers for a language and personality, in id order.
fn annoyed_answers(language: Language, personality: Personality) -> Vec<&'static str> {
    SEED.repeats
        .iter()
        .filter(|(l, p, _)| l == language.as_str() && p == personality.as_str())
        .map(|(_, _, text)| text.as_str())
        .collect()
}

/// The stream closings in `language`, in id order.
pub(crate) fn endings(language: Language) -> Vec<&'static str> {
    SEED.endings.iter().filter(|(l, _)| l == language.as_str()).map(|(_, text)| text.as_str()).collect()
}

/// A canned answer from the compiled-in seed (see [`super::fallback::pick`]).
pub(crate) fn pick(
    question_words: &[String],
    category: Category,
    personality: Personality,
    language: Language,
    random: u64,
) -> Option<CannedAnswer> {
    super::fallback::choose(candidates(category, personality, language), question_words, category, random)
}

/// A token of a migration's SQL.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Punct(char),
}

fn tokens(sql: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            text.push('\'');
                        }
                        Some('\'') | None => break,
                        Some(c) => text.push(c),
                    }
                }
                tokens.push(Token::Text(text));
            }
            c if c.is_whitespace() => {}
            c if c.is_alphanumeric() || c == '_' => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek().filter(|n| n.is_alphanumeric() || **n == '_') {
                    word.push(next);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
            c => tokens.push(Token::Punct(c)),
        }
    }
    tokens
}

/// The rows `sql` inserts into `table` with `INSERT INTO table (columns) VALUES (...), ...`, each
/// as (column, value) pairs in order; quoted values unquoted, others as written.
fn inserted(sql: &str, table: &str) -> Vec<Vec<(String, String)>> {
    let tokens = tokens(sql);
    let word = |i: usize, w: &str| matches!(tokens.get(i), Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
    let punct = |i: usize, p: char| tokens.get(i) == Some(&Token::Punct(p));
    let mut rows = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !(word(i, "INSERT") && word(i + 1, "INTO") && word(i + 2, table) && punct(i + 3, '(')) {
            i += 1;
            continue;
        }
        i += 4;
        let mut columns = Vec::new();
        while let Some(Token::Word(column)) = tokens.get(i) {
            columns.push(column.clone());
            i += if punct(i + 1, ',') { 2 } else { 1 };
        }
        if !(punct(i, ')') && word(i + 1, "VALUES")) {
            continue;
        }
        i += 2;
        while punct(i, '(') {
            i += 1;
            let mut values = Vec::new();
            while let Some(Token::Text(value) | Token::Word(value)) = tokens.get(i) {
                values.push(value.clone());
                i += if punct(i + 1, ',') { 2 } else { 1 };
            }
            rows.push(columns.iter().cloned().zip(values).collect());
            i += 1; // ')'
            if !punct(i, ',') {
                break;
            }
            i += 1;
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_reads_quotes_comments_and_several_tuples() {
        let sql = "-- a comment with 'quotes'\nINSERT INTO t (a, b) VALUES\n  ('it''s', 'x -- not a comment'),\n  (NULL, 'y');\nINSERT INTO u (a) VALUES ('z');";
        let rows = inserted(sql, "t");
        assert_eq!(
            rows,
            vec![
                vec![("a".into(), "it's".into()), ("b".into(), "x -- not a comment".into())],
                vec![("a".into(), "NULL".into()), ("b".into(), "y".into())],
            ]
        );
        assert_eq!(inserted(sql, "u").len(), 1);
    }

    #[test]
    fn a_value_that_cannot_be_read_is_logged_and_started_afresh() {
        let p = crate::core::memory::MemoryPlatform::key_value();
        pollster::block_on(p.kv_set("state/groq/breaker", b"{\"failures\": \"three\"}")).expect("written");
        let read: Option<Breaker> = pollster::block_on(get(&p, "state/groq/breaker")).expect("no error");
        assert_eq!(read, None);
        assert!(p.logged().iter().any(|l| l.contains("unreadable value under state/groq/breaker")));
        // The providers' state reads as fresh, and the next failure replaces the value.
        assert_eq!(pollster::block_on(load_states(&p)).expect("readable"), States::default());
    }

    #[test]
    fn a_429_never_shortens_a_cool_down_it_reads_and_other_failures_leave_it_alone() {
        let p = crate::core::memory::MemoryPlatform::key_value();
        let limited = |ms| Failure::RateLimited { retry_after_ms: ms };
        pollster::block_on(record_failure(&p, Provider::Groq, &limited(60_000), 1_000)).expect("written");
        pollster::block_on(record_failure(&p, Provider::Groq, &limited(5_000), 2_000)).expect("written");
        let states = pollster::block_on(load_states(&p)).expect("readable");
        assert_eq!(states.groq.cool_down_until, 61_000, "the longer cool-down stands");
        // A junk answer counts toward nothing and writes nothing.
        let writes = p.kv_writes();
        pollster::block_on(record_failure(
            &p,
            Provider::Groq,
            &Failure::Junk(crate::core::clean::Junk::Empty),
            3_000,
        ))
        .expect("no error");
        assert_eq!(p.kv_writes(), writes);
        // Three server errors open the breaker without touching the cool-down.
        for at in [4_000, 5_000, 6_000] {
            let failure = Failure::Http(500);
            pollster::block_on(record_failure(&p, Provider::Groq, &failure, at)).expect("written");
        }
        let states = pollster::block_on(load_states(&p)).expect("readable");
        assert_eq!(
            (states.groq.cool_down_until, states.groq.breaker_open_until),
            (61_000, 6_000 + BREAKER_OPEN_MS)
        );
    }

    #[test]
    fn refused_asks_are_written_one_in_sixteen_counting_sixteen() {
        let p = crate::core::memory::MemoryPlatform::key_value();
        for _ in 0..1_600 {
            pollster::block_on(add_refused(&p, 1)).expect("no error");
        }
        let limited: u64 = pollster::block_on(get(&p, LIMITED_KEY)).expect("readable").unwrap_or(0);
        assert_eq!(limited % REFUSED_SAMPLE, 0);
        assert!((1_200..=2_000).contains(&limited), "{limited} for 1,600 refusals");
        assert!(p.kv_writes() < 160, "{} writes for 1,600 refusals", p.kv_writes());
    }

    #[test]
    fn a_key_too_long_or_a_value_too_large_is_refused() {
        assert!(check_limits(&"k".repeat(MAX_KEY_BYTES), b"v").is_ok());
        assert!(check_limits(&"k".repeat(MAX_KEY_BYTES + 1), b"v").is_err());
        assert!(check_limits("k", &vec![b'v'; MAX_VALUE_BYTES]).is_ok());
        assert!(check_limits("k", &vec![b'v'; MAX_VALUE_BYTES + 1]).is_err());
    }

    #[test]
    fn a_shard_over_its_budget_drops_the_askers_unseen_longest() {
        let mut shard = Shard::new();
        let answer = "a".repeat(200);
        for i in 0..4_000u64 {
            let slot = Slot {
                q: format!("{i:032x}"),
                at: i,
                n: 1,
                tag: 0,
                a: Some(Remembered {
                    answer: answer.clone(),
                    source: Source::Groq,
                    language: Language::En,
                    personality: Personality::Wise,
                    category: Category::Love,
                }),
            };
            shard.insert(
                format!("{i:032x}"),
                AskerEntry { windows: [(i, 1); 3], seen: 1_000 + i, memory: vec![slot] },
            );
        }
        let keep = format!("{:032x}", 0); // this ask's asker, although unseen longest
        let bytes = encoded_shard(&mut shard, 2_000, 0, &keep).expect("encodes");
        assert_eq!(bytes, serde_json::to_vec(&shard).expect("encodes"), "the shard as pruned");
        assert!(bytes.len() <= SHARD_BUDGET_BYTES, "{} bytes", bytes.len());
        assert!(bytes.len() > SHARD_BUDGET_BYTES * 8 / 10, "only what is needed goes: {} bytes", bytes.len());
        assert!(shard.contains_key(&keep), "this ask's asker stays");
        // Those kept are exactly the latest seen.
        let oldest_kept = shard.iter().filter(|(k, _)| **k != keep).map(|(_, e)| e.seen).min().expect("kept");
        for i in 1..4_000u64 {
            let kept = shard.contains_key(&format!("{i:032x}"));
            assert_eq!(kept, 1_000 + i >= oldest_kept, "asker {i}");
        }
    }

    #[test]
    fn an_ask_into_a_shard_over_its_budget_writes_it_back_within_the_budget_and_keeps_the_asker() {
        use crate::core::admission::{Asking, admit};
        use crate::core::remember::Memo;
        let p = crate::core::memory::MemoryPlatform::key_value();
        let config = Config::from_lookup(|name| match name {
            "ASKER_KEY" => Some("a-long-enough-asker-key".to_owned()),
            _ => None,
        })
        .expect("valid");
        let key = HashKey::for_tests(b"a-long-enough-asker-key");
        let asker = (0..65_536)
            .map(|i| key.asker(Some(&format!("10.0.{}.{}", i / 256, i % 256))))
            .find(|asker| shard_of(asker) == 0)
            .expect("one in 256 addresses");
        let now = crate::core::memory::EPOCH_MS;
        let mut shard = Shard::new();
        for i in 0..1_500u64 {
            let slot = Slot { q: format!("{i:032x}"), at: now - 1_000, n: 1, tag: 0, a: None };
            let entry = AskerEntry {
                windows: [(now - i, 1); 3],
                seen: now - 10_000 + i,
                memory: vec![slot.clone(), slot.clone(), slot],
            };
            shard.insert(format!("{:02x}{i:030x}", 0), entry);
        }
        let before = serde_json::to_vec(&shard).expect("encodes");
        assert!(before.len() > SHARD_BUDGET_BYTES, "{} bytes", before.len());
        pollster::block_on(p.kv_set("askers/00", &before)).expect("written");
        let memo = Memo::new(&key, "Will it be?", config.memory_ttl_s);
        let asking = Asking {
            asker: Some(&asker),
            memo: memo.as_ref(),
            language: Language::En,
            personality: Personality::Wise,
        };
        let admission = pollster::block_on(admit(&p, &config, asking, now));
        assert_eq!(admission.limited, None);
        let after = p.kv_entries().into_iter().find(|(k, _)| k == "askers/00").expect("written back").1;
        assert!(after.len() <= SHARD_BUDGET_BYTES, "{} bytes", after.len());
        let written: Shard = serde_json::from_str(&after).expect("a shard");
        assert!(after.len() > SHARD_BUDGET_BYTES * 8 / 10, "only what is needed goes: {} bytes", after.len());
        assert_eq!(written[asker.as_str()].windows, [(now, 1); 3], "this ask counted");
    }

    #[test]
    fn askers_unseen_for_a_day_are_dropped_when_their_shard_is_written() {
        let mut shard = Shard::new();
        shard.insert("old".into(), AskerEntry { seen: 1, ..AskerEntry::default() });
        shard.insert("new".into(), AskerEntry { seen: ASKER_KEPT_MS + 2, ..AskerEntry::default() });
        encoded_shard(&mut shard, ASKER_KEPT_MS + 2, 0, "new").expect("encodes");
        assert_eq!(shard.keys().collect::<Vec<_>>(), ["new"]);
    }
}
