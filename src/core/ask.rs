//! The ask: Groq, then Ollama, then a canned answer, within one time budget. Reads top to bottom
//! like the chain in ARCHITECTURE.md.

use serde::Serialize;

use super::classify::classify;
use super::config::Config;
use super::domain::{Category, Language, Personality, Provider, Source};
use super::fallback::{self, CannedAnswer};
use super::persona::system_prompt;
use super::providers::{self, Failure};
use super::seam::{DbError, Platform};
use super::state::{self, ProviderState};

/// A provider is not called with less than this left of the budget: the answer would not arrive.
pub const MIN_CALL_MS: u64 = 200;

/// A validated question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The question's text, trimmed, 1–500 characters.
    pub text: String,
    /// The language to answer in.
    pub language: Language,
    /// The spirit's personality.
    pub personality: Personality,
}

/// The JSON body of a successful ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Answer {
    /// The spirit's answer.
    pub answer: String,
    /// The same answer, for clients written for the original backend.
    pub response: String,
    /// Which link of the chain answered.
    pub source: Source,
    /// The personality that answered.
    pub personality: Personality,
    /// The answer's language.
    pub language: Language,
    /// The question's category.
    pub category: Category,
    /// Time spent answering.
    pub latency_ms: u64,
    /// The consultation's id.
    pub id: String,
}

/// What happened with one provider during an ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// `ok`, a skip reason or a failure reason (see `consultations` in the schema).
    pub outcome: &'static str,
    /// Time spent calling it, when it was called.
    pub latency_ms: Option<u64>,
}

impl Attempt {
    fn skipped(outcome: &'static str) -> Attempt {
        Attempt { outcome, latency_ms: None }
    }
}

/// The record of one consultation, written after the response is sent. Holds no question text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consultation {
    /// Same as [`Answer::id`].
    pub id: String,
    /// When the ask started (ms since epoch).
    pub created_at: u64,
    /// Which link answered.
    pub source: Source,
    /// Total time.
    pub latency_ms: u64,
    /// Answer language.
    pub language: Language,
    /// Personality.
    pub personality: Personality,
    /// Question category.
    pub category: Category,
    /// Groq's part.
    pub groq: Attempt,
    /// Ollama's part.
    pub ollama: Attempt,
    /// The canned answer given, when the source is sqlite.
    pub fallback_id: Option<i64>,
}

/// The chain could not answer: every provider failed and the canned answers are unreachable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The fallback database failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The fallback table has no answer for this language and personality.
    #[error("no canned answers: the database is not seeded")]
    NotSeeded,
}

/// Answers `question` through the chain and returns the answer with its consultation record.
pub async fn ask<P: Platform>(
    platform: &P,
    config: &Config,
    question: &Question,
) -> Result<(Answer, Consultation), ChainError> {
    let started = platform.now_ms();
    let deadline = started + u64::from(config.ask_budget_ms);
    let category = classify(&question.text);
    let prompt = system_prompt(question.personality, question.language);
    // Unreadable state must not silence the LLMs: treat both as available.
    let states = if config.groq.is_some() || config.ollama.is_some() {
        state::load(platform).await.unwrap_or_default()
    } else {
        state::States::default()
    };

    let mut groq = Attempt::skipped("not_configured");
    let mut ollama = Attempt::skipped("not_configured");
    let mut answer = None;

    if let Some(groq_config) = &config.groq {
        let call = Call {
            provider: Provider::Groq,
            state: states.of(Provider::Groq),
            deadline,
            timeout_ms: groq_config.timeout_ms,
            per_minute: Some(groq_config.requests_per_minute),
            quota_spent: providers::groq_daily_quota_spent,
        };
        let request = providers::groq_request(groq_config, &prompt, &question.text);
        let (attempt, text) = call.run(platform, request, providers::parse_groq).await;
        groq = attempt;
        answer = text.map(|text| (text, Source::Groq));
    }
    if answer.is_some() {
        ollama = Attempt::skipped("not_reached");
    } else if let Some(ollama_config) = &config.ollama {
        let call = Call {
            provider: Provider::Ollama,
            state: states.of(Provider::Ollama),
            deadline,
            timeout_ms: ollama_config.timeout_ms,
            per_minute: None,
            quota_spent: |_| None,
        };
        let request = providers::ollama_request(ollama_config, &prompt, &question.text);
        let (attempt, text) = call.run(platform, request, providers::parse_ollama).await;
        ollama = attempt;
        answer = text.map(|text| (text, Source::Ollama));
    }

    let mut fallback_id = None;
    let (text, source) = if let Some(found) = answer {
        found
    } else {
        let CannedAnswer { id, text } =
            fallback::pick(platform, &question.text, category, question.personality, question.language)
                .await?
                .ok_or(ChainError::NotSeeded)?;
        fallback_id = Some(id);
        (text, Source::Sqlite)
    };

    let latency_ms = platform.now_ms().saturating_sub(started);
    let id = consultation_id(platform);
    let consultation = Consultation {
        id: id.clone(),
        created_at: started,
        source,
        latency_ms,
        language: question.language,
        personality: question.personality,
        category,
        groq,
        ollama,
        fallback_id,
    };
    let answer = Answer {
        answer: text.clone(),
        response: text,
        source,
        personality: question.personality,
        language: question.language,
        category,
        latency_ms,
        id,
    };
    Ok((answer, consultation))
}

