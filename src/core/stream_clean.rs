//! Cleaning a streamed answer as it arrives (#12): the text released to the board is always a
//! prefix of what [`clean_answer`] makes of the whole output, so for the same upstream output the
//! streamed answer and the plain ask's answer are the same text, however the output was split.
//!
//! Each piece is added to the raw output and the whole is cleaned again (bounded by
//! [`MAX_RAW_BYTES`]); of that, only what no later text can change is released:
//! - nothing until the start is settled (leading quotes and a speaker label such as `Spirit:` may
//!   still be arriving) and the text so far passes the junk checks (the first-chunk gate);
//! - never trailing quotes or spaces (`yes"` may end the answer or be followed by more);
//! - while the answer may still outgrow [`MAX_ANSWER_CHARS`], nothing past the point where the
//!   length bound could cut it: the last sentence end a third of the way in, else the last space;
//! - once the cleaned text is over the bound, the rest is known: it is released and the stream is
//!   over ([`StreamCleaner::bounded`]: read no more).

use super::clean::{
    Junk, LABELS, MAX_ANSWER_CHARS, clean_answer, is_quote_or_space, sentence_end, unbounded,
};

/// Raw output kept at most; past it the answer is what has arrived (a long `<think>` block from a
/// reasoning model would otherwise make every piece re-clean more text).
pub const MAX_RAW_BYTES: usize = 16 * 1024;

/// The cleaner of one streamed answer.
#[derive(Debug, Default)]
pub struct StreamCleaner {
    raw: String,
    released: String,
    bounded: bool,
}

/// Why a stream's text cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After text was released, the whole turned into junk (an out-of-role phrase, mostly letters
    /// the board lacks): end the stream there, as cut.
    Junk(Junk),
    /// The final cleaning does not continue what was released (never expected: a guard).
    Diverged,
}

impl StreamCleaner {
    /// A cleaner with nothing heard yet.
    #[must_use]
    pub fn new() -> StreamCleaner {
        StreamCleaner::default()
    }

    /// The text released so far.
    #[must_use]
    pub fn released(&self) -> &str {
        &self.released
    }

    /// Whether the length bound is reached: the answer is complete, read no more.
    #[must_use]
    pub fn bounded(&self) -> bool {
        self.bounded
    }

    /// Adds `piece` of the raw output; returns the text newly released (empty when nothing is yet).
    pub fn push(&mut self, piece: &str) -> Result<String, Stop> {
        if self.bounded {
            return Ok(String::new());
        }
        let room = MAX_RAW_BYTES.saturating_sub(self.raw.len());
        let mut end = piece.len().min(room);
        while !piece.is_char_boundary(end) {
            end -= 1;
        }
        self.raw.push_str(&piece[..end]);
        if end < piece.len() {
            self.bounded = true;
        }
        let whole = match clean_answer(&self.raw) {
            Ok(whole) => whole,
            // Before the gate, junk so far may still become an answer; after it, the stream ends.
            Err(junk) if self.released.is_empty() => {
                let _ = junk;
                return Ok(String::new());
            }
            Err(junk) => return Err(Stop::Junk(junk)),
        };
        let text = unbounded(&self.raw);
        if text.chars().count() > MAX_ANSWER_CHARS {
            // Over the bound: the answer is known (the bound cuts within the first characters).
            self.bounded = true;
            return self.release(&whole);
        }
        if self.bounded {
            return self.release(&whole);
        }
        if !start_settled(&text) {
            return Ok(String::new());
        }
        // The last word may still grow, unless the raw output already ended it with white space.
        let last_word = if word_ended(&self.raw) { text.len() } else { text.rfind(' ').unwrap_or(0) };
        let safe = sentence_end(&text).unwrap_or(last_word);
        let safe = text[..safe].trim_end_matches(is_quote_or_space);
        self.release(safe)
    }

