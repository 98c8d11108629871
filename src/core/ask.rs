//! The ask: Groq, then Ollama, then a canned answer, within one time budget. Reads top to bottom
//! like the chain in ARCHITECTURE.md.

use futures_util::future::join;
use serde::Serialize;

use super::classify::classify;
use super::config::Config;
use super::domain::{Category, Language, Outcome, Personality, Provider, Source};
use super::fallback::{self, CannedAnswer};
use super::limits;
use super::persona::system_prompt;
use super::providers::{self, Failure};
use super::remember::{self, Memo, Recalled, Remember};
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
    /// Whether the spirit remembered this asker's question (within `MEMORY_TTL_S`): the answer it
    /// gave before, or from the third time an annoyed one; no provider was called.
    pub remembered: bool,
}

/// What happened with one provider during an ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// It answered, why it was skipped, or how it failed.
    pub outcome: Outcome,
    /// Time spent calling it, when it was called.
    pub latency_ms: Option<u64>,
}

impl Attempt {
    fn skipped(outcome: Outcome) -> Attempt {
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
    /// Whether the spirit remembered this asker's question (no provider was called).
    pub remembered: bool,
    /// The answer to remember for this asker and question, when memory is on and it is new.
    pub remember: Option<Remember>,
}

impl Consultation {
    /// The answer this consultation gave, as the asker receives it.
    #[must_use]
    pub fn answer(&self, text: String) -> Answer {
        Answer {
            answer: text.clone(),
            response: text,
            source: self.source,
            personality: self.personality,
            language: self.language,
            category: self.category,
            latency_ms: self.latency_ms,
            id: self.id.clone(),
            remembered: self.remembered,
        }
    }

    fn attempt_mut(&mut self, provider: Provider) -> &mut Attempt {
        match provider {
            Provider::Groq => &mut self.groq,
            Provider::Ollama => &mut self.ollama,
        }
    }
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
/// With a `memo` (memory on), an asker's question asked before within `MEMORY_TTL_S` is answered
/// from the memory instead, and a new answer is remembered when it is recorded.
pub async fn ask<P: Platform>(
    platform: &P,
    config: &Config,
    question: &Question,
    memo: Option<&Memo>,
) -> Result<(Answer, Consultation), ChainError> {
    let started = platform.now_ms();
    let deadline = started + u64::from(config.ask_budget_ms);
    let category = classify(&question.text);
    let prompt = system_prompt(question.personality, question.language);
    // The memory and the providers' state are asked for together: one wait for the database.
    let recall = async {
        let memo = memo?;
        // An unreadable memory only forgets: the chain answers.
        remember::recall(platform, memo, started, question.language, question.personality).await.ok()?
    };
    let load_states = async {
        // Unreadable state must not silence the LLMs: treat both as available.
        if config.groq.is_some() || config.ollama.is_some() {
            state::load(platform).await.unwrap_or_default()
        } else {
            state::States::default()
        }
    };
    let (recalled, states) = join(recall, load_states).await;
    if let Some(recalled) = recalled {
        return Ok(remembered(platform, config, started, recalled));
    }
    let not_configured = Attempt::skipped(Outcome::NotConfigured);
    let mut consultation = Consultation {
        id: String::new(),
        created_at: started,
        source: Source::Sqlite,
        latency_ms: 0,
        language: question.language,
        personality: question.personality,
        category,
        groq: not_configured,
        ollama: not_configured,
        fallback_id: None,
        remembered: false,
        remember: None,
    };

    // 1. and 2.: Groq, then Ollama; each configured one is called until one answers.
    let mut answered = None;
    for &provider in Provider::ALL {
        let attempt = if answered.is_some() {
            Attempt::skipped(Outcome::NotReached)
        } else if let Some(step) = Step::of(config, provider, &prompt, &question.text) {
            let (attempt, text) = step.run(platform, states.of(provider), deadline).await;
            answered = text.map(|text| (text, Source::from(provider)));
            attempt
        } else {
            not_configured
        };
        *consultation.attempt_mut(provider) = attempt;
    }
    // 3.: a canned answer that fits the question.
    let (text, source) = if let Some(found) = answered {
        found
    } else {
        let CannedAnswer { id, text } =
            fallback::pick(platform, &question.text, category, question.personality, question.language)
                .await?
                .ok_or(ChainError::NotSeeded)?;
        consultation.fallback_id = Some(id);
        (text, Source::Sqlite)
    };

    consultation.source = source;
    consultation.latency_ms = platform.now_ms().saturating_sub(started);
    consultation.id = consultation_id(platform);
    consultation.remember = memo.map(|memo| Remember { memo: memo.clone(), text: text.clone() });
    Ok((consultation.answer(text), consultation))
}

/// The answer the memory gave: a consultation with no provider called (each configured one's
/// outcome is `remembered`), its source the remembered answer's (`sqlite` for an annoyed one).
fn remembered<P: Platform>(
    platform: &P,
    config: &Config,
    started: u64,
    recalled: Recalled,
) -> (Answer, Consultation) {
    let outcome = |configured: bool| {
        Attempt::skipped(if configured { Outcome::Remembered } else { Outcome::NotConfigured })
    };
    let consultation = Consultation {
        id: consultation_id(platform),
        created_at: started,
        source: recalled.source,
        latency_ms: platform.now_ms().saturating_sub(started),
        language: recalled.language,
        personality: recalled.personality,
        category: recalled.category,
        groq: outcome(config.groq.is_some()),
        ollama: outcome(config.ollama.is_some()),
        fallback_id: None,
        remembered: true,
        remember: None,
    };
    (consultation.answer(recalled.text), consultation)
}

/// Writes the consultation record, remembers a new answer for its asker (memory on), marks a
/// canned answer as given and prunes old rate windows and askers.
/// Runs after the response is sent where the platform allows. Records are append-only: a trigger
/// adds each one to the dashboard's running totals (`d1-migrations/0003_consultation_counts.sql`).
pub async fn record<P: Platform>(platform: &P, c: &Consultation) -> Result<(), DbError> {
    // Remembered first, so that once a consultation is counted its answer is remembered too; a
    // memory that cannot be written must not cost the record.
    let remembered = match &c.remember {
        Some(new) => {
            let answer = (c.source, c.language, c.personality, c.category);
            remember::remember(platform, new, c.created_at, answer).await
        }
        None => Ok(()),
    };
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
                c.groq.outcome.as_str().into(),
                c.groq.latency_ms.into(),
                c.ollama.outcome.as_str().into(),
                c.ollama.latency_ms.into(),
                c.fallback_id.into(),
            ],
        )
        .await?;
    if let Some(id) = c.fallback_id {
        fallback::mark_served(platform, id, c.created_at).await?;
    }
    // Old rate windows and askers not seen for a day are harmless for a while: prune on about one
    // ask in 32, not on every one. Askers go so that no asker hash outlives its windows.
    if platform.random_u64().is_multiple_of(32) {
        if c.groq.outcome != Outcome::NotConfigured {
            state::prune_minute_slots(platform, c.created_at).await?;
        }
        limits::prune(platform, c.created_at).await?;
    }
    remembered
}

