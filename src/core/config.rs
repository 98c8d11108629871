//! Configuration, parsed once per request from the platform's variables into a typed struct.
//! Every problem is reported together, by variable name only: values may be secrets.

use std::fmt;

/// Groq's OpenAI-compatible endpoint, used when `GROQ_BASE_URL` is unset.
pub const DEFAULT_GROQ_BASE_URL: &str = "https://api.groq.com/openai/v1";
/// The Groq model, used when `GROQ_MODEL` is unset.
pub const DEFAULT_GROQ_MODEL: &str = "llama-3.1-8b-instant";
/// The Ollama model, used when `OLLAMA_MODEL` is unset.
pub const DEFAULT_OLLAMA_MODEL: &str = "qwen2.5:0.5b";

/// How Groq is reached; present only when `GROQ_API_KEY` is set.
#[derive(Clone, PartialEq, Eq)]
pub struct GroqConfig {
    /// Bearer key (secret).
    pub api_key: String,
    /// Base URL without a trailing slash, e.g. `https://api.groq.com/openai/v1`.
    pub base_url: String,
    /// Chat model name.
    pub model: String,
    /// Deadline of one call.
    pub timeout_ms: u32,
    /// Requests per minute this edge allows itself (Groq's free tier: 30).
    pub requests_per_minute: u32,
}

/// How Ollama (usually behind ollama-proxy) is reached; present only when `OLLAMA_URL` is set.
#[derive(Clone, PartialEq, Eq)]
pub struct OllamaConfig {
    /// Base URL without a trailing slash.
    pub url: String,
    /// Model name.
    pub model: String,
    /// Bearer token for ollama-proxy (secret), if any.
    pub token: Option<String>,
    /// Deadline of one call.
    pub timeout_ms: u32,
}

/// Which browser origins may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin.
    Any,
    /// Exactly these origins.
    List(Vec<String>),
}

impl CorsOrigins {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    #[must_use]
    pub fn allow(&self, origin: Option<&str>) -> Option<String> {
        match (self, origin) {
            (CorsOrigins::Any, _) => Some("*".to_owned()),
            (CorsOrigins::List(list), Some(origin)) if list.iter().any(|o| o == origin) => {
                Some(origin.to_owned())
            }
            (CorsOrigins::List(_), _) => None,
        }
    }
}

/// The edge module's whole configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Groq, when configured.
    pub groq: Option<GroqConfig>,
    /// Ollama, when configured.
    pub ollama: Option<OllamaConfig>,
    /// Time budget of one ask; past it the chain goes straight to the canned answers.
    pub ask_budget_ms: u32,
    /// Deployment name shown by `/health`.
    pub environment: String,
    /// Allowed CORS origins.
    pub cors_origins: CorsOrigins,
    /// Per-asker limits on asks (`ASK_LIMITS`); empty when `off`.
    pub ask_limits: Vec<AskLimit>,
    /// How long the spirit remembers an asker's question (`MEMORY_TTL_S`); 0 forgets at once.
    pub memory_ttl_s: u32,
    /// The secret keying the asker hash (`ASKER_KEY`); unset → a random key kept in the database.
    pub asker_key: Option<String>,
    /// A streamed answer's longest wait for a provider's first token (`STREAM_FIRST_TOKEN_MS`).
    pub stream_first_token_ms: u32,
    /// A streamed answer's longest silence between two pieces once it has begun (`STREAM_GAP_MS`).
    pub stream_gap_ms: u32,
}

/// One per-asker limit: at most `asks` in any `period_ms` (counted from the first ask of a window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AskLimit {
    /// Asks allowed in one window.
    pub asks: u32,
    /// The window's length.
    pub period_ms: u64,
}

/// The original backend's throttle: 3 a second, 20 per 10 seconds, 100 a minute.
pub const DEFAULT_ASK_LIMITS: &str = "3/1s,20/10s,100/60s";
/// At most this many limits: the database keeps one window per limit in the asker's row.
pub const MAX_ASK_LIMITS: usize = 3;

// Secrets must never reach logs: Debug prints which secrets are set, not their values.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("groq", &self.groq.as_ref().map(|g| (&g.base_url, &g.model)))
            .field("ollama", &self.ollama.as_ref().map(|o| (&o.url, &o.model)))
            .field("ask_budget_ms", &self.ask_budget_ms)
            .field("environment", &self.environment)
            .field("cors_origins", &self.cors_origins)
            .field("ask_limits", &self.ask_limits)
            .field("memory_ttl_s", &self.memory_ttl_s)
            .field("asker_key", &self.asker_key.as_ref().map(|_| "set"))
            .field("stream_first_token_ms", &self.stream_first_token_ms)
            .field("stream_gap_ms", &self.stream_gap_ms)
            .finish()
    }
}

