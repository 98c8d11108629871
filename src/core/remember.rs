//! The spirit's memory (`MEMORY_TTL_S`): the same asker asking the same question again within
//! that time gets the same answer, with no provider called; the third time and later, an annoyed
//! `repeat` answer. A question is the same when its folded words are (case, accents, punctuation
//! and spacing do not count). The database keeps keyed hashes of the asker and of the question,
//! never either one (`d1-migrations/0005_memories.sql`); the answer's text is the spirit's own.

use serde::Deserialize;

use super::asker::{Asker, HashKey};
use super::classify::words;
use super::domain::{Category, Language, Personality, Source};
use super::seam::{DbError, Platform};

/// The ask from the third time on gets an annoyed answer.
pub const ANNOYED_FROM: u64 = 3;

/// What the memory is keyed by: an asker and a question, both as keyed hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memo {
    asker: String,
    question: String,
    /// How long an answer is remembered, in ms (never 0: a memo exists only with memory on).
    ttl_ms: u64,
}

impl Memo {
    /// The memo of `asker` asking `question`, hashed with `key` (the asker hash's key, in its own
    /// domain); `None` when memory is off (`ttl_s` 0), or when the question has no words to fold
    /// (three different questions of emoji or punctuation alone are not the same question).
    #[must_use]
    pub fn new(key: &HashKey, asker: &Asker, question: &str, ttl_s: u32) -> Option<Memo> {
        let folded = words(question).join(" ");
        (ttl_s > 0 && !folded.is_empty()).then(|| Memo {
            asker: asker.as_str().to_owned(),
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

/// A `memories` row as the recall returns it, with the annoyed answers when they are due.
#[derive(Debug, Deserialize)]
struct RecallRow {
    times: u64,
    answer: String,
    source: Source,
    language: Language,
    personality: Personality,
    category: Category,
    /// A JSON array of the `repeat` answers in the asked language and personality, from the
    /// third time on.
    annoyed: Option<String>,
}

/// Counts this ask against a remembered answer and returns it, in one statement: the count, the
/// answer and, from the third time, the annoyed answers to choose from. `None` when this asker
/// has not asked this question within the memory's time (nothing is written then).
pub async fn recall<P: Platform>(
    platform: &P,
    memo: &Memo,
    now_ms: u64,
    language: Language,
    personality: Personality,
) -> Result<Option<Recalled>, DbError> {
    let mut rows: Vec<RecallRow> = platform
        .rows_as(
            "UPDATE memories SET times = times + 1 \
             WHERE asker = ?1 AND question = ?2 AND remembered_at > ?3 \
             RETURNING times, answer, source, language, personality, category, \
             CASE WHEN times >= ?6 THEN (SELECT json_group_array(text) FROM \
             (SELECT text FROM repeat_answers WHERE language = ?4 AND personality = ?5 ORDER BY id)) \
             END AS annoyed",
            &[
                memo.asker.as_str().into(),
                memo.question.as_str().into(),
                now_ms.saturating_sub(memo.ttl_ms).into(),
                language.as_str().into(),
                personality.as_str().into(),
                ANNOYED_FROM.into(),
            ],
        )
        .await?;
    let Some(row) = rows.pop() else { return Ok(None) };
    let remembered = Recalled {
        text: row.answer,
        source: row.source,
        language: row.language,
        personality: row.personality,
        category: row.category,
    };
    let annoyed: Vec<String> = match row.annoyed.as_deref() {
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

/// An answer to remember once it is given: who asked what (hashed), and what the spirit said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remember {
    /// Whose question.
    pub memo: Memo,
    /// The spirit's answer.
    pub text: String,
}

/// Remembers an answer given at `now_ms` (after the response is sent, with the consultation's
/// record). An expired memory of the same question is replaced; about one ask in 32 also prunes
/// every expired memory.
pub async fn remember<P: Platform>(
    platform: &P,
    remember: &Remember,
    now_ms: u64,
    answer: (Source, Language, Personality, Category),
) -> Result<(), DbError> {
    let (source, language, personality, category) = answer;
    platform
        .query(
            "INSERT INTO memories (asker, question, times, remembered_at, answer, source, language, \
             personality, category) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (asker, question) DO UPDATE SET times = 1, remembered_at = excluded.remembered_at, \
             answer = excluded.answer, source = excluded.source, language = excluded.language, \
             personality = excluded.personality, category = excluded.category",
            &[
                remember.memo.asker.as_str().into(),
                remember.memo.question.as_str().into(),
                now_ms.into(),
                remember.text.as_str().into(),
                source.as_str().into(),
                language.as_str().into(),
                personality.as_str().into(),
                category.as_str().into(),
            ],
        )
        .await?;
    if platform.random_u64().is_multiple_of(32) {
        platform
            .query(
                "DELETE FROM memories WHERE remembered_at <= ?",
                &[now_ms.saturating_sub(remember.memo.ttl_ms).into()],
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_is_the_same_whatever_its_case_accents_punctuation_and_spacing() {
        let key = HashKey::for_tests(b"k");
        let asker = key.asker(Some("203.0.113.7"));
        let memo = |q: &str| Memo::new(&key, &asker, q, 60).expect("memory on");
        assert_eq!(memo("¿Me casaré este año?"), memo("  me  CASARE, este año "));
        assert_ne!(memo("¿Me casaré este año?"), memo("¿Me casaré el año que viene?"));
        assert_ne!(memo("Will I win?").question, memo("Will I win?").asker, "two domains");
        assert!(!memo("Will I win?").question.contains("win"));
        assert_eq!(Memo::new(&key, &asker, "Will I win?", 0), None, "MEMORY_TTL_S=0 is off");
    }
}
