//! The spirit's memory (`MEMORY_TTL_S`): the same asker asking the same question again within
//! that time gets the same answer, with no provider called; the third time and later, an annoyed
//! `repeat` answer. A question is the same when its folded words are (case, accents, punctuation
//! and spacing do not count). The database keeps keyed hashes of the asker and of the question,
//! never either one, in the asker's row (`d1-migrations/0006_one_round_trip.sql`); the answer's
//! text is the spirit's own, kept with the consultation that gave it.

use serde::Deserialize;

use super::asker::HashKey;
use super::classify::words;
use super::domain::{Category, Language, Personality, Source};
use super::seam::DbError;

/// The ask from the third time on gets an annoyed answer.
pub const ANNOYED_FROM: u64 = 3;

/// What the memory is keyed by in the asker's row: the question, as a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memo {
    pub(crate) question: String,
    /// How long an answer is remembered, in ms (never 0: a memo exists only with memory on).
    pub(crate) ttl_ms: u64,
}

impl Memo {
    /// The memo of `question`, hashed with `key` (the asker hash's key, in its own domain); `None`
    /// when memory is off (`ttl_s` 0), or when the question has no words to fold
    /// (three different questions of emoji or punctuation alone are not the same question).
    #[must_use]
    pub fn new(key: &HashKey, question: &str, ttl_s: u32) -> Option<Memo> {
        let folded = words(question).join(" ");
        (ttl_s > 0 && !folded.is_empty()).then(|| Memo {
            question: key.hash(b"question", folded.as_bytes()),
            ttl_ms: u64::from(ttl_s) * 1_000,
        })
    }
}

/// What the memory gave back for an ask asked before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recalled {
    /// The answer to give: the remembered one, or an annoyed one from the third time.
    pub text: String,
    /// Where the remembered answer came from (`sqlite` for an annoyed one).
    pub source: Source,
    /// The answer's language.
    pub language: Language,
    /// The personality that answered.
    pub personality: Personality,
    /// The question's category, as first found.
    pub category: Category,
}

/// What the asker's row says of the memory after this ask was counted (see
/// [`super::admission`]): how many times the question was asked within the memory's time, the
/// remembered consultation's answer (JSON, when it exists) and, from the third time, the annoyed
/// answers to choose from (a JSON array).
#[derive(Debug, Deserialize)]
pub struct MemoryRow {
    /// Times asked, this ask included (1: a new question).
    pub times: u64,
    /// The remembered consultation, as `{"answer", "source", "language", "personality", "category"}`.
    pub remembered: Option<String>,
    /// The `repeat` answers in the asked language and personality, from the third time on.
    pub annoyed: Option<String>,
}

/// The remembered consultation's part of [`MemoryRow`].
#[derive(Debug, Deserialize)]
struct RememberedAnswer {
    answer: String,
    source: Source,
    language: Language,
    personality: Personality,
    category: Category,
}

/// The answer the memory gives for `row`, if it has one: the remembered answer the second time,
/// an annoyed one from the third. `None` for a new question, or when the remembered consultation
/// is not (yet) in the database.
pub fn recall(
    memo: &Memo,
    row: &MemoryRow,
    language: Language,
    personality: Personality,
) -> Result<Option<Recalled>, DbError> {
    let Some(json) = row.remembered.as_deref().filter(|_| row.times > 1) else { return Ok(None) };
    let found: RememberedAnswer =
        serde_json::from_str(json).map_err(|e| DbError(format!("unexpected remembered answer: {e}")))?;
    let remembered = Recalled {
        text: found.answer,
        source: found.source,
        language: found.language,
        personality: found.personality,
        category: found.category,
    };
    let annoyed: Vec<String> = match row.annoyed.as_deref().filter(|_| row.times >= ANNOYED_FROM) {
        Some(json) => {
            serde_json::from_str(json).map_err(|e| DbError(format!("unexpected repeat answers: {e}")))?
        }
        None => Vec::new(),
    };
    if annoyed.is_empty() {
        // Not yet the third time, or no `repeat` answers seeded: the remembered answer will do.
        return Ok(Some(remembered));
    }
    // In turn, from a place that differs by question, so two questions do not annoy alike.
    let offset = u64::from_str_radix(&memo.question[..8], 16).unwrap_or(0);
    let turn = (row.times.saturating_sub(ANNOYED_FROM) + offset) % annoyed.len() as u64;
    let text = annoyed.into_iter().nth(usize::try_from(turn).unwrap_or(0)).unwrap_or_default();
    Ok(Some(Recalled { text, source: Source::Sqlite, language, personality, ..remembered }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_is_the_same_whatever_its_case_accents_punctuation_and_spacing() {
        let key = HashKey::for_tests(b"k");
        let memo = |q: &str| Memo::new(&key, q, 60).expect("memory on");
        assert_eq!(memo("¿Me casaré este año?"), memo("  me  CASARE, este año "));
        assert_ne!(memo("¿Me casaré este año?"), memo("¿Me casaré el año que viene?"));
        assert_ne!(memo("Will I win?").question, key.hash(b"asker", b"will i win"), "two domains");
        assert!(!memo("Will I win?").question.contains("win"));
        assert_eq!(Memo::new(&key, "Will I win?", 0), None, "MEMORY_TTL_S=0 is off");
    }
}
