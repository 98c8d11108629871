//! The ask: Groq, then Ollama, then a canned answer, within one time budget. Reads top to bottom
//! like the chain in ARCHITECTURE.md.

use serde::Serialize;

use super::admission::{Admission, RecordKey};
use super::classify::classify;
use super::config::Config;
use super::domain::{Category, Language, Outcome, Personality, Provider, Source};
use super::fallback::{self, CannedAnswer};
use super::limits;
use super::persona::system_prompt;
use super::providers::{self, Failure};
use super::remember::Recalled;
use super::seam::{DbError, Platform, SqlValue, Statement, with_deadline};
use super::state::{self, ProviderState, Unavailable};

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
    pub(crate) fn skipped(outcome: Outcome) -> Attempt {
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
    /// Where it is written, and whether the memory points at it.
    pub record: RecordKey,
    /// The answer's text, kept with the record when the memory points at it.
    pub remember: Option<String>,
    /// How long the memory keeps answers (ms; 0 when off), for pruning askers.
    pub memory_ttl_ms: u64,
    /// A streamed answer's time to its first token (ms from the ask).
    pub first_token_ms: Option<u64>,
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

    pub(crate) fn attempt_mut(&mut self, provider: Provider) -> &mut Attempt {
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
/// `admission` is what the ask's one trip to the database found (see [`super::admission`]): an
/// answer the memory gives is given without calling anything.
pub async fn ask<P: Platform>(
    platform: &P,
    config: &Config,
    question: &Question,
    admission: Admission,
    started: u64,
) -> Result<(Answer, Consultation), ChainError> {
    let deadline = started + u64::from(config.ask_budget_ms);
    let Admission { recalled, states, record, .. } = admission;
    if let Some(recalled) = recalled {
        return Ok(remembered(platform, config, started, recalled));
    }
    let prompt = system_prompt(question.personality, question.language);
    let not_configured = Attempt::skipped(Outcome::NotConfigured);
    let mut consultation = new_consultation(config, question, started, record);

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
        let (text, id) = canned(platform, question, &consultation).await?;
        consultation.fallback_id = Some(id);
        (text, Source::Sqlite)
    };

    consultation.source = source;
    consultation.latency_ms = platform.now_ms().saturating_sub(started);
    consultation.id = consultation_id(platform);
    consultation.remember = record.memo_tag.map(|_| text.clone());
    Ok((consultation.answer(text), consultation))
}

/// The record of an ask starting at `started`, before any provider was tried.
pub(crate) fn new_consultation(
    config: &Config,
    question: &Question,
    started: u64,
    record: RecordKey,
) -> Consultation {
    let not_configured = Attempt::skipped(Outcome::NotConfigured);
    Consultation {
        id: String::new(),
        created_at: started,
        source: Source::Sqlite,
        latency_ms: 0,
        language: question.language,
        personality: question.personality,
        category: classify(&question.text),
        groq: not_configured,
        ollama: not_configured,
        fallback_id: None,
        remembered: false,
        record,
        remember: None,
        memory_ttl_ms: u64::from(config.memory_ttl_s) * 1_000,
        first_token_ms: None,
    }
}

/// The chain's last link: a canned answer that fits the question, and its id.
pub(crate) async fn canned<P: Platform>(
    platform: &P,
    question: &Question,
    consultation: &Consultation,
) -> Result<(String, i64), ChainError> {
    let CannedAnswer { id, text } = fallback::pick(
        platform,
        &question.text,
        consultation.category,
        question.personality,
        question.language,
    )
    .await?
    .ok_or(ChainError::NotSeeded)?;
    Ok((text, id))
}

/// The answer the memory gave: a consultation with no provider called (each configured one's
/// outcome is `remembered`), its source the remembered answer's (`sqlite` for an annoyed one).
pub(crate) fn remembered<P: Platform>(
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
        groq: outcome(config.configured(Provider::Groq)),
        ollama: outcome(config.configured(Provider::Ollama)),
        fallback_id: None,
        remembered: true,
        record: RecordKey::fresh(platform, started),
        remember: None,
        memory_ttl_ms: u64::from(config.memory_ttl_s) * 1_000,
        first_token_ms: None,
    };
    (consultation.answer(recalled.text), consultation)
}