/// The work an adapter runs once the response is sent (`wait_until` on Workers, a spawned task on
/// Spin), so the asker does not wait for the write: the consultation's record, a failure logged.
pub async fn after_response<P: Platform>(platform: P, consultation: Consultation) {
    if let Err(error) = record(&platform, &consultation).await {
        platform.log_error(&format!("recording consultation {} failed: {error}", consultation.id));
    }
}

/// One provider's step of the chain: its request and reply format, its deadline and its guards.
struct Step {
    provider: Provider,
    request: http::Request<Vec<u8>>,
    timeout_ms: u32,
    /// The edge's own per-minute budget for it, if it has one.
    per_minute: Option<u32>,
    parse: fn(&http::Response<Vec<u8>>) -> Result<String, Failure>,
    /// How long the provider's quota keeps it out after an answer, if that answer spent it.
    quota_spent: fn(&http::Response<Vec<u8>>) -> Option<u64>,
}

impl Step {
    /// The step for `provider`, or `None` when it is not configured.
    fn of(config: &Config, provider: Provider, prompt: &str, question: &str) -> Option<Step> {
        match provider {
            Provider::Groq => config.groq.as_ref().map(|groq| Step {
                provider,
                request: providers::groq_request(groq, prompt, question),
                timeout_ms: groq.timeout_ms,
                per_minute: Some(groq.requests_per_minute),
                parse: providers::parse_groq,
                quota_spent: providers::groq_daily_quota_spent,
            }),
            Provider::Ollama => config.ollama.as_ref().map(|ollama| Step {
                provider,
                request: providers::ollama_request(ollama, prompt, question),
                timeout_ms: ollama.timeout_ms,
                per_minute: None,
                parse: providers::parse_ollama,
                quota_spent: |_| None,
            }),
        }
    }

    /// Calls the provider unless its state, the budget or its minute says not to.
    async fn run<P: Platform>(
        self,
        platform: &P,
        state: &ProviderState,
        deadline: u64,
    ) -> (Attempt, Option<String>) {
        let now = platform.now_ms();
        if let Err(unavailable) = state.check(now) {
            return (Attempt::skipped(unavailable.outcome()), None);
        }
        let left = deadline.saturating_sub(now);
        if left < MIN_CALL_MS {
            return (Attempt::skipped(Outcome::BudgetSpent), None);
        }
        if let Some(per_minute) = self.per_minute {
            // If the database cannot count, call anyway: a 429 would still put us in cool-down.
            if !state::take_minute_slot(platform, self.provider, now, per_minute).await.unwrap_or(true) {
                return (Attempt::skipped(Outcome::MinuteBudget), None);
            }
        }
        let timeout_ms = u32::try_from(left).unwrap_or(u32::MAX).min(self.timeout_ms);
        let result = match platform.fetch(self.request, timeout_ms).await {
            Ok(response) => (self.parse)(&response).map(|text| (text, (self.quota_spent)(&response))),
            Err(error) => Err(Failure::from(error)),
        };
        let finished = platform.now_ms();
        let latency_ms = Some(finished.saturating_sub(now));
        // State writes are best effort: losing one costs at most one extra call.
        match result {
            Ok((text, quota_spent)) => {
                if state.consecutive_failures > 0 || state.breaker_open_until > 0 {
                    let _ = state::record_success(platform, self.provider, finished).await;
                }
                if let Some(retry_after_ms) = quota_spent {
                    let spent = Failure::RateLimited { retry_after_ms };
                    let _ = state::record_failure(platform, self.provider, &spent, finished).await;
                }
                (Attempt { outcome: Outcome::Ok, latency_ms }, Some(text))
            }
            // A deadline the ask's budget shortened says nothing about the provider's health.
            Err(Failure::Timeout) if timeout_ms < self.timeout_ms => {
                (Attempt { outcome: Outcome::BudgetSpent, latency_ms }, None)
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
