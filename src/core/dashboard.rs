//! `GET /dashboard` metrics: answers per source, the fallback rate, per-provider latency
//! percentiles, outcome and failure counts, and the providers' current cool-downs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::Config;
use super::domain::{Outcome, Provider, Source};
use super::seam::{Count, DbError, Platform, Statement, rows_of};
use super::state::{self, ProviderState};
use super::time::{future_rfc3339, rfc3339};

/// Latest consultations used for latency percentiles. Each view reads this many rows (plus a few
/// dozen running totals, see `d1-migrations/0006_one_round_trip.sql`), and D1 bills rows read.
pub const LATENCY_WINDOW: u64 = 200;

/// The dashboard's JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dashboard {
    /// When these numbers were read.
    pub generated_at: String,
    /// The first consultation recorded, if any.
    #[cfg_attr(feature = "openapi", schema(required = true))] // always sent, null when absent
    pub since: Option<String>,
    /// Consultations recorded.
    pub total: u64,
    /// Consultations answered by each source (all three always present).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::core::openapi::BySource))]
    pub by_source: BTreeMap<&'static str, u64>,
    /// Share of consultations answered from the canned answers (0 to 1).
    pub fallback_rate: f64,
    /// Whole-ask latency over the latest consultations.
    pub latency_ms: Percentiles,
    /// How many of the latest consultations the percentiles cover.
    pub latency_window: u64,
    /// The edge's own share of an ask over the latest consultations: the whole ask's time minus
    /// the time spent waiting for providers (the database, the cleaning, the edge's code).
    pub overhead_ms: Percentiles,
    /// Asks refused by a per-asker limit (`ASK_LIMITS`): answered 429, not consultations.
    pub limited: u64,
    /// Per provider.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::core::openapi::Providers))]
    pub providers: BTreeMap<&'static str, ProviderMetrics>,
}

