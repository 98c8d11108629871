//! Before any provider is called, the ask makes one trip to the database (one D1 `batch` on
//! Workers): it counts the asker against the limits, counts the question against the memory and
//! reads back the remembered answer, and reads the providers' state. The asker's row holds both
//! the limit windows and the memory, so an ask that passes writes that one row here; one that a
//! limit refuses writes nothing (its count is written after the response, see
//! [`super::limits::write_refused`]).

use std::fmt::Write as _;
use std::sync::LazyLock;

use serde::Deserialize;

use super::asker::Asker;
use super::config::Config;
use super::domain::{Language, Personality};
use super::limits::{self, Limited, WindowsRow};
use super::remember::{self, ANNOYED_FROM, Memo, MemoryRow, Recalled};
use super::seam::{Platform, Row, SqlValue, Statement, rows_of};
use super::state::{self, States};

/// Where an ask's consultation is written: its key (the table's rowid, in time order) and, when
/// the memory will find it, the tag the asker's row points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKey {
    /// `created_at * 1024` plus a random number below 1024: unique, ordered to the millisecond,
    /// and below 2^53 (JavaScript numbers carry it exactly) until about the year 2248.
    pub key: u64,
    /// Set when this consultation's answer is the one to remember: its text is kept with it.
    pub memo_tag: Option<u64>,
}

thread_local! {
    /// The last key this isolate or instance gave out.
    static LAST_KEY: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl RecordKey {
    /// A new key for a consultation started at `now_ms`, remembered by no memory. Within one
    /// isolate keys only grow, even within one millisecond (a Worker's clock stands still between
    /// I/O), so "the latest" is never a tie; across isolates the random part keeps them apart.
    pub fn fresh<P: Platform>(platform: &P, now_ms: u64) -> RecordKey {
        let drawn = now_ms * 1024 + platform.random_u64() % 1024;
        let key = LAST_KEY.with(|last| {
            let key = drawn.max(last.get() + 1);
            last.set(key);
            key
        });
        RecordKey { key, memo_tag: None }
    }
}

/// What the trip found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// A limit refused the ask: answer 429, call nothing, record nothing.
    pub limited: Option<Limited>,
    /// The memory's answer: give it, call nothing.
    pub recalled: Option<Recalled>,
    /// Both providers' state (all available when it could not be read).
    pub states: States,
    /// Where to write the consultation.
    pub record: RecordKey,
}

/// Who asks what, as far as the database may know: the asker's hash and the question's memo.
#[derive(Debug, Clone, Copy)]
pub struct Asking<'a> {
    /// The asker, when the hash key could be read.
    pub asker: Option<&'a Asker>,
    /// The question's memo, when memory is on.
    pub memo: Option<&'a Memo>,
    /// The asked language and personality (the annoyed answers are in them).
    pub language: Language,
    /// See `language`.
    pub personality: Personality,
}

/// Counts the ask, recalls the memory and reads the providers' state, in one round trip. A
/// database that fails only switches limits and memory off for this ask: the chain answers.
pub async fn admit<P: Platform>(platform: &P, config: &Config, asking: Asking<'_>, now_ms: u64) -> Admission {
    let mut admission = Admission {
        limited: None,
        recalled: None,
        states: States::default(),
        record: RecordKey::fresh(platform, now_ms),
    };
    let providers = config.groq.is_some() || config.ollama.is_some();
    let asker = asking.asker.filter(|_| !config.ask_limits.is_empty() || asking.memo.is_some());
    if asker.is_none() && !providers {
        return admission;
    }
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            return super::kv::admit(platform, config, asking, asker, providers, admission, now_ms).await;
        }
    }
    let nonce = platform.random_u64() >> 11;
    let memo_tag = platform.random_u64() >> 11;
    let mut statements = Vec::with_capacity(4);
    if let Some(asker) = asker {
        statements.push(count_ask(config, asking, asker, now_ms, admission.record.key, memo_tag, nonce));
        if !config.ask_limits.is_empty() {
            let params = vec![asker.as_str().into(), nonce.into()];
            statements.push(Statement::new(WINDOWS_IF_REFUSED, params));
        }
    }
    if providers {
        statements.push(state::load_statement());
    }
    let mut results = match platform.batch(&statements).await {
        Ok(results) => results.into_iter(),
        Err(error) => {
            platform.log_error(&format!("admission unreadable, limits and memory off for this ask: {error}"));
            return admission;
        }
    };
    if asker.is_some() {
        let counted = results.next().unwrap_or_default();
        let refused = if config.ask_limits.is_empty() {
            None
        } else {
            let windows = results.next().unwrap_or_default();
            refusal(config, counted.is_empty(), windows, now_ms)
        };
        if let Some(limited) = refused {
            admission.limited = Some(limited);
            return admission;
        }
        if let Some(memo) = asking.memo {
            remembered(platform, &mut admission, memo, asking, counted);
        }
    }
    if providers {
        match results.next().map(state::from_rows).transpose() {
            Ok(states) => admission.states = states.unwrap_or_default(),
            Err(error) => platform.log_error(&format!("provider state unreadable: {error}")),
        }
    }
    admission
}

