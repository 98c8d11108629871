//! The product's vocabulary: languages, personalities, categories and answer sources.

use serde::{Deserialize, Serialize};

macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire and database spelling.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the wire spelling.
            #[must_use]
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

word_enum!(
    /// The language the spirit answers in.
    Language { Es = "es", En = "en" }
);

word_enum!(
    /// The spirit's character, which shapes the prompt and the canned answers.
    Personality {
        /// Serene counsel.
        Wise = "wise",
        /// Riddles and half-answers.
        Cryptic = "cryptic",
        /// Ominous, gothic.
        Dark = "dark",
        /// A teasing, mischievous ghost.
        Playful = "playful",
    }
);

word_enum!(
    /// What a question is about, found from its keywords.
    Category {
        Love = "love", Career = "career", Health = "health", Family = "family", Death = "death",
        Future = "future", Money = "money", Spirituality = "spirituality", General = "general",
    }
);

word_enum!(
    /// Which link of the chain produced an answer.
    Source { Groq = "groq", Ollama = "ollama", Sqlite = "sqlite" }
);

word_enum!(
    /// The two LLM providers of the chain.
    Provider { Groq = "groq", Ollama = "ollama" }
);
