//! The spirit's voice: the system prompt sent to Groq and Ollama for a personality and language.

use super::domain::{Language, Personality};

/// The system prompt for a spirit of `personality` answering in `language`.
#[must_use]
pub fn system_prompt(personality: Personality, language: Language) -> String {
    match language {
        Language::En => format!(
            "You are a spirit speaking through a Ouija board. {} Answer the question in English, \
             in one short sentence of at most 12 words. No quotes, emoji, lists, markup or \
             explanations. Never say you are an AI; stay a spirit.",
            character_en(personality)
        ),
        Language::Es => format!(
            "Eres un espíritu que habla a través de un tablero de ouija. {} Responde la pregunta \
             en español, en una sola frase corta de 12 palabras como máximo. Sin comillas, emojis, \
             listas, formato ni explicaciones. Nunca digas que eres una IA; sigue siendo un espíritu.",
            character_es(personality)
        ),
    }
}

fn character_en(personality: Personality) -> &'static str {
    match personality {
        Personality::Wise => "You are an old, serene soul who gives calm, kind counsel.",
        Personality::Cryptic => "You answer in riddles and half-truths, never quite plainly.",
        Personality::Dark => "You are ominous and gothic, full of shadows and warnings, never cruel.",
        Personality::Playful => "You are a mischievous ghost who teases and jokes.",
    }
}

fn character_es(personality: Personality) -> &'static str {
    match personality {
        Personality::Wise => "Eres un alma antigua y serena que da consejos tranquilos y amables.",
        Personality::Cryptic => "Respondes con acertijos y medias verdades, nunca del todo claro.",
        Personality::Dark => "Eres sombrío y gótico, lleno de advertencias, pero nunca cruel.",
        Personality::Playful => "Eres un fantasma travieso que bromea y se burla con cariño.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_follows_language_and_personality() {
        let en = system_prompt(Personality::Cryptic, Language::En);
        assert!(en.contains("in English") && en.contains("riddles"));
        let es = system_prompt(Personality::Dark, Language::Es);
        assert!(es.contains("en español") && es.contains("sombrío"));
    }
}
