//! Cleaning model output into something a planchette can spell: one short plain-text answer.
//! Empty or junk output is rejected so the chain falls through to the next link.

use super::classify::fold;

/// Longest answer kept, in characters.
pub const MAX_ANSWER_CHARS: usize = 200;

/// Why model output was not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Junk {
    /// Nothing left after cleaning.
    #[error("empty answer")]
    Empty,
    /// No letters at all, code or JSON, or the model stepping out of the spirit's role.
    #[error("unusable answer")]
    Unusable,
    /// Mostly letters the board has no key for (another script): the planchette would spell nothing.
    #[error("answer the board cannot spell")]
    Unspellable,
}

const OUT_OF_ROLE: &[&str] = &[
    "as an ai",
    "language model",
    "i cannot",
    "i can't help",
    "i'm sorry, but",
    "modelo de lenguaje",
    "como ia",
    "no puedo ayudar",
];

/// Trims, strips quotes, markup and `<think>` blocks, joins lines, and bounds the length.
pub fn clean_answer(raw: &str) -> Result<String, Junk> {
    let text = unbounded(raw);

    if text.is_empty() {
        return Err(Junk::Empty);
    }
    let lower = text.to_lowercase();
    if !text.chars().any(char::is_alphabetic)
        || text.starts_with('{')
        || text.starts_with('[')
        || text.contains('\u{fffd}')
        || OUT_OF_ROLE.iter().any(|p| lower.contains(p))
    {
        return Err(Junk::Unusable);
    }
    if !mostly_spellable(&text) {
        return Err(Junk::Unspellable);
    }
    // The cut can leave only digits, or only letters the board lacks: judge what it will show.
    let shown = bound(&text);
    if !shown.chars().any(char::is_alphabetic) {
        return Err(Junk::Unusable);
    }
    if !mostly_spellable(&shown) {
        return Err(Junk::Unspellable);
    }
    Ok(shown)
}

/// The answer's text before the junk checks and the length bound: `<think>` blocks, tags,
/// markup, controls and invisible characters gone, white space joined, quotes and speaker labels
/// stripped. The streamed answer (`super::stream_clean`) follows how this grows.
pub(crate) fn unbounded(raw: &str) -> String {
    let without_thinking = strip_think_blocks(raw);
    let without_tags = strip_tags(&without_thinking);
    let plain: String = without_tags
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|&c| !is_invisible(c) && !matches!(c, '*' | '_' | '#' | '`' | '~' | '|' | '>' | '<'))
        .collect();
    let joined = plain.split_whitespace().collect::<Vec<_>>().join(" ");
    strip_wrapping(&joined).to_owned()
}

/// Characters that show nothing yet change how text reads: bidi controls (U+202E can make the board
/// show one thing while spelling another), zero-width and joiner characters, the byte-order mark,
/// soft hyphen, invisible operators, tag characters, variation selectors and blank "letters".
/// Unicode's `Cf` category and its invisible look-alikes, listed by hand: a Unicode property table
/// would cost more wasm bytes than these few ranges.
#[must_use]
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Whether `c` shows something: not white space, not a control, not invisible.
#[must_use]
pub fn is_visible(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !is_invisible(c)
}

/// Whether at least half of the letters fold to the board's A–Z (the board folds accents the same
/// way), so the planchette spells most of what the answer says.
fn mostly_spellable(text: &str) -> bool {
    let (letters, spellable) =
        text.chars().filter(|c| c.is_alphabetic()).fold((0_usize, 0_usize), |(l, s), c| {
            let folded = fold(c.encode_utf8(&mut [0; 4]));
            (l + 1, s + usize::from(folded.chars().all(|f| f.is_ascii_alphabetic())))
        });
    spellable > 0 && spellable * 2 >= letters
}

pub(crate) fn is_quote_or_space(c: char) -> bool {
    matches!(c, '"' | '\'' | '“' | '”' | '‘' | '’' | '«' | '»' | '`') || c.is_whitespace()
}