/// Writes the consultation record, marks a canned answer as given and prunes old rate windows.
/// Runs after the response is sent where the platform allows. Records are append-only: a trigger
/// adds each one to the dashboard's running totals (`d1-migrations/0003_consultation_counts.sql`).
pub async fn record<P: Platform>(platform: &P, c: &Consultation) -> Result<(), DbError> {
    platform
        .query(
            "INSERT INTO consultations (id, created_at, source, latency_ms, language, personality, category, \
             groq_outcome, groq_latency_ms, ollama_outcome, ollama_latency_ms, fallback_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                c.id.as_str().into(),
                c.created_at.into(),
                c.source.as_str().into(),
                c.latency_ms.into(),
                c.language.as_str().into(),
                c.personality.as_str().into(),
                c.category.as_str().into(),
                c.groq.outcome.into(),
                c.groq.latency_ms.into(),
                c.ollama.outcome.into(),
                c.ollama.latency_ms.into(),
                c.fallback_id.into(),
            ],
        )
        .await?;
    if let Some(id) = c.fallback_id {
        fallback::mark_served(platform, id, c.created_at).await?;
    }
    // Old rate windows are few and harmless: prune on about one ask in 32, not on every one.
    if c.groq.outcome != "not_configured" && platform.random_u64().is_multiple_of(32) {
        state::prune_minute_slots(platform, c.created_at).await?;
    }
    Ok(())
}

/// One provider call with its guards: state, budget, per-minute slot, deadline.
struct Call<'a> {
    provider: Provider,
    state: &'a ProviderState,
    deadline: u64,
    timeout_ms: u32,
    per_minute: Option<u32>,
    /// How long the provider's quota keeps it out after an answer, if that answer spent it.
    quota_spent: fn(&http::Response<Vec<u8>>) -> Option<u64>,
}

impl Call<'_> {
    async fn run<P: Platform>(
        self,
        platform: &P,
        request: http::Request<Vec<u8>>,
        parse: fn(&http::Response<Vec<u8>>) -> Result<String, Failure>,
    ) -> (Attempt, Option<String>) {
        let now = platform.now_ms();
        if let Err(unavailable) = self.state.check(now) {
            return (Attempt::skipped(unavailable.outcome()), None);
        }
        let left = self.deadline.saturating_sub(now);
        if left < MIN_CALL_MS {
            return (Attempt::skipped("budget_spent"), None);
        }
        if let Some(per_minute) = self.per_minute {
            // If the database cannot count, call anyway: a 429 would still put us in cool-down.
            if !state::take_minute_slot(platform, self.provider, now, per_minute).await.unwrap_or(true) {
                return (Attempt::skipped("minute_budget"), None);
            }
        }
        let timeout_ms = u32::try_from(left).unwrap_or(u32::MAX).min(self.timeout_ms);
        let result = match platform.fetch(request, timeout_ms).await {
            Ok(response) => parse(&response).map(|text| (text, (self.quota_spent)(&response))),
            Err(error) => Err(Failure::from(error)),
        };
        let finished = platform.now_ms();
        let latency_ms = Some(finished.saturating_sub(now));
        // State writes are best effort: losing one costs at most one extra call.
        match result {
            Ok((text, quota_spent)) => {
                if self.state.consecutive_failures > 0 || self.state.breaker_open_until > 0 {
                    let _ = state::record_success(platform, self.provider, finished).await;
                }
                if let Some(retry_after_ms) = quota_spent {
                    let spent = Failure::RateLimited { retry_after_ms };
                    let _ = state::record_failure(platform, self.provider, &spent, finished).await;
                }
                (Attempt { outcome: "ok", latency_ms }, Some(text))
            }
            // A deadline the ask's budget shortened says nothing about the provider's health.
            Err(Failure::Timeout) if timeout_ms < self.timeout_ms => {
                (Attempt { outcome: "budget_spent", latency_ms }, None)
            }
            Err(failure) => {
                let _ = state::record_failure(platform, self.provider, &failure, finished).await;
                (Attempt { outcome: failure.outcome(), latency_ms }, None)
            }
        }
    }
}

/// A random UUID (version 4 layout) naming the consultation.
fn consultation_id<P: Platform>(platform: &P) -> String {
    let high = platform.random_u64();
    let low = platform.random_u64();
    let high = (high & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let low = (low & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}
