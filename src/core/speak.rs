//! The streamed ask (#12): the same chain as [`super::ask`], with the answer given as it is
//! spoken. Groq and Ollama are asked with `stream: true`; nothing is given until cleaned text that
//! passes the junk checks has arrived (the first-chunk gate), and any failure before that falls
//! through to the next link as in the plain ask. After the first token, a cut, an error or a
//! silence past the gap deadline ends the answer honestly: what was spoken stays, a closing from
//! the database ends it, and the `done` event says `complete: false`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::admission::Admission;
use super::ask::{self, Answer, Attempt, ChainError, Consultation, Question, Step};
use super::config::Config;
use super::domain::{Language, Outcome, Provider, Source};
use super::providers::{self, Failure};
use super::seam::{BodyStream, Platform, read_capped, with_deadline};
use super::state::{self, ProviderState};
use super::stream_clean::{Stop, StreamCleaner};
use super::stream_parse::{GroqDecoder, OllamaDecoder, Piece, StreamDecoder};

/// One event of the streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The next piece of the cleaned answer.
    Token(String),
    /// The end: the whole answer as the plain ask gives it, and how it ended.
    Done(Box<Done>),
}

/// The `done` event's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Done {
    /// Everything the plain ask returns; `answer` is the whole text spelled.
    #[serde(flatten)]
    pub answer: Answer,
    /// `false` when the provider's stream broke or fell silent and the spirit closed the answer.
    pub complete: bool,
    /// Milliseconds from the ask to its first token.
    pub first_token_ms: u64,
}

/// A provider's stream whose answer has begun.
struct Speaking {
    provider: Provider,
    body: BodyStream,
    decoder: Box<dyn StreamDecoder>,
    cleaner: StreamCleaner,
    /// When the call started (its latency is measured from there).
    called_at: u64,
    /// The answer is whole (the provider's end marker, or the length bound): read no more.
    over: bool,
    /// Whether the provider had failures or an open breaker: a clean end records its success.
    had_failures: bool,
}

/// A streamed answer: its events, one at a time ([`Speech::next`]), then its consultation.
pub struct Speech<P> {
    platform: P,
    deadline: u64,
    /// Longest silence between two pieces once the answer has begun (`STREAM_GAP_MS`).
    gap_ms: u64,
    started: u64,
    first_token_ms: Option<u64>,
    source: Option<Speaking>,
    queue: VecDeque<String>,
    spoken: String,
    complete: bool,
    finished: bool,
    /// How the provider's stream ended, once known (the `done` event follows what is queued).
    ending: Option<Outcome>,
    consultation: Consultation,
}

/// Opens the streamed answer: asks each provider in turn until one's answer passes the gate, else
/// a canned answer (streamed word by word); a remembered answer is streamed the same way.
pub async fn speak<P: Platform + Clone>(
    platform: P,
    config: &Config,
    question: &Question,
    admission: Admission,
    started: u64,
) -> Result<Speech<P>, ChainError> {
    let deadline = started + u64::from(config.ask_budget_ms);
    let Admission { recalled, states, record, .. } = admission;
    if let Some(recalled) = recalled {
        let (answer, consultation) = ask::remembered(&platform, config, started, recalled);
        return Ok(Speech::words(platform, config, started, &answer.answer, consultation));
    }
    let mut consultation = ask::new_consultation(config, question, started, record);
    let prompt = super::persona::system_prompt(question.personality, question.language);
    for &provider in Provider::ALL {
        let Some(step) = Step::of(config, provider, &prompt, &question.text) else { continue };
        match open(&platform, step, states.of(provider), config, deadline).await {
            Opened::Speaking(speaking, first) => {
                let later = Provider::ALL.iter().skip_while(|&&p| p != provider).skip(1);
                for &later in later.filter(|&&p| config.configured(p)) {
                    *consultation.attempt_mut(later) =
                        Attempt { outcome: Outcome::NotReached, latency_ms: None };
                }
                consultation.source = Source::from(provider);
                let mut speech = Speech::new(platform, config, started, consultation);
                speech.first_token_ms = Some(speech.platform.now_ms().saturating_sub(started));
                speech.queue.push_back(first);
                speech.source = Some(speaking);
                return Ok(speech);
            }
            Opened::Failed(attempt) => *consultation.attempt_mut(provider) = attempt,
        }
    }
    let (text, id) = ask::canned(&platform, question, &consultation).await?;
    consultation.fallback_id = Some(id);
    consultation.source = Source::Sqlite;
    Ok(Speech::words(platform, config, started, &text, consultation))
}

