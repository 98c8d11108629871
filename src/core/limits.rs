//! Per-asker limits (`ASK_LIMITS`, by default the original backend's 3 a second, 20 per 10 s and
//! 100 a minute). Each limit is a window that starts with an asker's first ask after the last
//! window ended, as the original backend's throttler counted. The windows live in one database
//! row per asker (`askers`, migration 0004), so every isolate and instance counts the same asks;
//! an ask that passes writes that one row, an ask that is refused writes nothing.

use serde::Deserialize;

use super::asker::Asker;
use super::config::{AskLimit, MAX_ASK_LIMITS};
use super::seam::{DbError, Platform, SqlValue};

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

/// Counts one ask of `asker` at `now_ms` against `limits`: `Ok(Err(Limited))` when a limit is
/// full. No limits (`ASK_LIMITS=off`) costs nothing.
pub async fn admit<P: Platform>(
    platform: &P,
    limits: &[AskLimit],
    asker: &Asker,
    now_ms: u64,
) -> Result<Result<(), Limited>, DbError> {
    if limits.is_empty() {
        return Ok(Ok(()));
    }
    let counted = platform.query(COUNT_ASK, &count_params(limits, asker, now_ms)).await?;
    if !counted.is_empty() {
        return Ok(Ok(()));
    }
    let rows: Vec<WindowsRow> = platform
        .rows_as(
            "SELECT start1, count1, start2, count2, start3, count3 FROM askers WHERE asker = ?",
            &[asker.as_str().into()],
        )
        .await?;
    Ok(rows.first().and_then(|row| row.limited(limits, now_ms)).map_or(Ok(()), Err))
}

/// Starts or counts each window; the update happens only when every window has room, so a refused
/// ask changes nothing and returns no row. Unused windows get a limit no asker reaches.
const COUNT_ASK: &str = "INSERT INTO askers (asker, start1, count1, start2, count2, start3, count3, seen_at) \
     VALUES (?1, ?2, 1, ?2, 1, ?2, 1, ?2) \
     ON CONFLICT (asker) DO UPDATE SET \
     count1 = CASE WHEN ?2 >= start1 + ?3 THEN 1 ELSE count1 + 1 END, \
     start1 = CASE WHEN ?2 >= start1 + ?3 THEN ?2 ELSE start1 END, \
     count2 = CASE WHEN ?2 >= start2 + ?5 THEN 1 ELSE count2 + 1 END, \
     start2 = CASE WHEN ?2 >= start2 + ?5 THEN ?2 ELSE start2 END, \
     count3 = CASE WHEN ?2 >= start3 + ?7 THEN 1 ELSE count3 + 1 END, \
     start3 = CASE WHEN ?2 >= start3 + ?7 THEN ?2 ELSE start3 END, \
     seen_at = ?2 \
     WHERE (?2 >= start1 + ?3 OR count1 < ?4) AND (?2 >= start2 + ?5 OR count2 < ?6) \
     AND (?2 >= start3 + ?7 OR count3 < ?8) \
     RETURNING count1";

fn count_params(limits: &[AskLimit], asker: &Asker, now_ms: u64) -> Vec<SqlValue> {
    let mut params = vec![asker.as_str().into(), now_ms.into()];
    for i in 0..MAX_ASK_LIMITS {
        let limit = limits.get(i).copied().unwrap_or(AskLimit { asks: u32::MAX, period_ms: 1_000 });
        params.push(limit.period_ms.into());
        params.push(u64::from(limit.asks).into());
    }
    params
}

/// An `askers` row: the start and count of each window.
#[derive(Debug, Deserialize)]
struct WindowsRow {
    start1: u64,
    count1: u64,
    start2: u64,
    count2: u64,
    start3: u64,
    count3: u64,
}

impl WindowsRow {
    /// The full window that ends last, if any is full at `now_ms`.
    fn limited(&self, limits: &[AskLimit], now_ms: u64) -> Option<Limited> {
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

/// Forgets askers whose every window has ended (none lasts over a day).
pub async fn prune<P: Platform>(platform: &P, now_ms: u64) -> Result<(), DbError> {
    platform
        .query("DELETE FROM askers WHERE seen_at < ?", &[now_ms.saturating_sub(86_400_000).into()])
        .await
        .map(drop)
}
