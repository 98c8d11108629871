//! Shared provider state in the fallback database: cool-downs after a 429, the circuit breaker,
//! and the edge's own per-minute Groq budget. Living in the database, it holds for every isolate
//! and instance, not just the one that saw the 429.

use super::domain::{Outcome, Provider, ProviderStatus};
use super::providers::Failure;
use serde::Deserialize;

use super::seam::{Count, DbError, Platform, Row, Statement, rows_of};

/// Consecutive failures that open the breaker.
pub const BREAKER_THRESHOLD: u32 = 3;
/// How long an open breaker keeps a provider out.
pub const BREAKER_OPEN_MS: u64 = 30_000;
/// Length of one rate window.
const MINUTE_MS: u64 = 60_000;

/// One provider's shared state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderState {
    /// Until when (ms since epoch) a 429 keeps the provider out.
    pub cool_down_until: u64,
    /// Failures in a row, reset by a success.
    pub consecutive_failures: u32,
    /// Until when the open breaker keeps the provider out.
    pub breaker_open_until: u64,
    /// The outcome of the last failure, for the dashboard.
    pub last_failure: Option<String>,
}

/// Why a provider is not tried right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// In cool-down after a 429.
    CoolDown,
    /// Breaker open after repeated failures.
    BreakerOpen,
}

impl Unavailable {
    /// The outcome recorded for the dashboard.
    #[must_use]
    pub fn outcome(self) -> Outcome {
        match self {
            Unavailable::CoolDown => Outcome::CoolDown,
            Unavailable::BreakerOpen => Outcome::BreakerOpen,
        }
    }

    /// What `/health` says of a provider held back this way.
    #[must_use]
    pub fn status(self) -> ProviderStatus {
        match self {
            Unavailable::CoolDown => ProviderStatus::CoolDown,
            Unavailable::BreakerOpen => ProviderStatus::BreakerOpen,
        }
    }
}

/// A `provider_state` row.
#[derive(Debug, Deserialize)]
struct StateRow {
    provider: String,
    #[serde(default)]
    cool_down_until: u64,
    #[serde(default)]
    consecutive_failures: u32,
    #[serde(default)]
    breaker_open_until: u64,
    last_failure: Option<String>,
}

impl From<StateRow> for ProviderState {
    fn from(row: StateRow) -> ProviderState {
        ProviderState {
            cool_down_until: row.cool_down_until,
            consecutive_failures: row.consecutive_failures,
            breaker_open_until: row.breaker_open_until,
            last_failure: row.last_failure,
        }
    }
}

impl ProviderState {
    /// Whether the provider may be tried at `now_ms`; a breaker past its time lets one try through.
    pub fn check(&self, now_ms: u64) -> Result<(), Unavailable> {
        if now_ms < self.cool_down_until {
            Err(Unavailable::CoolDown)
        } else if now_ms < self.breaker_open_until {
            Err(Unavailable::BreakerOpen)
        } else {
            Ok(())
        }
    }
}

/// Both providers' state, read in one query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct States {
    /// Groq's state.
    pub groq: ProviderState,
    /// Ollama's state.
    pub ollama: ProviderState,
}

impl States {
    /// The state of `provider`.
    #[must_use]
    pub fn of(&self, provider: Provider) -> &ProviderState {
        match provider {
            Provider::Groq => &self.groq,
            Provider::Ollama => &self.ollama,
        }
    }
}

/// The statement that reads both providers' state (see [`from_rows`]).
#[must_use]
pub fn load_statement() -> Statement {
    Statement::new(
        "SELECT provider, cool_down_until, consecutive_failures, breaker_open_until, last_failure \
         FROM provider_state",
        Vec::new(),
    )
}

/// Both providers' state from the rows of [`load_statement`].
pub fn from_rows(rows: Vec<Row>) -> Result<States, DbError> {
    let mut states = States::default();
    for row in rows_of::<StateRow>(rows)? {
        match Provider::parse(&row.provider) {
            Some(Provider::Groq) => states.groq = row.into(),
            Some(Provider::Ollama) => states.ollama = row.into(),
            None => {}
        }
    }
    Ok(states)
}

/// Reads both providers' state.
pub async fn load<P: Platform>(platform: &P) -> Result<States, DbError> {
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            return super::kv::load_states(platform).await;
        }
    }
    let statement = load_statement();
    from_rows(platform.query(statement.sql, &statement.params).await?)
}

