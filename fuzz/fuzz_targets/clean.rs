//! Arbitrary text into the answer cleaner: an accepted answer is showable and spellable, and
//! cleaning it again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ouija_edge::core::clean::clean_answer;
use ouija_edge_fuzz::assert_clean_answer;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Ok(answer) = clean_answer(raw) {
        assert_clean_answer(&answer);
    }
});