/// The limit that refused the ask, when the count returned no row.
fn refusal(config: &Config, refused: bool, windows: Vec<Row>, now_ms: u64) -> Option<Limited> {
    if !refused {
        return None;
    }
    let windows: Vec<WindowsRow> = rows_of(windows).ok()?;
    windows.first().and_then(|row| row.limited(&config.ask_limits, now_ms))
}

/// Reads the memory's part of the counted row into `admission`: the answer to give, or where the
/// new answer will be remembered.
fn remembered<P: Platform>(
    platform: &P,
    admission: &mut Admission,
    memo: &Memo,
    asking: Asking<'_>,
    counted: Vec<Row>,
) {
    let row = match rows_of::<CountedRow>(counted) {
        Ok(mut rows) => rows.pop(),
        Err(error) => {
            platform.log_error(&format!("memory unreadable: {error}"));
            None
        }
    };
    let Some(row) = row else { return };
    match remember::recall(memo, &row.memory, asking.language, asking.personality) {
        Ok(Some(recalled)) => admission.recalled = Some(recalled),
        // A new question, or one whose remembered consultation is missing (its ask failed, or its
        // record is still being written): this ask's answer is the one the memory points at. If the
        // other record lands after all, this one takes a fresh key when written.
        Ok(None) => admission.record = RecordKey { key: row.memo_key, memo_tag: Some(row.memo_tag) },
        Err(error) => platform.log_error(&format!("memory unreadable: {error}")),
    }
}

/// The asker's row as the count returns it.
#[derive(Debug, Deserialize)]
struct CountedRow {
    #[serde(flatten)]
    memory: MemoryRow,
    memo_key: u64,
    memo_tag: u64,
}

/// The count: starts or counts each limit window and the memory's question, in the asker's one
/// row; when a limit is full the whole update is skipped and no row comes back. The memory
/// restarts (a new key and tag) for another question or once its time is over.
fn count_ask(
    config: &Config,
    asking: Asking<'_>,
    asker: &Asker,
    now_ms: u64,
    key: u64,
    memo_tag: u64,
    nonce: u64,
) -> Statement {
    let mut params: Vec<SqlValue> = vec![asker.as_str().into(), now_ms.into()];
    params.extend(limits::limit_params(&config.ask_limits));
    let memo = asking.memo;
    params.extend([
        memo.map(|m| m.question.as_str()).into(),
        memo.map_or(0, |m| m.ttl_ms).into(),
        key.into(),
        memo.map(|_| memo_tag).into(),
        nonce.into(),
        asking.language.as_str().into(),
        asking.personality.as_str().into(),
        ANNOYED_FROM.into(),
    ]);
    Statement::new(COUNT_ASK.as_str(), params)
}

/// How many questions an asker's row remembers (`memo1_…` to `memo3_…`, migration 0006).
pub const MEMORY_SLOTS: usize = 3;

