//! The chain's last link: a canned answer from `fallback_responses` that fits the question.

use super::classify::words;
use super::domain::{Category, Language, Personality};
use serde::Deserialize;

use super::seam::{DbError, Platform};

/// Latest records the pick reads for answers given since the last roll-up (which runs a minute
/// behind): the rows read stay bounded however busy the minute was. A canned answer given more
/// records ago than this and not yet rolled up may be given again.
pub const RECENT_RECORDS: u64 = 64;

/// A canned answer chosen for a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannedAnswer {
    /// Row id, recorded with the consultation so that the next picks avoid it.
    pub id: i64,
    /// The answer's text.
    pub text: String,
}

/// A candidate row with what ranks it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    id: i64,
    text: String,
    category: String,
    keywords: Vec<String>,
    last_served_key: u64,
}

/// A `fallback_responses` row as read.
#[derive(Debug, Deserialize)]
struct CandidateRow {
    id: i64,
    text: String,
    category: String,
    keywords: String,
    last_served_key: Option<u64>,
}

impl Candidate {
    /// A candidate from its parts (`keywords` space-separated).
    pub(crate) fn new(
        id: i64,
        text: &str,
        category: &str,
        keywords: &str,
        last_served_key: u64,
    ) -> Candidate {
        Candidate {
            id,
            text: text.to_owned(),
            category: category.to_owned(),
            keywords: keywords.split_whitespace().map(str::to_owned).collect(),
            last_served_key,
        }
    }
}

impl From<CandidateRow> for Candidate {
    fn from(row: CandidateRow) -> Candidate {
        Candidate::new(row.id, &row.text, &row.category, &row.keywords, row.last_served_key.unwrap_or(0))
    }
}

/// Picks a canned answer for `question`; `None` when the table has nothing for this language
/// and personality (the seed was not applied). On the key-value store the seed is compiled in
/// and no store is read: the answers given are not marked, so ties are broken at random only.
pub async fn pick<P: Platform>(
    platform: &P,
    question: &str,
    category: Category,
    personality: Personality,
    language: Language,
) -> Result<Option<CannedAnswer>, DbError> {
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            return Ok(super::kv::pick(&words(question), category, personality, language, platform.random_u64()));
        }
    }
    let rows: Vec<CandidateRow> = platform
        .rows_as(
            // Given most recently: as rolled up into the row, or among the consultations since.
            "SELECT f.id, f.text, f.category, f.keywords, \
             MAX(f.last_served_key, COALESCE(recent.served, 0)) AS last_served_key \
             FROM fallback_responses f LEFT JOIN (SELECT fallback_id, MAX(key) AS served FROM \
             (SELECT fallback_id, key FROM consultations ORDER BY key DESC LIMIT ?) \
             WHERE key > (SELECT upto FROM consultation_rollup) AND fallback_id IS NOT NULL \
             GROUP BY fallback_id) recent ON recent.fallback_id = f.id \
             WHERE f.language = ? AND f.personality = ? AND f.category IN (?, 'general')",
            &[
                RECENT_RECORDS.into(),
                language.as_str().into(),
                personality.as_str().into(),
                category.as_str().into(),
            ],
        )
        .await?;
    let candidates: Vec<Candidate> = rows.into_iter().map(Candidate::from).collect();
    Ok(choose(candidates, &words(question), category, platform.random_u64()))
}

/// The category's rows (else `general`'s), minus the one given most recently, ranked by keywords
/// shared with the question, then by how long ago they were given; ties broken by `random`.
pub(crate) fn choose(
    candidates: Vec<Candidate>,
    question_words: &[String],
    category: Category,
    random: u64,
) -> Option<CannedAnswer> {
    let (in_category, general): (Vec<_>, Vec<_>) =
        candidates.into_iter().partition(|c| c.category == category.as_str());
    let mut pool = if in_category.is_empty() { general } else { in_category };
    if pool.len() > 1
        && let Some(latest) = pool.iter().filter(|c| c.last_served_key > 0).max_by_key(|c| c.last_served_key)
    {
        let latest_id = latest.id;
        pool.retain(|c| c.id != latest_id);
    }
    let shared = |c: &Candidate| c.keywords.iter().filter(|k| question_words.contains(k)).count();
    let best_rank = pool.iter().map(|c| (shared(c), std::cmp::Reverse(c.last_served_key))).max()?;
    let best: Vec<&Candidate> =
        pool.iter().filter(|c| (shared(c), std::cmp::Reverse(c.last_served_key)) == best_rank).collect();
    let chosen = best[(random % best.len() as u64) as usize];
    Some(CannedAnswer { id: chosen.id, text: chosen.text.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: i64, category: &str, keywords: &str, last_served_key: u64) -> Candidate {
        Candidate {
            id,
            text: format!("answer {id}"),
            category: category.into(),
            keywords: keywords.split_whitespace().map(str::to_owned).collect(),
            last_served_key,
        }
    }

    fn question(text: &str) -> Vec<String> {
        words(text)
    }

    #[test]
    fn category_rows_win_over_general() {
        let rows = vec![candidate(1, "general", "love", 0), candidate(2, "love", "", 0)];
        let chosen = choose(rows, &question("love?"), Category::Love, 0).expect("an answer");
        assert_eq!(chosen.id, 2);
    }

    #[test]
    fn general_is_used_when_the_category_has_no_rows() {
        let rows = vec![candidate(1, "general", "", 0)];
        assert_eq!(choose(rows, &question("money?"), Category::Money, 7).map(|c| c.id), Some(1));
    }

    #[test]
    fn shared_keywords_are_preferred() {
        let rows = vec![
            candidate(1, "love", "marry wedding", 0),
            candidate(2, "love", "crush", 0),
            candidate(3, "love", "kiss", 0),
        ];
        let chosen = choose(rows, &question("Will we marry?"), Category::Love, 1).expect("an answer");
        assert_eq!(chosen.id, 1);
    }

    #[test]
    fn the_most_recent_answer_is_avoided_even_when_it_fits_best() {
        let rows = vec![
            candidate(1, "love", "marry", 500),
            candidate(2, "love", "", 100),
            candidate(3, "love", "", 0),
        ];
        let chosen = choose(rows, &question("marry?"), Category::Love, 0).expect("an answer");
        assert_eq!(chosen.id, 3, "least recently given of the rest");
    }

    #[test]
    fn nothing_to_choose_gives_none() {
        assert_eq!(choose(Vec::new(), &question("x"), Category::General, 0), None);
    }
}