/// How opening one provider's stream went.
enum Opened {
    /// Its answer passed the gate: the first token, and the stream to read on.
    Speaking(Speaking, String),
    /// It was skipped or failed before its first token: the chain goes on.
    Failed(Attempt),
}

/// Calls the step's provider, asking for a stream, unless its state, the budget or its minute
/// says not to (as the plain ask decides), and reads its stream until the first token passes the
/// gate, within the first-token deadline.
async fn open<P: Platform>(
    platform: &P,
    step: Step,
    state: &ProviderState,
    config: &Config,
    deadline: u64,
) -> Opened {
    let now = platform.now_ms();
    let left = match step.cleared(platform, state, now, deadline).await {
        Ok(left) => left,
        Err(outcome) => return Opened::Failed(Attempt::skipped(outcome)),
    };
    let Step { provider, request, timeout_ms, parse, quota_spent, .. } = step;
    let request = providers::streaming(request);
    let first_token_ms = u64::from(config.stream_first_token_ms).min(u64::from(timeout_ms));
    let first_by = now + first_token_ms.min(left);
    let budget_cut = left < first_token_ms;
    let failed = |failure: Failure, at: u64| {
        let outcome = if matches!(failure, Failure::Timeout) && budget_cut {
            Outcome::BudgetSpent
        } else {
            failure.outcome()
        };
        (Attempt { outcome, latency_ms: Some(at.saturating_sub(now)) }, failure)
    };
    let wait_ms = u32::try_from(first_by - now).unwrap_or(u32::MAX);
    let response = match platform.fetch_streaming(request, wait_ms).await {
        Ok(response) => response,
        Err(error) => {
            return fail(platform, provider, failed(Failure::from(error), platform.now_ms())).await;
        }
    };
    let (parts, mut body) = response.into_parts();
    if !parts.status.is_success() {
        // Read what the error says (bounded), and judge it as the plain ask does.
        let bytes = collect(platform, &mut body, first_by).await;
        let failure = parse(&http::Response::from_parts(parts, bytes)).err().unwrap_or(Failure::Malformed);
        return fail(platform, provider, failed(failure, platform.now_ms())).await;
    }
    let head = http::Response::from_parts(parts, Vec::new());
    if let Some(retry_after_ms) = quota_spent(&head) {
        // The day's quota is spent with this answer: cool down afterwards, as the plain ask does.
        let spent = Failure::RateLimited { retry_after_ms };
        let _ = state::record_failure(platform, provider, &spent, platform.now_ms()).await;
    }
    let had_failures = state.consecutive_failures > 0 || state.breaker_open_until > 0;
    let decoder: Box<dyn StreamDecoder> = match provider {
        Provider::Groq => Box::new(GroqDecoder::new()),
        Provider::Ollama => Box::new(OllamaDecoder::new()),
    };
    let mut speaking = Speaking {
        provider,
        body,
        decoder,
        cleaner: StreamCleaner::new(),
        called_at: now,
        over: false,
        had_failures,
    };
    if is_json(&head) {
        // A server that ignores `stream: true` answers whole: judged as the plain ask does.
        let bytes = collect(platform, &mut speaking.body, first_by).await;
        let whole = http::Response::from_parts(head.into_parts().0, bytes);
        return match parse(&whole).and_then(|text| speaking.whole(&text)) {
            Ok(first) => Opened::Speaking(speaking, first),
            Err(failure) => fail(platform, provider, failed(failure, platform.now_ms())).await,
        };
    }
    loop {
        match speaking.read(platform, first_by).await {
            Heard::Text(first) => return Opened::Speaking(speaking, first),
            Heard::Nothing => {}
            Heard::End(Err(failure)) | Heard::Broken(failure) => {
                let failure = match failure {
                    // Before any token a cut or a silence is what it is in the plain ask.
                    Failure::Cut => Failure::Network,
                    Failure::Stalled => Failure::Timeout,
                    other => other,
                };
                return fail(platform, provider, failed(failure, platform.now_ms())).await;
            }
            Heard::End(Ok(())) => {
                let junk = Failure::Junk(super::clean::Junk::Empty);
                return fail(platform, provider, failed(junk, platform.now_ms())).await;
            }
        }
    }
}

/// Records a failure before the first token (breaker, cool-down) and gives its attempt.
async fn fail<P: Platform>(
    platform: &P,
    provider: Provider,
    (attempt, failure): (Attempt, Failure),
) -> Opened {
    if attempt.outcome != Outcome::BudgetSpent {
        let _ = state::record_failure(platform, provider, &failure, platform.now_ms()).await;
    }
    Opened::Failed(attempt)
}