/// Spends one request of `provider`'s per-minute budget; `false` when the minute is full. The
/// platform's own limiter counts it when there is one (Workers' rate-limiting binding: no D1 row
/// written); else one atomic upsert in the database, so concurrent instances cannot both take the
/// last slot.
pub async fn take_minute_slot<P: Platform>(
    platform: &P,
    provider: Provider,
    now_ms: u64,
    per_minute: u32,
) -> Result<bool, DbError> {
    if let Some(taken) = platform.minute_slot(provider).await {
        return Ok(taken);
    }
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            return Ok(super::kv::take_minute_slot(platform, provider, now_ms, per_minute).await);
        }
    }
    let window = now_ms - now_ms % MINUTE_MS;
    let rows: Vec<Count> = platform
        .rows_as(
            "INSERT INTO rate_windows (provider, window_start, count) VALUES (?, ?, 1) \
             ON CONFLICT (provider, window_start) DO UPDATE SET count = count + 1 RETURNING count",
            &[provider.as_str().into(), window.into()],
        )
        .await?;
    let count = rows.first().map_or(u64::MAX, |row| row.count);
    Ok(count <= u64::from(per_minute))
}

/// Forgets rate windows older than an hour.
#[must_use]
pub fn prune_minute_slots(now_ms: u64) -> Statement {
    Statement::new(
        "DELETE FROM rate_windows WHERE window_start < ?",
        vec![now_ms.saturating_sub(60 * MINUTE_MS).into()],
    )
}

/// Records a failed call: a cool-down for a rate limit, else one more failure toward the breaker.
pub async fn record_failure<P: Platform>(
    platform: &P,
    provider: Provider,
    failure: &Failure,
    now_ms: u64,
) -> Result<(), DbError> {
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            return super::kv::record_failure(platform, provider, failure, now_ms).await;
        }
    }
    let (sql, params) = match failure {
        Failure::RateLimited { retry_after_ms } => (
            "UPDATE provider_state SET cool_down_until = MAX(cool_down_until, ?), last_failure = ?, \
             updated_at = ? WHERE provider = ?",
            vec![
                (now_ms + retry_after_ms).into(),
                failure.outcome().as_str().into(),
                now_ms.into(),
                provider.as_str().into(),
            ],
        ),
        _ if failure.trips_breaker() => (
            // Opening the breaker starts the count again: once it closes, it takes another
            // BREAKER_THRESHOLD failures in a row to open it, not one.
            "UPDATE provider_state SET \
             breaker_open_until = CASE WHEN consecutive_failures + 1 >= ? THEN ? ELSE breaker_open_until END, \
             consecutive_failures = CASE WHEN consecutive_failures + 1 >= ? THEN 0 ELSE consecutive_failures + 1 END, \
             last_failure = ?, updated_at = ? WHERE provider = ?",
            vec![
                u64::from(BREAKER_THRESHOLD).into(),
                (now_ms + BREAKER_OPEN_MS).into(),
                u64::from(BREAKER_THRESHOLD).into(),
                failure.outcome().as_str().into(),
                now_ms.into(),
                provider.as_str().into(),
            ],
        ),
        _ => (
            "UPDATE provider_state SET last_failure = ?, updated_at = ? WHERE provider = ?",
            vec![failure.outcome().as_str().into(), now_ms.into(), provider.as_str().into()],
        ),
    };
    platform.query(sql, &params).await.map(drop)
}

/// Records a success: closes the breaker and clears the failure count.
pub async fn record_success<P: Platform>(
    platform: &P,
    provider: Provider,
    now_ms: u64,
) -> Result<(), DbError> {
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            return super::kv::record_success(platform, provider, now_ms).await;
        }
    }
    platform
        .query(
            "UPDATE provider_state SET consecutive_failures = 0, breaker_open_until = 0, updated_at = ? \
             WHERE provider = ? AND (consecutive_failures > 0 OR breaker_open_until > 0)",
            &[now_ms.into(), provider.as_str().into()],
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cool_down_and_breaker_keep_a_provider_out_until_their_time() {
        let state =
            ProviderState { cool_down_until: 100, breaker_open_until: 200, ..ProviderState::default() };
        assert_eq!(state.check(50), Err(Unavailable::CoolDown));
        assert_eq!(state.check(150), Err(Unavailable::BreakerOpen));
        assert_eq!(state.check(200), Ok(()));
    }
}