/// The count's SQL (built once: three memory slots of the same shape).
/// ?1 asker, ?2 now; ?3–?8 each window's period and size; ?9 the question's hash (NULL: memory
/// off), ?10 the memory's time in ms, ?11 the new consultation key, ?12 its tag, ?13 this ask's
/// nonce; ?14 language and ?15 personality of the annoyed answers, ?16 from which time.
///
/// Each slot: the question asked again within the memory's time counts one more time; asked again
/// after it, or not in any slot and this slot asked longest ago, the slot starts afresh (a new key
/// and tag, so a stale consultation is never found). RETURNING reads the slot holding the
/// question, and the remembered consultation (a rowid lookup) when asked before.
static COUNT_ASK: LazyLock<String> = LazyLock::new(|| {
    let same = |i: usize| format!("COALESCE(memo{i}_question = ?9, 0)");
    let any_same = (1..=MEMORY_SLOTS).map(same).collect::<Vec<_>>().join(" OR ");
    // The slot asked longest ago, when no slot holds the question (ties: the first).
    let oldest = |i: usize| {
        let older: Vec<String> =
            (1..=MEMORY_SLOTS)
                .filter(|&j| j != i)
                .map(|j| {
                    if j < i {
                        format!("memo{i}_at < memo{j}_at")
                    } else {
                        format!("memo{i}_at <= memo{j}_at")
                    }
                })
                .collect();
        older.join(" AND ")
    };
    let mut set = Vec::new();
    for i in 1..=MEMORY_SLOTS {
        let live = format!("({} AND memo{i}_at > ?2 - ?10)", same(i));
        let fresh = format!(
            "(({s} AND memo{i}_at <= ?2 - ?10) OR (?9 IS NOT NULL AND NOT ({any_same}) AND {oldest}))",
            s = same(i),
            oldest = oldest(i)
        );
        set.push(format!(
            "memo{i}_times = CASE WHEN {live} THEN memo{i}_times + 1 WHEN {fresh} THEN 1 ELSE memo{i}_times END"
        ));
        for (column, value) in [("key", "?11"), ("tag", "?12"), ("at", "?2"), ("question", "?9")] {
            set.push(format!("memo{i}_{column} = CASE WHEN {fresh} THEN {value} ELSE memo{i}_{column} END"));
        }
    }
    // The slot that holds the question, after the update.
    let held = |column: &str| {
        let mut arms = String::new();
        for i in 1..=MEMORY_SLOTS {
            let _ = write!(arms, " WHEN memo{i}_question = ?9 THEN memo{i}_{column}");
        }
        format!("CASE{arms} END")
    };
    format!(
        "INSERT INTO askers (asker, start1, count1, start2, count2, start3, count3, seen_at, \
         memo1_question, memo1_at, memo1_times, memo1_key, memo1_tag, last_ask) \
         VALUES (?1, ?2, 1, ?2, 1, ?2, 1, ?2, ?9, ?2, CASE WHEN ?9 IS NULL THEN 0 ELSE 1 END, ?11, ?12, ?13) \
         ON CONFLICT (asker) DO UPDATE SET \
         count1 = CASE WHEN ?2 >= start1 + ?3 THEN 1 ELSE count1 + 1 END, \
         start1 = CASE WHEN ?2 >= start1 + ?3 THEN ?2 ELSE start1 END, \
         count2 = CASE WHEN ?2 >= start2 + ?5 THEN 1 ELSE count2 + 1 END, \
         start2 = CASE WHEN ?2 >= start2 + ?5 THEN ?2 ELSE start2 END, \
         count3 = CASE WHEN ?2 >= start3 + ?7 THEN 1 ELSE count3 + 1 END, \
         start3 = CASE WHEN ?2 >= start3 + ?7 THEN ?2 ELSE start3 END, \
         seen_at = ?2, last_ask = ?13, {set} \
         WHERE (?2 >= start1 + ?3 OR count1 < ?4) AND (?2 >= start2 + ?5 OR count2 < ?6) \
         AND (?2 >= start3 + ?7 OR count3 < ?8) \
         RETURNING COALESCE({times}, 0) AS times, COALESCE({key}, 0) AS memo_key, \
         COALESCE({tag}, 0) AS memo_tag, \
         CASE WHEN {times} > 1 THEN (SELECT json_object('answer', answer, 'source', source, \
         'language', language, 'personality', personality, 'category', category) FROM consultations \
         WHERE key = {key} AND memo_tag = {tag} AND answer IS NOT NULL) END AS remembered, \
         CASE WHEN {times} >= ?16 THEN (SELECT json_group_array(text) FROM (SELECT text FROM \
         repeat_answers WHERE language = ?14 AND personality = ?15 ORDER BY id)) END AS annoyed",
        set = set.join(", "),
        times = held("times"),
        key = held("key"),
        tag = held("tag"),
    )
});

/// The windows, when the count refused this ask (the row's nonce is not this ask's).
const WINDOWS_IF_REFUSED: &str = "SELECT start1, count1, start2, count2, start3, count3 FROM askers \
     WHERE asker = ?1 AND last_ask IS NOT ?2";