fn strip_think_blocks(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("<think>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</think>") {
            Some(end) => rest = &rest[start + end + "</think>".len()..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Trims quotes and speaker labels until none is left: `Spirit: "Answer: yes"` is `yes`, so
/// cleaning an answer again changes nothing.
fn strip_wrapping(mut text: &str) -> &str {
    loop {
        let stripped =
            strip_speaker_label(text.trim_matches(is_quote_or_space)).trim_matches(is_quote_or_space);
        if stripped.len() == text.len() {
            return stripped;
        }
        text = stripped;
    }
}

/// The speaker labels small models like to add, lower case.
pub(crate) const LABELS: &[&str] =
    &["spirit:", "the spirit:", "espíritu:", "espiritu:", "el espíritu:", "answer:", "respuesta:", "ouija:"];

/// Drops a leading "Spirit:" / "Espíritu:" / "Answer:" label that small models like to add.
fn strip_speaker_label(text: &str) -> &str {
    let lower = text.to_lowercase();
    LABELS
        .iter()
        .find(|label| lower.starts_with(*label))
        .and_then(|label| text.get(label.len()..))
        .map_or(text, str::trim_start)
}

/// Cuts at the last sentence end (or else word end) that fits in [`MAX_ANSWER_CHARS`]; a quote
/// left dangling at the cut goes too, as it would on a second cleaning.
pub(crate) fn bound(text: &str) -> String {
    if text.chars().count() <= MAX_ANSWER_CHARS {
        return text.to_owned();
    }
    let prefix: String = text.chars().take(MAX_ANSWER_CHARS).collect();
    let cut = sentence_end(&prefix).or_else(|| prefix.rfind(' ')).unwrap_or(prefix.len());
    prefix[..cut].trim_end_matches(is_quote_or_space).to_owned()
}

/// Where [`bound`] may cut after a sentence: just past the last `.`, `!` or `?` that is at least a
/// third of the way in (a byte index).
pub(crate) fn sentence_end(text: &str) -> Option<usize> {
    text.rfind(['.', '!', '?']).filter(|&i| i >= MAX_ANSWER_CHARS / 3).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_markup_and_labels_are_stripped() {
        assert_eq!(clean_answer("  \"**Yes**, the stars agree.\"  ").as_deref(), Ok("Yes, the stars agree."));
        assert_eq!(clean_answer("Espíritu: «Sí, pronto»").as_deref(), Ok("Sí, pronto"));
        assert_eq!(clean_answer("<b>No.</b>\n\nNever.").as_deref(), Ok("No. Never."));
    }

    #[test]
    fn think_blocks_are_removed() {
        assert_eq!(clean_answer("<think>hmm, let me see</think>Maybe.").as_deref(), Ok("Maybe."));
        assert_eq!(clean_answer("<think>never closed"), Err(Junk::Empty));
    }

    #[test]
    fn empty_and_junk_output_is_rejected() {
        assert_eq!(clean_answer("   "), Err(Junk::Empty));
        assert_eq!(clean_answer("\"\""), Err(Junk::Empty));
        assert_eq!(clean_answer("... !!! 42"), Err(Junk::Unusable));
        assert_eq!(clean_answer("{\"answer\": \"yes\"}"), Err(Junk::Unusable));
        assert_eq!(clean_answer("As an AI, I cannot predict the future."), Err(Junk::Unusable));
    }

    #[test]
    fn bidi_zero_width_and_control_characters_are_removed() {
        assert_eq!(clean_answer("\u{202E}sey\u{202C} indeed").as_deref(), Ok("sey indeed"));
        assert_eq!(
            clean_answer("Y\u{200B}es\u{FEFF}, \u{2066}soon\u{2069}\u{0000}.").as_deref(),
            Ok("Yes, soon .")
        );
        assert_eq!(clean_answer("\u{200B}\u{FEFF}\u{202E}"), Err(Junk::Empty));
    }

    #[test]
    fn answers_mostly_in_a_script_the_board_lacks_are_rejected() {
        assert_eq!(clean_answer("是的，星星同意。"), Err(Junk::Unspellable));
        assert_eq!(clean_answer("Да, звёзды согласны"), Err(Junk::Unspellable));
        assert_eq!(clean_answer("OK 是的，星星同意"), Err(Junk::Unspellable));
        // Accented Spanish and a stray foreign word are fine: most letters are on the board.
        assert_eq!(clean_answer("Sí, mañana será.").as_deref(), Ok("Sí, mañana será."));
        assert_eq!(clean_answer("Yes, the spirits say 是.").as_deref(), Ok("Yes, the spirits say 是."));
    }

    #[test]
    fn stacked_labels_and_quotes_are_all_stripped() {
        // Caught by the fuzzer's idempotence check (fuzz/corpus/clean/stacked_labels): one pass
        // left "Answer: yes", which a second cleaning turned into "yes".
        assert_eq!(clean_answer("Spirit: \"Answer: yes\"").as_deref(), Ok("yes"));
        assert_eq!(clean_answer("«Respuesta: 'Espíritu: sí'»").as_deref(), Ok("sí"));
    }

    #[test]
    fn a_cut_answer_is_judged_by_what_the_board_shows() {
        // Found by fuzzing (fuzz/corpus/clean/no_letter_before_cut, quote_at_cut): the cut left no
        // letters or a dangling quote, so cleaning the answer again changed it; and, by the same
        // reasoning, it could leave only letters the board lacks.
        let digits_then_word = format!("{}yes", "1 ".repeat(150));
        assert_eq!(clean_answer(&digits_then_word), Err(Junk::Unusable));
        let cyrillic_then_latin = format!("{}{}", "да ".repeat(80), "yes ".repeat(200));
        assert_eq!(clean_answer(&cyrillic_then_latin), Err(Junk::Unspellable));
        let quoted_at_cut = format!("{}\"yes\" {}", "word ".repeat(38), "more ".repeat(20));
        let answer = clean_answer(&quoted_at_cut).expect("usable");
        assert!(!answer.ends_with('"'), "{answer}");
        assert_eq!(clean_answer(&answer), Ok(answer));
    }

    #[test]
    fn long_output_is_bounded_at_a_sentence_or_word() {
        let long = format!("{} End.", "The shadows whisper yes. ".repeat(20));
        let answer = clean_answer(&long).expect("usable");
        assert!(answer.chars().count() <= MAX_ANSWER_CHARS);
        assert!(answer.ends_with('.'), "{answer}");
        let words = "word ".repeat(100);
        let answer = clean_answer(&words).expect("usable");
        assert!(answer.chars().count() <= MAX_ANSWER_CHARS && answer.ends_with("word"));
    }
}