/// What one read of a stream gave.
enum Heard {
    /// Text released by the cleaner (never empty).
    Text(String),
    /// Bytes that released nothing yet.
    Nothing,
    /// The stream ended: cleanly (`Ok`), or as junk.
    End(Result<(), Failure>),
    /// It broke, fell silent past `until`, or said an error.
    Broken(Failure),
}

impl Speaking {
    /// A whole answer through the cleaner at once: all of it is the first token.
    fn whole(&mut self, text: &str) -> Result<String, Failure> {
        let mut first = self.cleaner.push(text).map_err(|_| Failure::Junk(super::clean::Junk::Unusable))?;
        first.push_str(&self.cleaner.finish().map_err(|_| Failure::Junk(super::clean::Junk::Unusable))?);
        if first.is_empty() {
            return Err(Failure::Junk(super::clean::Junk::Empty));
        }
        self.over = true;
        Ok(first)
    }

    /// Reads the next piece by `until` and passes it through the decoder and the cleaner.
    async fn read<P: Platform>(&mut self, platform: &P, until: u64) -> Heard {
        if self.over {
            return Heard::End(Ok(()));
        }
        if platform.now_ms() >= until {
            return Heard::Broken(Failure::Stalled);
        }
        let wait = until.saturating_sub(platform.now_ms());
        let Some(next) = with_deadline(self.body.next(), platform.sleep(wait)).await else {
            return Heard::Broken(Failure::Stalled);
        };
        let bytes = match next {
            None => {
                // The body ended: whole only if the provider said it was done.
                return Heard::Broken(Failure::Cut);
            }
            Some(Err(_)) => return Heard::Broken(Failure::Cut),
            Some(Ok(bytes)) => bytes,
        };
        let mut pieces = Vec::new();
        let parsed = self.decoder.push(&bytes, &mut pieces);
        let mut released = String::new();
        for piece in pieces {
            match piece {
                Piece::Text(text) => match self.cleaner.push(&text) {
                    Ok(new) => released.push_str(&new),
                    Err(stop) => return self.stopped(released, stop),
                },
                Piece::Done => match self.cleaner.finish() {
                    Ok(rest) => {
                        released.push_str(&rest);
                        return self.ended(released);
                    }
                    Err(stop) => return self.stopped(released, stop),
                },
            }
            if self.cleaner.bounded() {
                // The length bound: the answer is whole; read no more (dropping cancels).
                return self.ended(released);
            }
        }
        if let Err(error) = parsed {
            let failure = match error {
                super::stream_parse::ParseError::Upstream(_) => Failure::Http(502),
                _ => Failure::Malformed,
            };
            return if released.is_empty() { Heard::Broken(failure) } else { Heard::Text(released) };
        }
        if released.is_empty() { Heard::Nothing } else { Heard::Text(released) }
    }

    fn ended(&mut self, released: String) -> Heard {
        // Read no more: dropping the body cancels the request (the length bound).
        self.over = true;
        self.body = futures_util::stream::empty().boxed_local();
        if released.is_empty() { Heard::End(Ok(())) } else { Heard::Text(released) }
    }

    fn stopped(&self, released: String, stop: Stop) -> Heard {
        if !released.is_empty() {
            return Heard::Text(released);
        }
        match stop {
            Stop::Junk(junk) if self.cleaner.released().is_empty() => Heard::End(Err(Failure::Junk(junk))),
            // Out of role after the answer began: ended there, but never held against the
            // provider's breaker (a question can make a model say it).
            Stop::Junk(junk) => Heard::Broken(Failure::Junk(junk)),
            Stop::Diverged => Heard::Broken(Failure::Cut),
        }
    }
}

/// Reads a body whole (bounded), by `until`.
async fn collect<P: Platform>(platform: &P, body: &mut BodyStream, until: u64) -> Vec<u8> {
    let wait = until.saturating_sub(platform.now_ms());
    let read = read_capped(body, super::seam::MAX_UPSTREAM_BYTES);
    with_deadline(read, platform.sleep(wait)).await.and_then(Result::ok).unwrap_or_default()
}

/// `text` in words, each with the space before it (`"¿Sí? ¡Claro!"` → `"¿Sí?"`, `" ¡Claro!"`).
fn words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        // Up to the next space after the first character (`¿` and `¡` are two bytes).
        let end = rest.char_indices().skip(1).find(|&(_, c)| c == ' ').map_or(rest.len(), |(i, _)| i);
        pieces.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    pieces
}