/// Every variable [`Config::from_lookup`] reads: adapters that must fetch variables up front
/// (Spin) and the tests (which set all of them) use this list.
pub const VARIABLES: &[&str] = &[
    "GROQ_API_KEY",
    "GROQ_MODEL",
    "GROQ_BASE_URL",
    "GROQ_TIMEOUT_MS",
    "GROQ_RPM",
    "OLLAMA_URL",
    "OLLAMA_MODEL",
    "OLLAMA_PROXY_TOKEN",
    "OLLAMA_TIMEOUT_MS",
    "ASK_BUDGET_MS",
    "ENVIRONMENT",
    "CORS_ORIGINS",
    "ASK_LIMITS",
    "MEMORY_TTL_S",
    "ASKER_KEY",
    "STREAM_FIRST_TOKEN_MS",
    "STREAM_GAP_MS",
];

/// Everything wrong with the configuration, by variable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Whether `provider` is configured here (its key or URL is set).
    #[must_use]
    pub fn configured(&self, provider: super::domain::Provider) -> bool {
        match provider {
            super::domain::Provider::Groq => self.groq.is_some(),
            super::domain::Provider::Ollama => self.ollama.is_some(),
        }
    }

    /// Parses the configuration from `lookup` (variable name → value); empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();

        let groq_timeout = number(&get, "GROQ_TIMEOUT_MS", 3_000, 50..=60_000, &mut problems);
        let groq_rpm = number(&get, "GROQ_RPM", 30, 0..=100_000, &mut problems);
        let groq_base =
            url(&get, "GROQ_BASE_URL", &mut problems).unwrap_or_else(|| DEFAULT_GROQ_BASE_URL.to_owned());
        // GROQ_RPM=0 switches Groq off entirely: no calls, no per-minute bookkeeping, and /health
        // says "not_configured" rather than "ok".
        let groq_key = secret(&get, "GROQ_API_KEY", &mut problems).filter(|_| groq_rpm > 0);
        let groq = groq_key.map(|api_key| GroqConfig {
            api_key,
            base_url: groq_base,
            model: get("GROQ_MODEL").unwrap_or_else(|| DEFAULT_GROQ_MODEL.to_owned()),
            timeout_ms: groq_timeout,
            requests_per_minute: groq_rpm,
        });

        let ollama_timeout = number(&get, "OLLAMA_TIMEOUT_MS", 4_000, 50..=60_000, &mut problems);
        let ollama = url(&get, "OLLAMA_URL", &mut problems).map(|url| OllamaConfig {
            url,
            model: get("OLLAMA_MODEL").unwrap_or_else(|| DEFAULT_OLLAMA_MODEL.to_owned()),
            token: secret(&get, "OLLAMA_PROXY_TOKEN", &mut problems),
            timeout_ms: ollama_timeout,
        });

        let ask_budget_ms = number(&get, "ASK_BUDGET_MS", 7_000, 100..=30_000, &mut problems);
        let environment = get("ENVIRONMENT").unwrap_or_else(|| "development".to_owned());
        let cors_origins = match get("CORS_ORIGINS") {
            None => CorsOrigins::Any,
            Some(list) if list.split(',').any(|o| o.trim() == "*") => CorsOrigins::Any,
            Some(list) => CorsOrigins::List(
                list.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect(),
            ),
        };

        let ask_limits = ask_limits(get("ASK_LIMITS").as_deref(), &mut problems);
        let memory_ttl_s = number(&get, "MEMORY_TTL_S", 3_600, 0..=604_800, &mut problems);
        let stream_first_token_ms = number(&get, "STREAM_FIRST_TOKEN_MS", 3_000, 100..=30_000, &mut problems);
        let stream_gap_ms = number(&get, "STREAM_GAP_MS", 2_000, 100..=30_000, &mut problems);
        let asker_key = get("ASKER_KEY");
        if asker_key.as_ref().is_some_and(|key| key.chars().count() < 16) {
            problems.push("ASKER_KEY must be at least 16 characters".to_owned());
        }

        if problems.is_empty() {
            Ok(Config {
                groq,
                ollama,
                ask_budget_ms,
                environment,
                cors_origins,
                ask_limits,
                memory_ttl_s,
                asker_key,
                stream_first_token_ms,
                stream_gap_ms,
            })
        } else {
            Err(ConfigError(problems))
        }
    }
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    problems: &mut Vec<String>,
) -> u32 {
    let Some(raw) = get(name) else { return default };
    match raw.parse::<u32>() {
        Ok(n) if range.contains(&n) => n,
        _ => {
            problems.push(format!("{name} must be a whole number from {} to {}", range.start(), range.end()));
            default
        }
    }
}

