//! The product's vocabulary: languages, personalities, categories, answer sources, what happened
//! with each provider, and the health statuses. Each word has one spelling, on the wire and in the
//! database, given here once.

use serde::{Deserialize, Serialize};

macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
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

word_enum!(
    /// What happened with one provider during an ask: it answered, why it was not called, or how
    /// it failed. Stored in `consultations.{groq,ollama}_outcome`.
    Outcome {
        /// It answered.
        Ok = "ok",
        /// Its URL or key is not set.
        NotConfigured = "not_configured",
        /// An earlier link answered first.
        NotReached = "not_reached",
        /// Held back by a 429's `retry-after`.
        CoolDown = "cool_down",
        /// Held back by the open breaker.
        BreakerOpen = "breaker_open",
        /// Too little of the ask's budget left, or the budget cut its deadline short.
        BudgetSpent = "budget_spent",
        /// The edge's own per-minute budget for it is used up.
        MinuteBudget = "minute_budget",
        /// It answered 429.
        RateLimited = "rate_limited",
        /// The request was too large for it (413, or a 429 saying so).
        TooLarge = "too_large",
        /// No whole answer within its deadline.
        Timeout = "timeout",
        /// Connection refused, reset and the like.
        NetworkError = "network_error",
        /// Any other non-2xx status.
        HttpError = "http_error",
        /// A 2xx that is not its JSON.
        Malformed = "malformed",
        /// An answer that is empty or unusable after cleaning.
        Junk = "junk",
        /// Not called: the spirit remembered this asker's question (`MEMORY_TTL_S`).
        Remembered = "remembered",
        /// Its stream broke (reset, an error in the stream) after the answer had begun.
        Cut = "cut",
        /// Its stream fell silent past the gap deadline after the answer had begun.
        Stalled = "stalled",
    }
);

impl From<Provider> for Source {
    fn from(provider: Provider) -> Source {
        match provider {
            Provider::Groq => Source::Groq,
            Provider::Ollama => Source::Ollama,
        }
    }
}

impl Outcome {
    /// Whether the provider was called and failed (the rest answered or were not called).
    #[must_use]
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::RateLimited
                | Outcome::TooLarge
                | Outcome::Timeout
                | Outcome::NetworkError
                | Outcome::HttpError
                | Outcome::Malformed
                | Outcome::Junk
                | Outcome::Cut
                | Outcome::Stalled
        )
    }
}

word_enum!(
    /// Overall health.
    HealthStatus {
        /// Database and both LLMs answer.
        Ok = "ok",
        /// The database answers; an LLM is down, held back or not configured.
        Degraded = "degraded",
        /// The database does not answer (HTTP 503).
        Critical = "critical",
    }
);

word_enum!(
    /// The database check's status.
    DatabaseStatus {
        /// Canned answers are readable.
        Ok = "ok",
        /// Unreachable, not migrated or not seeded.
        Error = "error",
    }
);

word_enum!(
    /// An LLM check's status.
    ProviderStatus {
        /// Answers and lists the model.
        Ok = "ok",
        /// Its URL or key is not set.
        NotConfigured = "not_configured",
        /// Held back by a 429's `retry-after`.
        CoolDown = "cool_down",
        /// Held back after failures in a row.
        BreakerOpen = "breaker_open",
        /// Answers without the configured model.
        ModelMissing = "model_missing",
        /// Does not answer in time or errs.
        Down = "down",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    fn same<T: Serialize + Copy>(all: &[T], as_str: fn(T) -> &'static str) {
        for &word in all {
            assert_eq!(serde_json::to_value(word).expect("serializes"), as_str(word));
        }
    }

    /// The database and JSON spellings are a contract (stored rows, dashboards, clients): pinned.
    #[test]
    fn every_word_keeps_its_spelling_in_json_and_the_database() {
        let outcomes: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            outcomes,
            [
                "ok",
                "not_configured",
                "not_reached",
                "cool_down",
                "breaker_open",
                "budget_spent",
                "minute_budget",
                "rate_limited",
                "too_large",
                "timeout",
                "network_error",
                "http_error",
                "malformed",
                "junk",
                "remembered",
                "cut",
                "stalled"
            ]
        );
        let failures: Vec<&str> =
            Outcome::ALL.iter().filter(|o| o.is_failure()).map(|o| o.as_str()).collect();
        assert_eq!(
            failures,
            [
                "rate_limited",
                "too_large",
                "timeout",
                "network_error",
                "http_error",
                "malformed",
                "junk",
                "cut",
                "stalled"
            ]
        );
        let statuses: Vec<&str> = ProviderStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(statuses, ["ok", "not_configured", "cool_down", "breaker_open", "model_missing", "down"]);
        let health: Vec<&str> = HealthStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(health, ["ok", "degraded", "critical"]);
        let database: Vec<&str> = DatabaseStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(database, ["ok", "error"]);
        // serde writes exactly `as_str`, for every enum of the vocabulary.
        same(Outcome::ALL, Outcome::as_str);
        same(ProviderStatus::ALL, ProviderStatus::as_str);
        same(HealthStatus::ALL, HealthStatus::as_str);
        same(DatabaseStatus::ALL, DatabaseStatus::as_str);
        same(Language::ALL, Language::as_str);
        same(Personality::ALL, Personality::as_str);
        same(Category::ALL, Category::as_str);
        same(Source::ALL, Source::as_str);
        same(Provider::ALL, Provider::as_str);
    }
}