/// Writes the consultation record: one row (its answer kept when the memory points at it).
/// Runs after the response is sent where the platform allows. About one ask in 32 also rolls the
/// dashboard's running totals forward and prunes old askers and rate windows.
/// Records are append-only; `d1-migrations/0006_one_round_trip.sql` counts each exactly once.
pub async fn record<P: Platform>(platform: &P, c: &Consultation) -> Result<(), DbError> {
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            return super::kv::record(platform, c).await;
        }
    }
    // Should the key be taken (another record in the same millisecond drew the same number, or
    // the memory's earlier record landed after all), the second statement writes the record under
    // a fresh key, remembered by nothing. One batch: no retry that could write a record twice.
    let fresh = RecordKey::fresh(platform, c.created_at);
    // A record the memory pointed at but with nothing to remember (a streamed answer cut short)
    // leaves the memory's key free for the next answer to that question.
    let record = if c.remember.is_none() && c.record.memo_tag.is_some() { fresh } else { c.record };
    platform.batch(&record_statements(c, record, fresh)).await?;
    if platform.random_u64().is_multiple_of(32) {
        let now = platform.now_ms();
        let mut upkeep = vec![
            // Up to asks that ended a while ago: a record still to come for an ask in flight
            // would otherwise be late, and count itself (a row more).
            Statement::new(
                "UPDATE consultation_rollup SET upto = ?1 WHERE upto < ?1",
                vec![(now.saturating_sub(ROLL_UP_LAG_MS) * 1024).into()],
            ),
            limits::prune(now, c.memory_ttl_ms),
        ];
        if c.groq.outcome != Outcome::NotConfigured {
            upkeep.push(state::prune_minute_slots(now));
        }
        platform.batch(&upkeep).await?;
    }
    Ok(())
}

/// The record's two statements: under `record`'s key unless it is taken, then under `fresh` unless
/// the first one wrote it. Each is atomic on its own, as the seam asks of a batch: the second
/// looks for the record itself, not at `changes()`, which an in-process database shared by
/// concurrent instances (Spin) may have moved between the two.
pub(crate) fn record_statements(c: &Consultation, record: RecordKey, fresh: RecordKey) -> [Statement; 2] {
    let values = |record: RecordKey, answer: Option<&str>| -> Vec<SqlValue> {
        vec![
            record.key.into(),
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
            answer.into(),
            record.memo_tag.into(),
            c.first_token_ms.into(),
        ]
    };
    let mut if_taken = values(fresh, None);
    if_taken.extend([record.key.into(), c.id.as_str().into()]);
    [
        Statement::new(INSERT_RECORD, values(record, c.remember.as_deref())),
        Statement::new(INSERT_RECORD_IF_TAKEN, if_taken),
    ]
}

/// The columns of a consultation record, bound in this order.
macro_rules! record_columns {
    () => {
        "consultations (key, id, created_at, source, latency_ms, language, personality, category, \
         groq_outcome, groq_latency_ms, ollama_outcome, ollama_latency_ms, fallback_id, answer, memo_tag, \
         first_token_ms)"
    };
}

/// The record under its key, unless that key is taken.
const INSERT_RECORD: &str = concat!(
    "INSERT INTO ",
    record_columns!(),
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING"
);

/// The record under a fresh key, when the statement before did not write it (its key held
/// another record): a rowid lookup of that key, one row read.
const INSERT_RECORD_IF_TAKEN: &str = concat!(
    "INSERT INTO ",
    record_columns!(),
    " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
     WHERE NOT EXISTS (SELECT 1 FROM consultations WHERE key = ? AND id = ?)"
);

/// How far behind the clock the running totals are rolled up: past the longest ask
/// (`ASK_BUDGET_MS` is at most 30 s) and the time its record may take after the response.
pub const ROLL_UP_LAG_MS: u64 = 60_000;