/// p50 and p95 in milliseconds (nearest rank); `None` without samples.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Percentiles {
    /// Median.
    #[cfg_attr(feature = "openapi", schema(required = true))] // always sent, null when absent
    pub p50: Option<u64>,
    /// 95th percentile.
    #[cfg_attr(feature = "openapi", schema(required = true))] // always sent, null when absent
    pub p95: Option<u64>,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples`.
    #[must_use]
    pub fn of(mut samples: Vec<u64>) -> Percentiles {
        samples.sort_unstable();
        Percentiles { p50: nearest_rank(&samples, 50), p95: nearest_rank(&samples, 95) }
    }
}

fn nearest_rank(sorted: &[u64], percent: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent * sorted.len() as u64).div_ceil(100).max(1);
    sorted.get(rank as usize - 1).copied()
}

/// One provider's numbers.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderMetrics {
    /// Whether the provider is configured here.
    pub configured: bool,
    /// Times it was called.
    pub calls: u64,
    /// Times it answered.
    pub answers: u64,
    /// Call latency over the latest consultations.
    pub latency_ms: Percentiles,
    /// Time to the first token of its streamed answers (ms from the ask) over the latest
    /// consultations; `cut` and `stalled` among `outcomes` count its broken streams.
    pub first_token_ms: Percentiles,
    /// Count of every outcome (`ok`, skips and failures).
    pub outcomes: BTreeMap<String, u64>,
    /// Count of failure reasons only.
    pub failures: BTreeMap<String, u64>,
    /// Until when a 429 keeps it out, if now.
    #[cfg_attr(feature = "openapi", schema(required = true))] // always sent, null when absent
    pub cool_down_until: Option<String>,
    /// Until when the open breaker keeps it out, if now.
    #[cfg_attr(feature = "openapi", schema(required = true))] // always sent, null when absent
    pub breaker_open_until: Option<String>,
    /// Failures in a row.
    pub consecutive_failures: u32,
}

/// What the metrics are made from, as either store gives it.
pub(crate) struct Readings {
    /// Running totals per source and outcomes (several rows may share a combination).
    pub(crate) counts: Vec<CountsRow>,
    /// The latest consultations' latencies, newest first.
    pub(crate) latest: Vec<LatencyRow>,
    /// Asks refused by a limit.
    pub(crate) limited: u64,
    /// Both providers' state.
    pub(crate) states: state::States,
}

/// Reads the metrics.
pub async fn dashboard<P: Platform>(platform: &P, config: &Config) -> Result<Dashboard, DbError> {
    let now = platform.now_ms();
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            return Ok(metrics(super::kv::readings(platform).await?, config, now));
        }
    }
    Ok(metrics(read_sql(platform).await?, config, now))
}

async fn read_sql<P: Platform>(platform: &P) -> Result<Readings, DbError> {
    // One round trip: running totals (a few dozen rows however many consultations there are, plus
    // the few recorded since the last roll-up), the latest consultations, the limited count and
    // the providers' state. The totals are one statement, so a roll-up never counts twice here.
    let statements = [
        Statement::new(
            "SELECT source, groq_outcome, ollama_outcome, n, first_at FROM consultation_counts \
             UNION ALL SELECT source, groq_outcome, ollama_outcome, COUNT(*), MIN(created_at) \
             FROM consultations WHERE key > (SELECT upto FROM consultation_rollup) \
             GROUP BY source, groq_outcome, ollama_outcome",
            Vec::new(),
        ),
        Statement::new(
            "SELECT latency_ms, groq_latency_ms, ollama_latency_ms, source, first_token_ms FROM consultations \
             ORDER BY key DESC LIMIT ?",
            vec![LATENCY_WINDOW.into()],
        ),
        Statement::new("SELECT n AS count FROM edge_counts WHERE name = 'limited'", Vec::new()),
        state::load_statement(),
    ];
    let mut results = platform.batch(&statements).await?.into_iter();
    let mut next = || results.next().unwrap_or_default();
    let counts: Vec<CountsRow> = rows_of(next())?;
    let latest: Vec<LatencyRow> = rows_of(next())?;
    let limited = rows_of::<Count>(next())?.first().map_or(0, |row| row.count);
    let states = state::from_rows(next())?;
    Ok(Readings { counts, latest, limited, states })
}

fn metrics(readings: Readings, config: &Config, now: u64) -> Dashboard {
    let Readings { counts, latest, limited, states } = readings;
    let mut by_source: BTreeMap<&'static str, u64> = Source::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut outcomes: BTreeMap<(Provider, String), u64> = BTreeMap::new();
    let mut since: Option<u64> = None;
    for row in &counts {
        if let Some(source) = row.source.as_deref().and_then(Source::parse) {
            *by_source.entry(source.as_str()).or_default() += row.n;
        }
        for &provider in Provider::ALL {
            if let Some(outcome) = row.outcome(provider) {
                *outcomes.entry((provider, outcome.to_owned())).or_default() += row.n;
            }
        }
        since = match (since, row.first_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let total: u64 = by_source.values().sum();
    let column = |read: fn(&LatencyRow) -> Option<u64>| latest.iter().filter_map(read).collect::<Vec<_>>();

    let providers = Provider::ALL
        .iter()
        .map(|&provider| {
            let configured = config.configured(provider);
            let latency = Percentiles::of(column(match provider {
                Provider::Groq => |row| row.groq_latency_ms,
                Provider::Ollama => |row| row.ollama_latency_ms,
            }));
            let mut metrics =
                provider_metrics(provider, configured, &outcomes, latency, states.of(provider), now);
            metrics.first_token_ms = Percentiles::of(
                latest
                    .iter()
                    .filter(|row| row.source.as_deref() == Some(provider.as_str()))
                    .filter_map(|row| row.first_token_ms)
                    .collect(),
            );
            (provider.as_str(), metrics)
        })
        .collect();

    Dashboard {
        generated_at: rfc3339(now),
        since: since.map(rfc3339),
        total,
        fallback_rate: if total == 0 { 0.0 } else { by_source["sqlite"] as f64 / total as f64 },
        by_source,
        latency_ms: Percentiles::of(column(|row| row.latency_ms)),
        latency_window: latest.len() as u64,
        overhead_ms: Percentiles::of(latest.iter().filter_map(LatencyRow::overhead).collect()),
        limited,
        providers,
    }
}

fn provider_metrics(
    provider: Provider,
    configured: bool,
    all_outcomes: &BTreeMap<(Provider, String), u64>,
    latency_ms: Percentiles,
    state: &ProviderState,
    now: u64,
) -> ProviderMetrics {
    let outcomes: BTreeMap<String, u64> = all_outcomes
        .iter()
        .filter(|((p, _), _)| *p == provider)
        .map(|((_, outcome), n)| (outcome.clone(), *n))
        .collect();
    let failures: BTreeMap<String, u64> = outcomes
        .iter()
        .filter(|(outcome, _)| Outcome::parse(outcome).is_some_and(Outcome::is_failure))
        .map(|(o, n)| (o.clone(), *n))
        .collect();
    let answers = outcomes.get(Outcome::Ok.as_str()).copied().unwrap_or(0);
    ProviderMetrics {
        configured,
        calls: answers + failures.values().sum::<u64>(),
        answers,
        latency_ms,
        first_token_ms: Percentiles::default(),
        outcomes,
        failures,
        cool_down_until: future_rfc3339(state.cool_down_until, now),
        breaker_open_until: future_rfc3339(state.breaker_open_until, now),
        consecutive_failures: state.consecutive_failures,
    }
}

/// A `consultation_counts` row: a running total per combination of source and outcomes.
#[derive(Debug, Deserialize)]
pub(crate) struct CountsRow {
    pub(crate) source: Option<String>,
    pub(crate) groq_outcome: Option<String>,
    pub(crate) ollama_outcome: Option<String>,
    pub(crate) n: u64,
    pub(crate) first_at: Option<u64>,
}

impl CountsRow {
    fn outcome(&self, provider: Provider) -> Option<&str> {
        match provider {
            Provider::Groq => self.groq_outcome.as_deref(),
            Provider::Ollama => self.ollama_outcome.as_deref(),
        }
    }
}

/// The latencies of one recent consultation.
#[derive(Debug, Deserialize)]
#[allow(clippy::struct_field_names)] // the columns' names
pub(crate) struct LatencyRow {
    pub(crate) latency_ms: Option<u64>,
    pub(crate) groq_latency_ms: Option<u64>,
    pub(crate) ollama_latency_ms: Option<u64>,
    pub(crate) source: Option<String>,
    pub(crate) first_token_ms: Option<u64>,
}

impl LatencyRow {
    /// The ask's time not spent waiting for a provider.
    fn overhead(&self) -> Option<u64> {
        let providers = self.groq_latency_ms.unwrap_or(0) + self.ollama_latency_ms.unwrap_or(0);
        self.latency_ms.map(|total| total.saturating_sub(providers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of((1..=100).rev().collect());
        assert_eq!(p, Percentiles { p50: Some(50), p95: Some(95) });
        assert_eq!(Percentiles::of(vec![7]), Percentiles { p50: Some(7), p95: Some(7) });
        assert_eq!(Percentiles::of(vec![1, 2]), Percentiles { p50: Some(1), p95: Some(2) });
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    }
}
