//! `GET /health`: the database and both LLMs, checked concurrently, each with its own deadline,
//! so the answer comes within a second even when every upstream hangs.

use futures_util::future::join3;
use serde::Serialize;

use super::config::{Config, GroqConfig, OllamaConfig};
use super::domain::{DatabaseStatus, HealthStatus, Provider, ProviderStatus};
use super::providers::{self, Failure};
use super::seam::{Count, Platform};
use super::state::{self, States};
use super::time::rfc3339;

/// Deadline of each upstream check.
pub const CHECK_TIMEOUT_MS: u32 = 800;

/// The `/health` body (shape kept from the original backend).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok`, `degraded` (an LLM down or not configured) or `critical` (database down).
    pub status: HealthStatus,
    /// When the checks ran.
    pub timestamp: String,
    /// This build's version.
    pub version: &'static str,
    /// `ENVIRONMENT`.
    pub environment: String,
    /// Each dependency.
    pub checks: Checks,
}

/// The individual checks.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checks {
    /// The fallback database.
    pub database: DatabaseCheck,
    /// Ollama (through ollama-proxy).
    pub ollama: ProviderCheck,
    /// Groq.
    pub groq: ProviderCheck,
}

/// The fallback database's check.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatabaseCheck {
    /// `ok` or `error`.
    pub status: DatabaseStatus,
    /// Canned answers available.
    #[cfg_attr(feature = "openapi", schema(required = true))] // always sent, null when absent
    pub count: Option<u64>,
    /// What went wrong.
    #[cfg_attr(feature = "openapi", schema(required = true))] // always sent, null when absent
    pub error: Option<String>,
}

/// An LLM provider's check.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderCheck {
    /// `ok`, `not_configured`, `cool_down`, `breaker_open`, `model_missing` or `down`.
    pub status: ProviderStatus,
    /// Whether an ask would call it now.
    pub available: bool,
    /// What went wrong (never a secret or a URL).
    #[cfg_attr(feature = "openapi", schema(required = true))] // always sent, null when absent
    pub error: Option<String>,
}

impl ProviderCheck {
    fn unavailable(status: ProviderStatus, error: Option<String>) -> ProviderCheck {
        ProviderCheck { status, available: false, error }
    }
}

/// Runs every check and returns the HTTP status (200, or 503 when the database is down) and body.
pub async fn health<P: Platform>(platform: &P, config: &Config) -> (http::StatusCode, Health) {
    // Read once for both providers: one in cool-down is reported without calling it.
    let provider_states = if config.groq.is_some() || config.ollama.is_some() {
        state::load(platform).await.ok()
    } else {
        None
    };
    let (database, groq, ollama) = join3(
        check_database(platform),
        check_groq(platform, config.groq.as_ref(), provider_states.as_ref()),
        check_ollama(platform, config.ollama.as_ref(), provider_states.as_ref()),
    )
    .await;
    let status = if database.status != DatabaseStatus::Ok {
        HealthStatus::Critical
    } else if groq.status == ProviderStatus::Ok && ollama.status == ProviderStatus::Ok {
        HealthStatus::Ok
    } else {
        HealthStatus::Degraded
    };
    let code = if status == HealthStatus::Critical {
        http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        http::StatusCode::OK
    };
    let health = Health {
        status,
        timestamp: rfc3339(platform.now_ms()),
        version: env!("CARGO_PKG_VERSION"),
        environment: config.environment.clone(),
        checks: Checks { database, ollama, groq },
    };
    (code, health)
}

/// How many canned answers there are, when the store answers.
async fn canned_answers<P: Platform>(platform: &P) -> Result<Option<u64>, super::seam::DbError> {
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            // The canned answers are compiled in: the store itself must answer.
            super::kv::reachable(platform).await?;
            return Ok(Some(super::kv::SEED.canned.len() as u64));
        }
    }
    let counted = platform.rows_as::<Count>("SELECT COUNT(*) AS count FROM fallback_responses", &[]).await?;
    Ok(counted.first().map(|row| row.count))
}

async fn check_database<P: Platform>(platform: &P) -> DatabaseCheck {
    match canned_answers(platform).await {
        Ok(Some(count)) if count > 0 => {
            DatabaseCheck { status: DatabaseStatus::Ok, count: Some(count), error: None }
        }
        Ok(count) => DatabaseCheck {
            status: DatabaseStatus::Error,
            count: count.or(Some(0)),
            error: Some("no canned answers: apply d1-migrations".to_owned()),
        },
        Err(_) => DatabaseCheck {
            status: DatabaseStatus::Error,
            count: None,
            error: Some("database unreachable or not migrated".to_owned()),
        },
    }
}

async fn check_groq<P: Platform>(
    platform: &P,
    config: Option<&GroqConfig>,
    states: Option<&States>,
) -> ProviderCheck {
    let Some(config) = config else {
        return ProviderCheck::unavailable(ProviderStatus::NotConfigured, None);
    };
    if let Some(held) = held_back(platform, states, Provider::Groq) {
        return held;
    }
    probe(platform, providers::groq_models_request(config), &config.model).await
}

async fn check_ollama<P: Platform>(
    platform: &P,
    config: Option<&OllamaConfig>,
    states: Option<&States>,
) -> ProviderCheck {
    let Some(config) = config else {
        return ProviderCheck::unavailable(ProviderStatus::NotConfigured, None);
    };
    if let Some(held) = held_back(platform, states, Provider::Ollama) {
        return held;
    }
    probe(platform, providers::ollama_tags_request(config), &config.model).await
}

/// A provider in cool-down or behind an open breaker is reported as such without calling it:
/// asks would skip it, and a call would not help it.
fn held_back<P: Platform>(
    platform: &P,
    states: Option<&States>,
    provider: Provider,
) -> Option<ProviderCheck> {
    let unavailable = states?.of(provider).check(platform.now_ms()).err()?;
    Some(ProviderCheck::unavailable(unavailable.status(), None))
}

/// Asks a provider for its model list and checks that `model` is on it.
async fn probe<P: Platform>(platform: &P, request: http::Request<Vec<u8>>, model: &str) -> ProviderCheck {
    let listed = match platform.fetch(request, CHECK_TIMEOUT_MS).await {
        Ok(response) => providers::lists_model(&response, model),
        Err(error) => Err(Failure::from(error)),
    };
    match listed {
        Ok(true) => ProviderCheck { status: ProviderStatus::Ok, available: true, error: None },
        Ok(false) => ProviderCheck::unavailable(
            ProviderStatus::ModelMissing,
            Some(format!("model {model} is not listed")),
        ),
        Err(failure) => ProviderCheck::unavailable(ProviderStatus::Down, Some(describe(&failure))),
    }
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Timeout => format!("no answer within {CHECK_TIMEOUT_MS} ms"),
        Failure::Http(status) => format!("HTTP {status}"),
        Failure::RateLimited { .. } => "rate limited (HTTP 429)".to_owned(),
        other => other.outcome().as_str().replace('_', " "),
    }
}
