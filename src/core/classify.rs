//! Reading a question: folding case and accents, guessing its language, finding its category.

use super::domain::{Category, Language};

/// Lower-cases and folds Spanish accents (á→a, ñ→n, ü→u, …) so keywords match however typed.
///
/// A handful of Latin-1 letters cover Spanish and English; a Unicode normalisation table would cost
/// far more wasm bytes than it buys here.
#[must_use]
pub fn fold(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'á' | 'à' | 'ä' | 'â' => 'a',
            'é' | 'è' | 'ë' | 'ê' => 'e',
            'í' | 'ì' | 'ï' | 'î' => 'i',
            'ó' | 'ò' | 'ö' | 'ô' => 'o',
            'ú' | 'ù' | 'ü' | 'û' => 'u',
            'ñ' => 'n',
            'ç' => 'c',
            other => other,
        })
        .collect()
}

/// The folded words of `text` (letters and digits only).
#[must_use]
pub fn words(text: &str) -> Vec<String> {
    fold(text).split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// Common Spanish words, folded (they are compared with folded question words).
const SPANISH_WORDS: &[&str] = &[
    "que",
    "el",
    "la",
    "los",
    "las",
    "mi",
    "mis",
    "es",
    "por",
    "cuando",
    "donde",
    "como",
    "voy",
    "tengo",
    "sera",
    "seria",
    "debo",
    "puedo",
    "un",
    "una",
    "con",
    "para",
    "pero",
    "si",
    "yo",
    "tu",
    "me",
    "se",
    "va",
    "hay",
    "del",
    "al",
    "mucho",
    "alguien",
    "encontrare",
    "quien",
    "manana",
];

/// Common English words.
const ENGLISH_WORDS: &[&str] = &[
    "the", "will", "my", "is", "do", "does", "what", "when", "where", "how", "i", "you", "am", "are",
    "should", "can", "a", "an", "with", "for", "but", "if", "me", "be", "who", "find", "ever", "get", "have",
    "of", "to", "it", "this", "that", "would",
];

/// Guesses the question's language; Spanish when unsure (the original audience).
#[must_use]
pub fn guess_language(question: &str) -> Language {
    if question.contains(['¿', '¡', 'ñ', 'Ñ', 'á', 'é', 'í', 'ó', 'ú']) {
        return Language::Es;
    }
    let words = words(question);
    let score = |list: &[&str]| words.iter().filter(|w| list.contains(&w.as_str())).count();
    if score(ENGLISH_WORDS) > score(SPANISH_WORDS) { Language::En } else { Language::Es }
}

/// Keyword stems per category, Spanish and English, folded. A question word matches a stem when it
/// starts with it ("amor" matches "amores", "marr" matches "married").
const CATEGORY_STEMS: &[(Category, &[&str])] = &[
    (
        Category::Love,
        &[
            "amor",
            "amo",
            "novi",
            "pareja",
            "casar",
            "boda",
            "enamor",
            "corazon",
            "beso",
            "ex",
            "love",
            "lover",
            "boyfriend",
            "girlfriend",
            "partner",
            "marr",
            "wedding",
            "crush",
            "heart",
            "kiss",
            "date",
            "dating",
            "soulmate",
            "romance",
            "cita",
            "querer",
            "quiere",
        ],
    ),
    (
        Category::Career,
        &[
            "trabaj",
            "empleo",
            "jefe",
            "carrera",
            "ascenso",
            "negocio",
            "empresa",
            "estudi",
            "examen",
            "universidad",
            "job",
            "work",
            "career",
            "boss",
            "promot",
            "business",
            "interview",
            "exam",
            "study",
            "school",
            "college",
            "hired",
            "fired",
            "despid",
            "entrevista",
            "proyecto",
            "project",
        ],
    ),
    (
        Category::Health,
        &[
            "salud",
            "enferm",
            "medic",
            "hospital",
            "curar",
            "cura",
            "dolor",
            "sanar",
            "embaraz",
            "health",
            "sick",
            "ill",
            "doctor",
            "heal",
            "cure",
            "pain",
            "disease",
            "surgery",
            "pregnan",
            "cancer",
            "operacion",
            "recover",
            "recuper",
            "dieta",
            "diet",
        ],
    ),
    (
        Category::Family,
        &[
            "familia", "madre", "padre", "mama", "papa", "herman", "hij", "abuel", "prim", "tio", "tia",
            "family", "mother", "father", "mom", "dad", "brother", "sister", "son", "daughter", "child",
            "kids", "grandm", "grandf", "parent", "cousin", "uncle", "aunt", "bebe", "baby",
        ],
    ),
    (
        Category::Death,
        &[
            "muert",
            "morir",
            "muero",
            "mori",
            "fallec",
            "difunt",
            "tumba",
            "entierro",
            "death",
            "die",
            "dying",
            "dead",
            "grave",
            "funeral",
            "afterlife",
            "cementerio",
            "cemetery",
            "ghost",
            "fantasma",
        ],
    ),
    (
        Category::Future,
        &[
            "futuro", "destino", "sera", "pasara", "manana", "ano", "viaj", "suerte", "future", "destiny",
            "fate", "tomorrow", "next", "year", "travel", "trip", "luck", "someday", "soon", "pronto",
            "cambio", "change",
        ],
    ),
    (
        Category::Money,
        &[
            "dinero",
            "plata",
            "rico",
            "riqueza",
            "loteria",
            "loteria",
            "deuda",
            "pagar",
            "sueldo",
            "salario",
            "herencia",
            "money",
            "rich",
            "wealth",
            "lottery",
            "debt",
            "pay",
            "salary",
            "cash",
            "invest",
            "inheritance",
            "fortune",
            "fortuna",
            "casino",
            "bet",
            "apuesta",
        ],
    ),
    (
        Category::Spirituality,
        &[
            "dios", "alma", "espiritu", "ouija", "cielo", "infierno", "angel", "demonio", "karma", "rezar",
            "fe", "god", "soul", "spirit", "heaven", "hell", "demon", "pray", "faith", "universe",
            "universo", "reincarn", "reencarn", "medium", "energia", "energy", "magic", "magia",
        ],
    ),
];

/// The category whose keywords the question hits most; `General` when none.
#[must_use]
pub fn classify(question: &str) -> Category {
    let words = words(question);
    let mut best = (Category::General, 0usize);
    for (category, stems) in CATEGORY_STEMS {
        let hits = words.iter().filter(|w| stems.iter().any(|s| stem_matches(w, s))).count();
        if hits > best.1 {
            best = (*category, hits);
        }
    }
    best.0
}

/// Short stems (≤ 3 letters) must match a whole word, so "ex" does not match "examen".
fn stem_matches(word: &str, stem: &str) -> bool {
    if stem.chars().count() <= 3 { word == stem } else { word.starts_with(stem) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_marker_word_and_stem_is_stored_folded() {
        let stems = CATEGORY_STEMS.iter().flat_map(|(_, stems)| stems.iter());
        for word in SPANISH_WORDS.iter().chain(ENGLISH_WORDS).chain(stems) {
            assert_eq!(fold(word), *word, "{word} is compared with folded words: store it folded");
        }
    }

    #[test]
    fn the_spanish_marker_manana_counts_however_it_is_typed() {
        // One Spanish and one English marker: a tie, and ties are Spanish.
        assert_eq!(guess_language("manana is"), Language::Es);
        assert_eq!(classify("que pasara manana"), Category::Future);
    }

    #[test]
    fn fold_removes_accents_and_case() {
        assert_eq!(fold("¿Mañana SERÁ Pingüino?"), "¿manana sera pinguino?");
    }

    #[test]
    fn language_is_guessed_from_marks_and_common_words() {
        assert_eq!(guess_language("¿Me ama?"), Language::Es);
        assert_eq!(guess_language("Will I find love this year?"), Language::En);
        assert_eq!(guess_language("voy a ser rico"), Language::Es);
        assert_eq!(guess_language("xyzzy"), Language::Es);
    }

    #[test]
    fn questions_fall_into_their_categories_in_both_languages() {
        let cases = [
            ("¿Encontraré el amor verdadero?", Category::Love),
            ("Will I marry my girlfriend?", Category::Love),
            ("¿Me darán el ascenso en el trabajo?", Category::Career),
            ("Will my mother recover from surgery?", Category::Health),
            ("¿Mi hermano volverá a casa?", Category::Family),
            ("When will I die?", Category::Death),
            ("¿Qué me depara el futuro?", Category::Future),
            ("Will I win the lottery?", Category::Money),
            ("¿Existe Dios?", Category::Spirituality),
            ("Is the sky blue?", Category::General),
        ];
        for (question, expected) in cases {
            assert_eq!(classify(question), expected, "{question}");
        }
    }

    #[test]
    fn short_stems_match_whole_words_only() {
        assert_eq!(classify("¿Aprobaré el examen?"), Category::Career);
    }
}