    /// The stream ended cleanly: the rest of the answer, so that everything released is exactly
    /// [`clean_answer`] of the whole output.
    pub fn finish(&mut self) -> Result<String, Stop> {
        let whole = clean_answer(&self.raw).map_err(Stop::Junk)?;
        self.bounded = true;
        self.release(&whole)
    }

    /// Releases what `text` adds to the released text; `text` must continue it.
    fn release(&mut self, text: &str) -> Result<String, Stop> {
        if text.len() <= self.released.len() {
            return if self.released.starts_with(text) { Ok(String::new()) } else { Err(Stop::Diverged) };
        }
        let Some(new) = text.strip_prefix(self.released.as_str()) else { return Err(Stop::Diverged) };
        let new = new.to_owned();
        self.released.push_str(&new);
        Ok(new)
    }
}

/// Whether the raw output so far ends with white space outside any tag or `<think>` block: then
/// its last word is whole, and more text cannot join it (the planchette need not wait for the
/// next word to start on this one).
fn word_ended(raw: &str) -> bool {
    let in_tag = raw.rfind('<').is_some_and(|open| raw.rfind('>').is_none_or(|close| close < open));
    let thinking =
        raw.rfind("<think>").is_some_and(|open| raw.rfind("</think>").is_none_or(|close| close < open));
    raw.ends_with(char::is_whitespace) && !in_tag && !thinking
}

