//! Invariants shared by the edge's fuzz targets: what every cleaned answer must look like, wherever
//! it came from (the cleaner itself or a provider reply).

use ouija_edge::core::clean::{clean_answer, is_invisible, MAX_ANSWER_CHARS};

/// Panics unless `answer` is something the board can show and spell, and cleaning it again
/// changes nothing.
pub fn assert_clean_answer(answer: &str) {
    assert!(!answer.is_empty(), "empty answer");
    let chars = answer.chars().count();
    assert!(chars <= MAX_ANSWER_CHARS, "{chars} chars > {MAX_ANSWER_CHARS}: {answer:?}");
    assert!(!answer.chars().any(char::is_control), "control character in {answer:?}");
    assert!(!answer.chars().any(is_invisible), "invisible character in {answer:?}");
    assert_eq!(answer.trim(), answer, "untrimmed answer");
    assert!(answer.chars().any(char::is_alphabetic), "no letter in {answer:?}");
    assert_eq!(clean_answer(answer).as_deref(), Ok(answer), "cleaning is not idempotent");
}
