//! Per-asker limits (`ASK_LIMITS`, by default the original backend's 3 a second, 20 per 10 s and
//! 100 a minute). Each limit is a window that starts with an asker's first ask after the last
//! window ended, as the original backend's throttler counted. The windows live in one database
//! row per asker (`askers`, migration 0004), so every isolate and instance counts the same asks;
//! an ask that passes writes that one row (with its memory, see [`super::admission`]), an ask
//! that is refused writes nothing there.

use serde::Deserialize;

use std::cell::Cell;

use super::config::{AskLimit, MAX_ASK_LIMITS};
use super::seam::{DbError, Platform, SqlValue, Statement};

/// An ask refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The limit that keeps the asker out longest.
    pub limit: AskLimit,
    /// Whole seconds until the next ask would pass (at least 1).
    pub retry_after_s: u64,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let AskLimit { asks, period_ms } = self.limit;
        let period = match period_ms {
            1_000 => "a second".to_owned(),
            60_000 => "a minute".to_owned(),
            ms if ms % 60_000 == 0 => format!("per {} minutes", ms / 60_000),
            ms => format!("per {} seconds", ms / 1_000),
        };
        write!(
            f,
            "too many questions: the spirits take at most {asks} {period} from one asker; ask again in {} s",
            self.retry_after_s
        )
    }
}

thread_local! {
    /// Refused asks counted here and not yet written to the dashboard's `limited` count, and when
    /// it was last written. Per isolate on Workers; Spin makes an instance per request, so there
    /// each refusal is written at once (in-process).
    static REFUSED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// How often an isolate writes its refused asks to the database at most: a flood of refused asks
/// costs one row written per 10 s per isolate, not one per ask (D1 bills rows written).
pub const REFUSED_WRITE_EVERY_MS: u64 = 10_000;

/// One more ask refused by a limit, to count.
pub fn refused() {
    REFUSED.with(|cell| {
        let (pending, written_at) = cell.get();
        cell.set((pending + 1, written_at));
    });
}

/// Adds the refused asks counted so far to the `limited` count, when there are some and the last
/// write is [`REFUSED_WRITE_EVERY_MS`] old (the first one at once).
pub async fn write_refused<P: Platform>(platform: &P) -> Result<(), DbError> {
    let (pending, written_at) = REFUSED.with(Cell::get);
    let now = platform.now_ms();
    if pending == 0 || (written_at > 0 && now.saturating_sub(written_at) < REFUSED_WRITE_EVERY_MS) {
        return Ok(());
    }
    add_limited(platform, pending).await?;
    REFUSED.with(|cell| {
        let (now_pending, _) = cell.get();
        cell.set((now_pending.saturating_sub(pending), now));
    });
    Ok(())
}

/// Adds `pending` to the dashboard's `limited` count.
async fn add_limited<P: Platform>(platform: &P, pending: u64) -> Result<(), DbError> {
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            return super::kv::add_refused(platform, pending).await;
        }
    }
    platform
        .query(
            "INSERT INTO edge_counts (name, n) VALUES ('limited', ?) \
             ON CONFLICT (name) DO UPDATE SET n = n + excluded.n",
            &[pending.into()],
        )
        .await
        .map(drop)
}

/// The limits as the admission statement's parameters: each window's period and size, unused
/// ones padded with a limit no asker reaches (`ASK_LIMITS=off` pads all three).
pub(crate) fn limit_params(limits: &[AskLimit]) -> Vec<SqlValue> {
    let mut params = Vec::with_capacity(2 * MAX_ASK_LIMITS);
    for i in 0..MAX_ASK_LIMITS {
        let limit = limit_at(limits, i);
        params.push(limit.period_ms.into());
        params.push(u64::from(limit.asks).into());
    }
    params
}

/// The `i`th window's limit; an unused window gets one no asker reaches.
pub(crate) fn limit_at(limits: &[AskLimit], i: usize) -> AskLimit {
    limits.get(i).copied().unwrap_or(AskLimit { asks: u32::MAX, period_ms: 1_000 })
}

/// An `askers` row: the start and count of each window.
#[derive(Debug, Deserialize)]
pub(crate) struct WindowsRow {
    start1: u64,
    count1: u64,
    start2: u64,
    count2: u64,
    start3: u64,
    count3: u64,
}

impl WindowsRow {
    /// The windows' starts and counts, in order.
    #[cfg(any(feature = "spin", not(target_arch = "wasm32")))] // the key-value store only
    pub(crate) fn new(windows: [(u64, u64); MAX_ASK_LIMITS]) -> WindowsRow {
        let [(start1, count1), (start2, count2), (start3, count3)] = windows;
        WindowsRow { start1, count1, start2, count2, start3, count3 }
    }

    /// The full window that ends last, if any is full at `now_ms`.
    pub(crate) fn limited(&self, limits: &[AskLimit], now_ms: u64) -> Option<Limited> {
        let windows = [(self.start1, self.count1), (self.start2, self.count2), (self.start3, self.count3)];
        limits
            .iter()
            .zip(windows)
            .filter(|(limit, (start, count))| {
                now_ms < start + limit.period_ms && *count >= u64::from(limit.asks)
            })
            .map(|(limit, (start, _))| Limited {
                limit: *limit,
                retry_after_s: (start + limit.period_ms - now_ms).div_ceil(1_000).max(1),
            })
            .max_by_key(|limited| limited.retry_after_s)
    }
}

/// Forgets askers whose every window has ended (none lasts over a day) and whose memory has
/// expired (`memory_ttl_ms`).
#[must_use]
pub fn prune(now_ms: u64, memory_ttl_ms: u64) -> Statement {
    let before = now_ms.saturating_sub(memory_ttl_ms.max(86_400_000));
    Statement::new("DELETE FROM askers WHERE seen_at < ?", vec![before.into()])
}