/// Whether a response says its body is one JSON document (a server that ignored `stream: true`).
fn is_json(head: &http::Response<Vec<u8>>) -> bool {
    let content_type = head.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    content_type.is_some_and(|ct| {
        ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// A row of `stream_endings`.
#[derive(Deserialize)]
struct EndingRow {
    text: String,
}

impl<P: Platform> Speech<P> {
    fn new(platform: P, config: &Config, started: u64, consultation: Consultation) -> Self {
        Speech {
            platform,
            deadline: started + u64::from(config.ask_budget_ms),
            gap_ms: u64::from(config.stream_gap_ms),
            started,
            first_token_ms: None,
            source: None,
            queue: VecDeque::new(),
            spoken: String::new(),
            complete: true,
            finished: false,
            ending: None,
            consultation,
        }
    }

    /// A whole answer (canned or remembered) given word by word.
    fn words(platform: P, config: &Config, started: u64, text: &str, consultation: Consultation) -> Self {
        let mut speech = Speech::new(platform, config, started, consultation);
        speech.first_token_ms = Some(speech.platform.now_ms().saturating_sub(started));
        speech.queue.extend(words(text));
        speech
    }

    /// The next event: tokens as they are ready, then `done` once; `None` after it.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(token) = self.queue.pop_front() {
                self.spoken.push_str(&token);
                return Some(Event::Token(token));
            }
            if self.finished {
                return None;
            }
            if let Some(outcome) = self.ending.take() {
                return Some(self.done(Some(outcome)).await);
            }
            let Some(source) = self.source.as_mut() else { return Some(self.done(None).await) };
            let gap_until = self.platform.now_ms() + self.gap_ms;
            let until = gap_until.min(self.deadline);
            let outcome = match source.read(&self.platform, until).await {
                Heard::Text(text) => {
                    self.queue.push_back(text);
                    continue;
                }
                Heard::Nothing => continue,
                Heard::End(Ok(())) => Outcome::Ok,
                // The ask's budget, not the provider, ended it: nothing held against the provider.
                Heard::Broken(Failure::Stalled) if until < gap_until => Outcome::BudgetSpent,
                Heard::Broken(Failure::Stalled) => Outcome::Stalled,
                Heard::End(Err(Failure::Junk(_))) | Heard::Broken(Failure::Junk(_)) => Outcome::Junk,
                // A reset, an error said in the stream or bytes that are not the format: cut.
                Heard::End(Err(_)) | Heard::Broken(_) => Outcome::Cut,
            };
            // Broken off: the words held back (the last one might have gone on) are spoken too.
            if outcome != Outcome::Ok
                && let Ok(rest) = source.cleaner.finish()
                && !rest.is_empty()
            {
                self.queue.push_back(rest);
            }
            self.ending = Some(outcome);
        }
    }

    /// Ends the answer: a closing when the provider's stream broke, the consultation completed.
    async fn done(&mut self, provider_outcome: Option<Outcome>) -> Event {
        // Everything the record needs is set before any wait, so a client that leaves during
        // these last writes still leaves a whole record behind.
        self.finished = true;
        let now = self.platform.now_ms();
        self.consultation.latency_ms = now.saturating_sub(self.started);
        self.consultation.id = ask::consultation_id(&self.platform);
        let first_token_ms = self.first_token_ms.unwrap_or(self.consultation.latency_ms);
        self.consultation.first_token_ms = Some(first_token_ms);
        if let (Some(source), Some(outcome)) = (self.source.take(), provider_outcome) {
            let latency_ms = Some(now.saturating_sub(source.called_at));
            *self.consultation.attempt_mut(source.provider) = Attempt { outcome, latency_ms };
            let provider = source.provider;
            if outcome == Outcome::Ok {
                if source.had_failures {
                    let _ = state::record_success(&self.platform, provider, now).await;
                }
            } else {
                self.complete = false;
                // A cut or a stall counts toward the breaker; junk and the budget do not.
                let failure = match outcome {
                    Outcome::Stalled => Some(Failure::Stalled),
                    Outcome::Cut => Some(Failure::Cut),
                    Outcome::Junk => Some(Failure::Junk(super::clean::Junk::Unusable)),
                    _ => None,
                };
                if let Some(failure) = failure {
                    let _ = state::record_failure(&self.platform, provider, &failure, now).await;
                }
                // The closing is in `done`'s answer only: the tokens are what the provider said.
                let closing = closing(&self.platform, &self.consultation).await;
                self.spoken.push(' ');
                self.spoken.push_str(&closing);
            }
        }
        if self.consultation.record.memo_tag.is_some() && self.complete {
            self.consultation.remember = Some(self.spoken.clone());
        }
        let answer = self.consultation.answer(self.spoken.clone());
        Event::Done(Box::new(Done { answer, complete: self.complete, first_token_ms }))
    }

    /// The consultation, complete once `done` was given.
    #[must_use]
    pub fn consultation(&self) -> &Consultation {
        &self.consultation
    }

    /// The consultation of an answer let go before its `done` (the client left): what was
    /// known, the speaking provider's call timed to now. Nothing is written to the database here.
    fn abandoned(&mut self) -> Consultation {
        if !self.finished {
            let now = self.platform.now_ms();
            if let Some(source) = self.source.take() {
                let latency_ms = Some(now.saturating_sub(source.called_at));
                *self.consultation.attempt_mut(source.provider) =
                    Attempt { outcome: Outcome::Ok, latency_ms };
            }
            self.consultation.latency_ms = now.saturating_sub(self.started);
            self.consultation.id = ask::consultation_id(&self.platform);
            self.consultation.first_token_ms = self.first_token_ms;
        }
        self.consultation.clone()
    }
}