/// `off`, or up to [`MAX_ASK_LIMITS`] comma-separated `asks/period` with the period in seconds
/// (`10s`) or minutes (`1m`); a bare unit means one (`3/s`, `100/m`).
fn ask_limits(raw: Option<&str>, problems: &mut Vec<String>) -> Vec<AskLimit> {
    let raw = raw.unwrap_or(DEFAULT_ASK_LIMITS);
    if raw.eq_ignore_ascii_case("off") {
        return Vec::new();
    }
    let parsed: Option<Vec<AskLimit>> = raw.split(',').map(|limit| parse_ask_limit(limit.trim())).collect();
    match parsed {
        Some(limits) if !limits.is_empty() && limits.len() <= MAX_ASK_LIMITS => limits,
        _ => {
            problems.push(format!(
                "ASK_LIMITS must be off or up to {MAX_ASK_LIMITS} limits like {DEFAULT_ASK_LIMITS}"
            ));
            parse_ask_limits_default()
        }
    }
}

fn parse_ask_limits_default() -> Vec<AskLimit> {
    DEFAULT_ASK_LIMITS.split(',').filter_map(parse_ask_limit).collect()
}

fn parse_ask_limit(limit: &str) -> Option<AskLimit> {
    let (asks, period) = limit.split_once('/')?;
    let asks: u32 = asks.trim().parse().ok().filter(|n| (1..=100_000).contains(n))?;
    let period = period.trim();
    let (count, unit_ms) = if let Some(n) = period.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = period.strip_suffix('m') {
        (n, 60_000)
    } else {
        return None;
    };
    let count: u64 = if count.is_empty() { 1 } else { count.parse().ok()? };
    let period_ms = count.checked_mul(unit_ms)?;
    (1_000..=86_400_000).contains(&period_ms).then_some(AskLimit { asks, period_ms })
}

fn url(get: &impl Fn(&str) -> Option<String>, name: &str, problems: &mut Vec<String>) -> Option<String> {
    let raw = get(name)?;
    let base = raw.trim_end_matches('/');
    // Parsed as a URI here so request builders can append fixed paths without failing later.
    let valid = base.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some()
            && uri.query().is_none()
    });
    if valid {
        Some(base.to_owned())
    } else {
        problems.push(format!("{name} must be an http:// or https:// URL"));
        None
    }
}