/// What is left to do once a response is sent.
pub enum After {
    /// Nothing.
    Nothing,
    /// Record this consultation.
    Record(Consultation),
    /// Count an ask a per-asker limit refused.
    Refused,
    /// Record the consultation of a streamed answer, once its stream has ended or was let go.
    Streamed(std::rc::Rc<super::speak::RecordSlot>),
}

impl After {
    /// The consultation to record, if any.
    #[must_use]
    pub fn consultation(&self) -> Option<&Consultation> {
        match self {
            After::Record(consultation) => Some(consultation),
            _ => None,
        }
    }
}

/// The work an adapter runs once the response is sent (`wait_until` on Workers, a spawned task on
/// Spin), so the asker does not wait for the write: the consultation's record or the refused
/// ask's count, and the refused asks counted but not yet written; a failure logged.
pub async fn after_response<P: Platform>(platform: P, after: After) {
    match after {
        After::Nothing => return,
        After::Record(consultation) => {
            if let Err(error) = record(&platform, &consultation).await {
                platform.log_error(&format!("recording consultation {} failed: {error}", consultation.id));
            }
        }
        After::Refused => limits::refused(),
        After::Streamed(slot) => {
            // A stream ends within its ask's budget once read; one neither read nor let go (a
            // stuck client) is not waited for past the roll-up's lag.
            let Some(consultation) = with_deadline(slot.wait(), platform.sleep(ROLL_UP_LAG_MS)).await else {
                platform.log_error("a streamed answer was neither finished nor let go in time: not recorded");
                return;
            };
            if let Err(error) = record(&platform, &consultation).await {
                platform.log_error(&format!("recording consultation {} failed: {error}", consultation.id));
            }
        }
    }
    if let Err(error) = limits::write_refused(&platform).await {
        platform.log_error(&format!("counting limited asks failed: {error}"));
    }
}

/// One provider's step of the chain: its request and reply format, its deadline and its guards.
/// The streamed ask (`super::speak`) takes the same step and asks for a stream.
pub(crate) struct Step {
    pub(crate) provider: Provider,
    pub(crate) request: http::Request<Vec<u8>>,
    pub(crate) timeout_ms: u32,
    /// The edge's own per-minute budget for it, if it has one.
    per_minute: Option<u32>,
    pub(crate) parse: fn(&http::Response<Vec<u8>>) -> Result<String, Failure>,
    /// How long the provider's quota keeps it out after an answer, if that answer spent it.
    pub(crate) quota_spent: fn(&http::Response<Vec<u8>>) -> Option<u64>,
}

impl Step {
    /// The step for `provider`, or `None` when it is not configured.
    pub(crate) fn of(config: &Config, provider: Provider, prompt: &str, question: &str) -> Option<Step> {
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

    /// Whether the provider may be called at `now`: its state, the ask's budget and its minute
    /// (which this spends) say so. The time left of the budget when it may, else why not.
    pub(crate) async fn cleared<P: Platform>(
        &self,
        platform: &P,
        state: &ProviderState,
        now: u64,
        deadline: u64,
    ) -> Result<u64, Outcome> {
        state.check(now).map_err(Unavailable::outcome)?;
        let left = deadline.saturating_sub(now);
        if left < MIN_CALL_MS {
            return Err(Outcome::BudgetSpent);
        }
        if let Some(per_minute) = self.per_minute {
            // If the SQL database cannot count, call anyway: Groq may then be the only answer,
            // and its own 429 is the hard stop (the key-value store counts a failure as spent).
            if !state::take_minute_slot(platform, self.provider, now, per_minute).await.unwrap_or(true) {
                return Err(Outcome::MinuteBudget);
            }
        }
        Ok(left)
    }

    /// Calls the provider unless its state, the budget or its minute says not to.
    async fn run<P: Platform>(
        self,
        platform: &P,
        state: &ProviderState,
        deadline: u64,
    ) -> (Attempt, Option<String>) {
        let now = platform.now_ms();
        let left = match self.cleared(platform, state, now, deadline).await {
            Ok(left) => left,
            Err(outcome) => return (Attempt::skipped(outcome), None),
        };
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
pub(crate) fn consultation_id<P: Platform>(platform: &P) -> String {
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