/// Where a streamed answer leaves its consultation once its stream ends or is let go, for the
/// record written after the response ([`super::ask::After::Streamed`]).
#[derive(Default)]
pub struct RecordSlot {
    consultation: RefCell<Option<Consultation>>,
    waiting: Cell<Option<Waker>>,
}

impl RecordSlot {
    fn fill(&self, consultation: Consultation) {
        *self.consultation.borrow_mut() = Some(consultation);
        if let Some(waker) = self.waiting.take() {
            waker.wake();
        }
    }

    /// The consultation, once the stream has ended or was let go.
    pub async fn wait(&self) -> Consultation {
        std::future::poll_fn(|cx| {
            if let Some(consultation) = self.consultation.borrow_mut().take() {
                return Poll::Ready(consultation);
            }
            self.waiting.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// A speech whose consultation goes to its slot when it is dropped, ended or not.
struct Recorded<P: Platform> {
    speech: Speech<P>,
    slot: Rc<RecordSlot>,
}

impl<P: Platform> Drop for Recorded<P> {
    fn drop(&mut self) {
        self.slot.fill(self.speech.abandoned());
    }
}

/// The speech as server-sent events (`event: token`, then one `event: done`), and the slot its
/// consultation will be in once the events end or are let go.
pub fn events<P: Platform + 'static>(speech: Speech<P>) -> (super::api::Events, Rc<RecordSlot>) {
    let slot = Rc::new(RecordSlot::default());
    let recorded = Recorded { speech, slot: Rc::clone(&slot) };
    let events = futures_util::stream::unfold(recorded, |mut recorded| async move {
        let event = recorded.speech.next().await?;
        Some((sse(&event), recorded))
    });
    (events.boxed_local(), slot)
}

/// One server-sent event.
fn sse(event: &Event) -> Vec<u8> {
    let (name, data) = match event {
        Event::Token(text) => ("token", serde_json::json!({ "text": text }).to_string()),
        Event::Done(done) => ("done", serde_json::to_string(done).unwrap_or_else(|_| "{}".to_owned())),
    };
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

/// A closing in the answer's language, from the database (a fixed one if it cannot be read).
async fn closing<P: Platform>(platform: &P, consultation: &Consultation) -> String {
    let endings = endings(platform, consultation.language).await;
    let pick = platform.random_u64() % endings.len().max(1) as u64;
    endings.into_iter().nth(usize::try_from(pick).unwrap_or(0)).unwrap_or_else(|| "...".to_owned())
}

/// The closings in `language`, in id order (none if they cannot be read).
async fn endings<P: Platform>(platform: &P, language: Language) -> Vec<String> {
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            return super::kv::endings(language).into_iter().map(str::to_owned).collect();
        }
    }
    let rows: Result<Vec<EndingRow>, _> = platform
        .rows_as(
            "SELECT text FROM stream_endings WHERE language = ? ORDER BY id",
            &[language.as_str().into()],
        )
        .await;
    rows.map(|rows| rows.into_iter().map(|row| row.text).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_split_at_spaces_whatever_the_first_character() {
        assert_eq!(super::words("¿Sí? ¡Claro que sí!"), ["¿Sí?", " ¡Claro", " que", " sí!"]);
        assert_eq!(super::words("¡"), ["¡"]);
        assert!(super::words("").is_empty());
        assert_eq!(super::words(" a"), [" a"]);
    }
}