/// Whether the answer's start can no longer change: it is not (the beginning of) a speaker label
/// that more text could complete and strip.
fn start_settled(text: &str) -> bool {
    let lower = text.to_lowercase();
    !text.is_empty() && !LABELS.iter().any(|label| label.len() > lower.len() && label.starts_with(&lower))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::memory::SplitMix;

    /// Streams `raw` in `pieces` and returns the released text and the pieces released.
    fn stream(raw: &[&str]) -> (Result<String, Stop>, Vec<String>) {
        let mut cleaner = StreamCleaner::new();
        let mut released = Vec::new();
        for piece in raw {
            match cleaner.push(piece) {
                Ok(new) if !new.is_empty() => released.push(new),
                Ok(_) => {}
                Err(stop) => return (Err(stop), released),
            }
            if cleaner.bounded() {
                break;
            }
        }
        match cleaner.finish() {
            Ok(rest) => {
                if !rest.is_empty() {
                    released.push(rest);
                }
                (Ok(cleaner.released().to_owned()), released)
            }
            Err(stop) => (Err(stop), released),
        }
    }

    #[test]
    fn a_label_and_quotes_are_held_back_until_they_are_known() {
        let (whole, pieces) = stream(&["Spi", "rit", ": \"", "Yes", ", the", " stars", " agree.", "\""]);
        assert_eq!(whole, Ok("Yes, the stars agree.".to_owned()));
        assert_eq!(pieces[0], "Yes,", "the first word once the next began: nothing of the label");
        assert_eq!(pieces.concat(), "Yes, the stars agree.");
    }

    #[test]
    fn a_word_followed_by_white_space_is_released_without_waiting_for_the_next() {
        let mut cleaner = StreamCleaner::new();
        assert_eq!(cleaner.push("Yes, ").as_deref(), Ok("Yes,"), "its space says the word is whole");
        assert_eq!(cleaner.push("sur").as_deref(), Ok(""), "a word still growing waits");
        assert_eq!(cleaner.push("ely <b").as_deref(), Ok(""), "an open tag: wait for it to close");
        assert_eq!(cleaner.push(">so ").as_deref(), Ok(" surely so"));
        assert_eq!(cleaner.finish().as_deref(), Ok(""));
        assert_eq!(cleaner.released(), clean_answer("Yes, surely <b>so ").expect("usable"));
    }

    #[test]
    fn junk_is_never_released_and_out_of_role_text_after_the_gate_stops_the_stream() {
        let (whole, pieces) = stream(&["{\"answer\"", ": \"yes\"}"]);
        assert_eq!((whole, pieces.len()), (Err(Stop::Junk(Junk::Unusable)), 0));
        let (whole, pieces) = stream(&["The mist ", "parts. ", "As an AI, ", "I cannot know."]);
        assert_eq!(whole, Err(Stop::Junk(Junk::Unusable)));
        assert_eq!(pieces.concat(), "The mist parts.", "what was said stays said; nothing out of role");
    }

    #[test]
    fn the_length_bound_ends_the_stream_at_a_sentence() {
        let sentence = "The shadows whisper yes. ";
        let mut cleaner = StreamCleaner::new();
        let mut released = String::new();
        let mut pushed = 0;
        while !cleaner.bounded() {
            released.push_str(&cleaner.push(sentence).expect("no junk"));
            pushed += 1;
        }
        assert_eq!(pushed, 9, "stopped reading as soon as the answer outgrew the bound");
        assert_eq!(released, clean_answer(&sentence.repeat(20)).expect("usable"));
        assert!(released.ends_with("yes.") && released.chars().count() <= MAX_ANSWER_CHARS);
    }

    #[test]
    fn think_blocks_and_tags_never_leak_while_open() {
        let (whole, pieces) =
            stream(&["<thi", "nk>Hmm, what", " to say", "</think>", "Yes, ", "<b>sure", "</b> of it."]);
        assert_eq!(whole, Ok("Yes, sure of it.".to_owned()));
        assert!(pieces.iter().all(|p| !p.contains("Hmm") && !p.contains('<')), "{pieces:?}");
    }

    /// Model-like output: words, punctuation, quotes, labels, markup, think blocks, line breaks,
    /// accents, emoji and other scripts, short and over the bound.
    fn output(random: &mut SplitMix) -> String {
        const PARTS: &[&str] = &[
            "yes",
            "no",
            "the",
            "stars",
            "agree",
            "sí",
            "mañana",
            "será",
            "perhaps",
            "darkness",
            "soon",
            ".",
            ",",
            "!",
            "?",
            " ",
            " ",
            " ",
            "  ",
            "\n",
            "\n\n",
            "\"",
            "'",
            "“",
            "”",
            "«",
            "»",
            "**",
            "_",
            "`",
            "<b>",
            "</b>",
            "<think>",
            "</think>",
            "Spirit: ",
            "Answer: ",
            "Espíritu: ",
            "🔮",
            "是",
            "да",
            "it's",
            "42",
            "\u{200B}",
            "\t",
            "-",
            "…",
        ];
        let longest = if random.below(4) == 0 { 160 } else { 30 };
        let length = 1 + random.below(longest);
        (0..length).map(|_| PARTS[random.below(PARTS.len())]).collect()
    }

    /// `text` split at random characters into pieces of 1 to 12 characters.
    fn split(text: &str, random: &mut SplitMix) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < chars.len() {
            let take = (1 + random.below(12)).min(chars.len() - at);
            pieces.push(chars[at..at + take].iter().collect());
            at += take;
        }
        pieces
    }

    #[test]
    fn streamed_text_equals_the_plain_asks_text_however_the_output_is_split() {
        let mut random = SplitMix(0x5eed);
        let mut usable = 0;
        for case in 0..5_000 {
            let raw = output(&mut random);
            let Ok(plain) = clean_answer(&raw) else { continue };
            usable += 1;
            let pieces = split(&raw, &mut random);
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let (whole, released) = stream(&pieces);
            match whole {
                Ok(whole) => {
                    assert_eq!(whole, plain, "case {case}: {raw:?} in {pieces:?}");
                    assert_eq!(released.concat(), plain, "case {case}");
                }
                // Usable as a whole, junk in part: stopped only after text that stays said.
                Err(Stop::Junk(_)) => assert!(plain.starts_with(&released.concat()), "case {case}: {raw:?}"),
                Err(Stop::Diverged) => panic!("case {case}: diverged on {raw:?} in {pieces:?}"),
            }
        }
        assert!(usable > 1_000, "the generator makes usable answers too: {usable}");
    }
}
