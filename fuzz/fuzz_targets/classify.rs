//! Arbitrary text into the question reader: folding, words, language and category never panic,
//! words are non-empty runs of letters and digits, and folding twice is folding once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ouija_edge::core::classify::{classify, fold, guess_language, words};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let folded = fold(text);
    assert_eq!(fold(&folded), folded, "fold is not idempotent on {text:?}");
    for word in words(text) {
        assert!(!word.is_empty(), "empty word in {text:?}");
        assert!(word.chars().all(char::is_alphanumeric), "word {word:?} of {text:?} is not alphanumeric");
    }
    let _ = guess_language(text);
    let _ = classify(text);
});