/// A secret sent in an `Authorization` header: it must be a valid header value.
fn secret(get: &impl Fn(&str) -> Option<String>, name: &str, problems: &mut Vec<String>) -> Option<String> {
    let value = get(name)?;
    if value.bytes().all(|b| b.is_ascii_graphic()) {
        Some(value)
    } else {
        problems.push(format!("{name} must be printable ASCII without spaces"));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn variables_lists_exactly_the_names_parsing_reads() {
        let read = std::cell::RefCell::new(Vec::new());
        let _ = Config::from_lookup(|name| {
            read.borrow_mut().push(name.to_owned());
            // A set key and URLs, so every optional branch looks its variables up.
            match name {
                "GROQ_API_KEY" | "OLLAMA_PROXY_TOKEN" => Some("k".to_owned()),
                "OLLAMA_URL" => Some("http://o".to_owned()),
                "ASKER_KEY" => Some("a-long-enough-asker-key".to_owned()),
                _ => None,
            }
        });
        let mut read = read.into_inner();
        read.sort();
        read.dedup();
        let mut listed: Vec<String> = VARIABLES.iter().map(|v| (*v).to_owned()).collect();
        listed.sort();
        assert_eq!(read, listed);
    }

    /// Operators find every variable where they configure the edge.
    #[test]
    fn every_variable_is_in_each_configuration_file_and_the_readme() {
        let files = [
            ("wrangler.toml", include_str!("../../wrangler.toml")),
            ("spin.toml", include_str!("../../spin.toml")),
            ("spin-kv.toml", include_str!("../../spin-kv.toml")),
            (".dev.vars.example", include_str!("../../.dev.vars.example")),
            ("README.md", include_str!("../../README.md")),
        ];
        for name in VARIABLES {
            for (file, text) in files {
                let spelled =
                    if file.starts_with("spin") { name.to_ascii_lowercase() } else { (*name).to_owned() };
                assert!(text.contains(&spelled), "{name} is missing from {file}");
            }
        }
    }

    #[test]
    fn no_variables_means_no_providers_and_defaults() {
        let config = parse(&[]).expect("defaults are valid");
        assert!(config.groq.is_none() && config.ollama.is_none());
        assert_eq!(config.ask_budget_ms, 7_000);
        assert_eq!(config.cors_origins, CorsOrigins::Any);
        assert_eq!(config.environment, "development");
    }

    #[test]
    fn groq_key_enables_groq_with_default_model_and_budget() {
        let config =
            parse(&[("GROQ_API_KEY", "gsk_x"), ("GROQ_BASE_URL", "http://127.0.0.1:9/v1/")]).expect("valid");
        let groq = config.groq.expect("groq configured");
        assert_eq!(groq.model, DEFAULT_GROQ_MODEL);
        assert_eq!(groq.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(groq.requests_per_minute, 30);
    }

    #[test]
    fn every_problem_is_listed_together_without_values() {
        let err = parse(&[
            ("GROQ_RPM", "lots"),
            ("OLLAMA_URL", "ftp://secret-host"),
            ("ASK_BUDGET_MS", "99999999"),
            ("GROQ_API_KEY", "gsk bad\nkey"),
            ("GROQ_BASE_URL", "http://bad host"),
        ])
        .expect_err("five problems");
        assert_eq!(err.0.len(), 5, "{err}");
        assert!(!err.to_string().contains("secret-host"));
    }

    #[test]
    fn ask_limits_default_to_the_original_backends_and_may_be_off() {
        let limit = |asks, period_ms| AskLimit { asks, period_ms };
        let config = parse(&[]).expect("defaults are valid");
        assert_eq!(config.ask_limits, [limit(3, 1_000), limit(20, 10_000), limit(100, 60_000)]);
        assert_eq!(config.memory_ttl_s, 3_600);
        assert!(parse(&[("ASK_LIMITS", "off")]).expect("valid").ask_limits.is_empty());
        let config = parse(&[("ASK_LIMITS", "5/s, 50/m")]).expect("valid");
        assert_eq!(config.ask_limits, [limit(5, 1_000), limit(50, 60_000)]);
        // 307445734561826 minutes overflow u64 milliseconds: refused, not wrapped into ~8 s.
        for bad in ["3", "3/1h", "0/1s", "1/1s,1/2s,1/3s,1/4s", "x/1s", "3/307445734561826m", ""] {
            let err = parse(&[("ASK_LIMITS", bad)]);
            // An empty value is unset, so the defaults apply.
            assert_eq!(err.is_err(), !bad.is_empty(), "{bad:?}");
        }
        let err = parse(&[("ASKER_KEY", "short")]).expect_err("too short");
        assert!(err.to_string().contains("ASKER_KEY"), "{err}");
    }

    #[test]
    fn groq_rpm_zero_turns_groq_off() {
        let config = parse(&[("GROQ_API_KEY", "gsk_x"), ("GROQ_RPM", "0")]).expect("valid");
        assert!(config.groq.is_none());
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = parse(&[("GROQ_API_KEY", ""), ("OLLAMA_URL", " ")]).expect("valid");
        assert!(config.groq.is_none() && config.ollama.is_none());
    }

    #[test]
    fn cors_list_allows_only_listed_origins() {
        let config = parse(&[("CORS_ORIGINS", "https://a.example, https://b.example/")]).expect("ok");
        assert_eq!(
            config.cors_origins.allow(Some("https://b.example")).as_deref(),
            Some("https://b.example")
        );
        assert_eq!(config.cors_origins.allow(Some("https://evil.example")), None);
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let config = parse(&[
            ("GROQ_API_KEY", "gsk_topsecret"),
            ("OLLAMA_URL", "http://o"),
            ("OLLAMA_PROXY_TOKEN", "tok_secret"),
            ("ASKER_KEY", "asker_secret_0123456789"),
        ])
        .expect("valid");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("tok_secret") && !shown.contains("asker_secret"),
            "{shown}"
        );
    }
}
