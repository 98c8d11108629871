//! Configuration: read from the environment (or flags) once, validated as a whole.
//!
//! Every value is read as text and checked by [`Settings::validate`], which reports every problem
//! in one message instead of stopping at the first, and never echoes a secret back.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use http::Uri;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::auth::ApiKeys;

/// Shortest API key accepted: shorter keys are guessable.
pub const MIN_KEY_LEN: usize = 16;

/// The command line: serve (default) or probe a running proxy.
#[derive(Debug, Parser)]
#[command(name = "ollama-proxy", version, about = "Guarded, streaming reverse proxy in front of Ollama")]
pub struct Cli {
    /// What to do; without a subcommand the proxy serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for serving.
    #[command(flatten)]
    pub settings: RawSettings,
}

/// Subcommands of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe a URL (default: this proxy's /health on 127.0.0.1:$PORT); exit 0 on 2xx, 1 otherwise.
    Healthcheck {
        /// The URL to probe (plain http).
        #[arg(long)]
        url: Option<String>,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

/// The settings as text, exactly as given; see `.env.example` for each one.
#[derive(Args)]
#[allow(clippy::struct_field_names)]
pub struct RawSettings {
    /// Base URL of Ollama (http or https): a pool of one, used when `OLLAMA_UPSTREAMS` is empty.
    #[arg(long, env = "OLLAMA_UPSTREAM", default_value = "http://127.0.0.1:11434")]
    pub ollama_upstream: String,
    /// A pool of Ollama boxes: comma-separated `URL[;weight=N][;host=NAME][;token_env=VAR|token=T]`.
    #[arg(long, env = "OLLAMA_UPSTREAMS", hide_env_values = true, default_value = "")]
    pub ollama_upstreams: String,
    /// Time between two active probes of an upstream that is up, in ms.
    #[arg(long, env = "HEALTH_INTERVAL_MS", default_value = "2000")]
    pub health_interval_ms: String,
    /// First back-off of an ejected upstream, in ms (doubles on each failed probe).
    #[arg(long, env = "UPSTREAM_EJECT_MS", default_value = "1000")]
    pub upstream_eject_ms: String,
    /// Longest back-off of an ejected upstream, in ms.
    #[arg(long, env = "UPSTREAM_EJECT_MAX_MS", default_value = "30000")]
    pub upstream_eject_max_ms: String,
    /// Most upstreams one request is sent to (the first try included).
    #[arg(long, env = "MAX_TRIES", default_value = "2")]
    pub max_tries: String,
    /// Retries allowed, as a percentage of the requests of the last 10 s, pool-wide.
    #[arg(long, env = "RETRY_BUDGET_PERCENT", default_value = "20")]
    pub retry_budget_percent: String,
    /// The model /health and /readyz expect Ollama to have.
    #[arg(long, env = "OLLAMA_MODEL", default_value = "qwen2.5:0.5b")]
    pub ollama_model: String,
    /// Comma-separated bearer keys clients must present (secret).
    #[arg(long, env = "PROXY_API_KEYS", hide_env_values = true, default_value = "")]
    pub proxy_api_keys: String,
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value = "8000")]
    pub port: String,
    /// Address to listen on.
    #[arg(long, env = "PROXY_BIND", default_value = "0.0.0.0")]
    pub proxy_bind: String,
    /// Forward model-management routes (pull, push, create, delete, copy, blobs).
    #[arg(long, env = "PROXY_ALLOW_ADMIN", default_value = "false")]
    pub proxy_allow_admin: String,
    /// Comma-separated URLs whose health /health aggregates.
    #[arg(long, env = "HEALTH_TARGETS", default_value = "")]
    pub health_targets: String,
    /// Deadline of each /health and /readyz check, in ms.
    #[arg(long, env = "HEALTH_TIMEOUT_MS", default_value = "800")]
    pub health_timeout_ms: String,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "PROXY_MAX_BODY_BYTES", default_value = "10485760")]
    pub proxy_max_body_bytes: String,
    /// Most requests in flight to Ollama at once.
    #[arg(long, env = "PROXY_MAX_IN_FLIGHT", default_value = "32")]
    pub proxy_max_in_flight: String,
    /// Seconds to put in `Retry-After` when full.
    #[arg(long, env = "PROXY_RETRY_AFTER_SECS", default_value = "2")]
    pub proxy_retry_after_secs: String,
    /// Time a client has to send its request headers, in ms.
    #[arg(long, env = "PROXY_HEADER_TIMEOUT_MS", default_value = "10000")]
    pub proxy_header_timeout_ms: String,
    /// Longest pause allowed while reading a request body, in ms.
    #[arg(long, env = "PROXY_BODY_TIMEOUT_MS", default_value = "15000")]
    pub proxy_body_timeout_ms: String,
    /// PEM file of extra CA certificates to trust for an https upstream (a private CA at home).
    #[arg(long, env = "UPSTREAM_CA_FILE", default_value = "")]
    pub upstream_ca_file: String,
    /// Time to connect to Ollama, in ms.
    #[arg(long, env = "UPSTREAM_CONNECT_TIMEOUT_MS", default_value = "3000")]
    pub upstream_connect_timeout_ms: String,
    /// Time for Ollama to send response headers, in ms (a non-streamed generation counts whole).
    #[arg(long, env = "UPSTREAM_TIMEOUT_MS", default_value = "300000")]
    pub upstream_timeout_ms: String,
    /// Longest pause allowed between two chunks of Ollama's response body, in ms.
    #[arg(long, env = "UPSTREAM_IDLE_TIMEOUT_MS", default_value = "120000")]
    pub upstream_idle_timeout_ms: String,
    /// How long in-flight requests may run after SIGTERM, in ms.
    #[arg(long, env = "PROXY_SHUTDOWN_TIMEOUT_MS", default_value = "25000")]
    pub proxy_shutdown_timeout_ms: String,
    /// Worker threads, each with its own event loop; 0 means one per CPU.
    #[arg(long, env = "PROXY_WORKERS", default_value = "0")]
    pub proxy_workers: String,
    /// Most client connections open at once; more are answered 503 and closed.
    #[arg(long, env = "PROXY_MAX_CONNECTIONS", default_value = "512")]
    pub proxy_max_connections: String,
    /// Largest request header block (request line and headers), in bytes (431 beyond it).
    #[arg(long, env = "PROXY_MAX_HEADER_BYTES", default_value = "16384")]
    pub proxy_max_header_bytes: String,
    /// Most request header lines (431 beyond it).
    #[arg(long, env = "PROXY_MAX_HEADERS", default_value = "100")]
    pub proxy_max_headers: String,
    /// Time a client has to send its whole request body, in ms (408 beyond it).
    #[arg(long, env = "PROXY_BODY_DEADLINE_MS", default_value = "60000")]
    pub proxy_body_deadline_ms: String,
    /// Request bodies held in memory at once, all requests together, in bytes (503 beyond it).
    #[arg(long, env = "PROXY_BODY_BUFFER_BYTES", default_value = "33554432")]
    pub proxy_body_buffer_bytes: String,
    /// Longest time a write to a client may wait for it to read, in ms (connection closed).
    #[arg(long, env = "PROXY_WRITE_TIMEOUT_MS", default_value = "30000")]
    pub proxy_write_timeout_ms: String,
    /// How long a /health (and /readyz) check result is reused, in ms.
    #[arg(long, env = "HEALTH_CACHE_MS", default_value = "1000")]
    pub health_cache_ms: String,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Ollama boxes (one for `OLLAMA_UPSTREAM`), in the order given.
    pub upstreams: Vec<UpstreamSpec>,
    /// Time between probes of an upstream that is up.
    pub health_interval: Duration,
    /// First back-off of an ejected upstream.
    pub eject_base: Duration,
    /// Longest back-off of an ejected upstream.
    pub eject_max: Duration,
    /// Most upstreams one request is sent to.
    pub max_tries: usize,
    /// Retries allowed per 100 requests over the last 10 s.
    pub retry_budget_percent: u64,
    /// Model expected by /health and /readyz.
    pub model: String,
    /// Accepted bearer keys.
    pub api_keys: ApiKeys,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Whether model-management routes are forwarded.
    pub allow_admin: bool,
    /// Other services /health aggregates.
    pub health_targets: Vec<Uri>,
    /// Per-check deadline for /health and /readyz.
    pub health_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Cap on requests in flight to Ollama.
    pub max_in_flight: usize,
    /// `Retry-After` seconds when full.
    pub retry_after_secs: u64,
    /// Time allowed for request headers.
    pub header_timeout: Duration,
    /// Longest pause inside a request body.
    pub body_timeout: Duration,
    /// Extra trust anchors for an https upstream, besides the public web roots.
    pub upstream_ca: Vec<CertificateDer<'static>>,
    /// Time to connect upstream.
    pub upstream_connect_timeout: Duration,
    /// Time for upstream response headers.
    pub upstream_timeout: Duration,
    /// Longest pause inside an upstream response body.
    pub upstream_idle_timeout: Duration,
    /// Drain time after SIGTERM.
    pub shutdown_timeout: Duration,
    /// Worker threads (each a single-threaded event loop), at least 1.
    pub workers: usize,
    /// Cap on open client connections.
    pub max_connections: usize,
    /// Largest request header block, in bytes.
    pub max_header_bytes: usize,
    /// Most request header lines.
    pub max_headers: usize,
    /// Time allowed for a whole request body.
    pub body_deadline: Duration,
    /// Bytes of request bodies held at once, all requests together.
    pub body_buffer_bytes: u64,
    /// Longest wait for a client to take what is written to it.
    pub write_timeout: Duration,
    /// How long a health check result is reused.
    pub health_cache: Duration,
}

/// One Ollama box of the pool, as configured.
#[derive(Clone)]
pub struct UpstreamSpec {
    /// Its base URL (may carry a path prefix).
    pub url: Uri,
    /// Its share of the load relative to the others (least in flight is weighed by it).
    pub weight: u32,
    /// The `Host` sent to it (a tunnel's name); its URL's authority when absent.
    pub host: Option<http::HeaderValue>,
    /// The bearer token sent to it (secret; never logged or shown).
    pub token: Option<http::HeaderValue>,
}

// By hand: the token must never be printed.
impl std::fmt::Debug for UpstreamSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSpec")
            .field("url", &self.url)
            .field("weight", &self.weight)
            .field("host", &self.host)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Most upstreams in a pool (a request remembers the ones it tried in a 64-bit set).
pub const MAX_UPSTREAMS: usize = 64;

/// Largest `weight=`.
pub const MAX_WEIGHT: u32 = 1000;

/// Smallest header limit: hyper's read buffer cannot be smaller.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Most worker threads accepted: more than this is a typo, not a machine.
pub const MAX_WORKERS: usize = 256;

// Written by hand so that no `{:?}` of the settings (or of `Cli`) can ever print the keys.
impl std::fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSettings")
            .field("ollama_upstream", &self.ollama_upstream)
            .field("ollama_upstreams", &"<may hold tokens>")
            .field("ollama_model", &self.ollama_model)
            .field("proxy_api_keys", &"<redacted>")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl RawSettings {
    /// Checks every setting and returns all problems at once, one per line.
    // One statement per setting: splitting it would only scatter the list.
    #[allow(clippy::too_many_lines)]
    pub fn validate(&self) -> Result<Settings, Vec<String>> {
        let mut problems = Vec::new();
        let mut p = Problems(&mut problems);
        let upstreams = if self.ollama_upstreams.trim().is_empty() {
            let url = p.url("OLLAMA_UPSTREAM", &self.ollama_upstream);
            url.map(|url| UpstreamSpec { url, weight: 1, host: None, token: None }).into_iter().collect()
        } else {
            p.upstreams(&self.ollama_upstreams, |name| std::env::var(name).ok())
        };
        let max_tries = p.number::<usize>("MAX_TRIES", &self.max_tries, 1);
        if max_tries.is_some_and(|n| n > MAX_UPSTREAMS) {
            p.push(&format!("MAX_TRIES: must be at most {MAX_UPSTREAMS}"));
        }
        let retry_budget_percent = p.number::<u64>("RETRY_BUDGET_PERCENT", &self.retry_budget_percent, 0);
        if retry_budget_percent.is_some_and(|n| n > 100) {
            p.push("RETRY_BUDGET_PERCENT: must be at most 100");
        }
        let eject_base = p.millis("UPSTREAM_EJECT_MS", &self.upstream_eject_ms, 1);
        let eject_max = p.millis("UPSTREAM_EJECT_MAX_MS", &self.upstream_eject_max_ms, 1);
        if let (Some(base), Some(max)) = (eject_base, eject_max)
            && max < base
        {
            p.push("UPSTREAM_EJECT_MAX_MS: must be at least UPSTREAM_EJECT_MS");
        }
        if self.ollama_model.trim().is_empty() {
            p.push("OLLAMA_MODEL: must not be empty");
        }
        let keys: Vec<&str> = split_list(&self.proxy_api_keys);
        if keys.is_empty() {
            p.push("PROXY_API_KEYS: at least one key is required (comma-separated)");
        }
        for (n, key) in keys.iter().enumerate() {
            if key.len() < MIN_KEY_LEN {
                p.push(&format!("PROXY_API_KEYS: key #{} is shorter than {MIN_KEY_LEN} characters", n + 1));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                p.push(&format!("PROXY_API_KEYS: key #{} has characters other than visible ASCII", n + 1));
            }
        }
        let port = p.number::<u16>("PORT", &self.port, 0);
        let bind = self.proxy_bind.parse::<IpAddr>().ok();
        if bind.is_none() {
            p.push("PROXY_BIND: must be an IP address such as 0.0.0.0 or 127.0.0.1");
        }
        let allow_admin = p.boolean("PROXY_ALLOW_ADMIN", &self.proxy_allow_admin);
        let health_targets: Vec<Uri> = split_list(&self.health_targets)
            .into_iter()
            .enumerate()
            .filter_map(|(n, t)| p.url(&format!("HEALTH_TARGETS (entry #{})", n + 1), t))
            .collect();
        let health_timeout = p.millis("HEALTH_TIMEOUT_MS", &self.health_timeout_ms, 1);
        if health_timeout.is_some_and(|d| d >= Duration::from_secs(1)) {
            p.push("HEALTH_TIMEOUT_MS: must be under 1000 so /health answers within a second");
        }
        let workers = p.number::<usize>("PROXY_WORKERS", &self.proxy_workers, 0);
        if workers.is_some_and(|n| n > MAX_WORKERS) {
            p.push(&format!("PROXY_WORKERS: must be at most {MAX_WORKERS} (0 means one per CPU)"));
        }
        let max_header_bytes = p.number::<usize>("PROXY_MAX_HEADER_BYTES", &self.proxy_max_header_bytes, 1);
        if max_header_bytes.is_some_and(|n| n < MIN_HEADER_BYTES) {
            p.push(&format!("PROXY_MAX_HEADER_BYTES: must be at least {MIN_HEADER_BYTES}"));
        }
        let max_body_bytes = p.number("PROXY_MAX_BODY_BYTES", &self.proxy_max_body_bytes, 1);
        let body_buffer_bytes = p.number("PROXY_BODY_BUFFER_BYTES", &self.proxy_body_buffer_bytes, 1);
        if let (Some(body), Some(buffer)) = (max_body_bytes, body_buffer_bytes)
            && buffer < body
        {
            p.push("PROXY_BODY_BUFFER_BYTES: must be at least PROXY_MAX_BODY_BYTES");
        }
        let settings = Settings {
            upstreams,
            health_interval: p.millis("HEALTH_INTERVAL_MS", &self.health_interval_ms, 10).unwrap_or_default(),
            eject_base: eject_base.unwrap_or_default(),
            eject_max: eject_max.unwrap_or_default(),
            max_tries: max_tries.unwrap_or(1),
            retry_budget_percent: retry_budget_percent.unwrap_or(0),
            model: self.ollama_model.trim().to_owned(),
            api_keys: ApiKeys::new(keys),
            listen: SocketAddr::new(bind.unwrap_or(IpAddr::from([0, 0, 0, 0])), port.unwrap_or(0)),
            allow_admin: allow_admin.unwrap_or(false),
            health_targets,
            health_timeout: health_timeout.unwrap_or_default(),
            max_body_bytes: max_body_bytes.unwrap_or(0),
            max_in_flight: p.number("PROXY_MAX_IN_FLIGHT", &self.proxy_max_in_flight, 1).unwrap_or(0),
            retry_after_secs: p
                .number("PROXY_RETRY_AFTER_SECS", &self.proxy_retry_after_secs, 1)
                .unwrap_or(0),
            header_timeout: p
                .millis("PROXY_HEADER_TIMEOUT_MS", &self.proxy_header_timeout_ms, 100)
                .unwrap_or_default(),
            body_timeout: p
                .millis("PROXY_BODY_TIMEOUT_MS", &self.proxy_body_timeout_ms, 100)
                .unwrap_or_default(),
            upstream_ca: p.certificates("UPSTREAM_CA_FILE", self.upstream_ca_file.trim()),
            upstream_connect_timeout: p
                .millis("UPSTREAM_CONNECT_TIMEOUT_MS", &self.upstream_connect_timeout_ms, 1)
                .unwrap_or_default(),
            upstream_timeout: p
                .millis("UPSTREAM_TIMEOUT_MS", &self.upstream_timeout_ms, 1)
                .unwrap_or_default(),
            upstream_idle_timeout: p
                .millis("UPSTREAM_IDLE_TIMEOUT_MS", &self.upstream_idle_timeout_ms, 1)
                .unwrap_or_default(),
            shutdown_timeout: p
                .millis("PROXY_SHUTDOWN_TIMEOUT_MS", &self.proxy_shutdown_timeout_ms, 0)
                .unwrap_or_default(),
            workers: match workers {
                Some(0) | None => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
                Some(n) => n,
            },
            max_connections: p.number("PROXY_MAX_CONNECTIONS", &self.proxy_max_connections, 1).unwrap_or(0),
            max_header_bytes: max_header_bytes.unwrap_or(MIN_HEADER_BYTES),
            max_headers: p.number("PROXY_MAX_HEADERS", &self.proxy_max_headers, 1).unwrap_or(0),
            body_deadline: p
                .millis("PROXY_BODY_DEADLINE_MS", &self.proxy_body_deadline_ms, 100)
                .unwrap_or_default(),
            body_buffer_bytes: body_buffer_bytes.unwrap_or(0),
            write_timeout: p
                .millis("PROXY_WRITE_TIMEOUT_MS", &self.proxy_write_timeout_ms, 100)
                .unwrap_or_default(),
            health_cache: p.millis("HEALTH_CACHE_MS", &self.health_cache_ms, 0).unwrap_or_default(),
        };
        if problems.is_empty() { Ok(settings) } else { Err(problems) }
    }
}

/// Collects problems; each helper returns `None` after recording what is wrong.
struct Problems<'a>(&'a mut Vec<String>);

impl Problems<'_> {
    fn push(&mut self, problem: &str) {
        self.0.push(problem.to_owned());
    }

    fn number<T: std::str::FromStr + PartialOrd + From<u8> + std::fmt::Display>(
        &mut self,
        name: &str,
        value: &str,
        min: u8,
    ) -> Option<T> {
        match value.trim().parse::<T>() {
            Ok(n) if n >= T::from(min) => Some(n),
            Ok(_) => {
                self.push(&format!("{name}: must be at least {min}"));
                None
            }
            Err(_) => {
                self.push(&format!("{name}: {value:?} is not a whole number in range"));
                None
            }
        }
    }

    fn millis(&mut self, name: &str, value: &str, min: u8) -> Option<Duration> {
        self.number::<u64>(name, value, min).map(Duration::from_millis)
    }

    fn boolean(&mut self, name: &str, value: &str) -> Option<bool> {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" | "" => Some(false),
            _ => {
                self.push(&format!("{name}: {value:?} is not true or false"));
                None
            }
        }
    }

    /// CA certificates from a PEM file; an empty path means none.
    fn certificates(&mut self, name: &str, path: &str) -> Vec<CertificateDer<'static>> {
        if path.is_empty() {
            return Vec::new();
        }
        let Ok(iter) = CertificateDer::pem_file_iter(path) else {
            self.push(&format!("{name}: cannot read {path}"));
            return Vec::new();
        };
        let certs: Result<Vec<_>, _> = iter.collect();
        let mut scratch = rustls::RootCertStore::empty();
        match certs {
            Ok(certs) if !certs.is_empty() && certs.iter().all(|c| scratch.add(c.clone()).is_ok()) => certs,
            _ => {
                self.push(&format!("{name}: {path} holds no valid PEM CA certificate"));
                Vec::new()
            }
        }
    }

    /// An absolute http(s) URL without credentials, query or fragment; returned without a trailing `/`.
    fn url(&mut self, name: &str, value: &str) -> Option<Uri> {
        let Ok(uri) = value.trim().trim_end_matches('/').parse::<Uri>() else {
            self.push(&format!("{name}: not a valid URL"));
            return None;
        };
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        let Some(authority) = uri.authority().filter(|_| scheme_ok) else {
            self.push(&format!("{name}: must be an absolute http:// or https:// URL"));
            return None;
        };
        if authority.as_str().contains('@') {
            // Never echo the value: it holds credentials.
            self.push(&format!("{name}: must not contain credentials (user:password@)"));
            return None;
        }
        if uri.query().is_some() {
            self.push(&format!("{name}: must not have a query string"));
            return None;
        }
        Some(uri)
    }
}

impl Problems<'_> {
    /// `OLLAMA_UPSTREAMS`: comma-separated entries `URL[;weight=N][;host=NAME][;token_env=VAR|token=T]`.
    /// `env` looks up `token_env` names. A token is never echoed in a problem.
    fn upstreams(&mut self, value: &str, env: impl Fn(&str) -> Option<String>) -> Vec<UpstreamSpec> {
        let entries = split_list(value);
        if entries.len() > MAX_UPSTREAMS {
            self.push(&format!("OLLAMA_UPSTREAMS: at most {MAX_UPSTREAMS} entries"));
        }
        let mut specs = Vec::new();
        for (n, entry) in entries.iter().enumerate() {
            let name = format!("OLLAMA_UPSTREAMS (entry #{})", n + 1);
            let mut parts = entry.split(';').map(str::trim);
            let url = self.url(&name, parts.next().unwrap_or_default());
            let (mut weight, mut host, mut token) = (Some(1), None, None);
            for option in parts.filter(|o| !o.is_empty()) {
                let (key, value) = option.split_once('=').unwrap_or((option, ""));
                match key.trim() {
                    "weight" => {
                        weight = value.trim().parse::<u32>().ok().filter(|w| (1..=MAX_WEIGHT).contains(w));
                        if weight.is_none() {
                            self.push(&format!(
                                "{name}: weight must be a whole number from 1 to {MAX_WEIGHT}"
                            ));
                        }
                    }
                    "host" => {
                        host = http::uri::Authority::try_from(value.trim())
                            .ok()
                            .filter(|a| !a.as_str().contains('@'))
                            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok());
                        if host.is_none() {
                            self.push(&format!("{name}: host must be a host name, with an optional :port"));
                        }
                    }
                    "token" | "token_env" if token.is_some() => {
                        self.push(&format!("{name}: give one token or token_env, not both"));
                    }
                    "token" => token = self.token(&name, value.trim()),
                    "token_env" => match env(value.trim()) {
                        Some(secret) => token = self.token(&name, secret.trim()),
                        None => self.push(&format!("{name}: token_env {} is not set", value.trim())),
                    },
                    // Echo an option's name only when it looks like one: `;s3cr3t` (a token
                    // without `token=`) or the tail of a token holding `;` must not be printed.
                    other if option.contains('=')
                        && other.len() <= 16
                        && other.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
                    {
                        self.push(&format!("{name}: unknown option {other:?} (weight, host, token or token_env)"));
                    }
                    _ => self.push(&format!(
                        "{name}: an option that is not weight=, host=, token= or token_env= (not shown: it may be a secret)"
                    )),
                }
            }
            if let (Some(url), Some(weight)) = (url, weight) {
                specs.push(UpstreamSpec { url, weight, host, token });
            }
        }
        if entries.is_empty() {
            self.push("OLLAMA_UPSTREAMS: no upstream in the list");
        }
        specs
    }

    /// `Bearer <token>` as a sensitive header value; the token itself is never echoed.
    fn token(&mut self, name: &str, token: &str) -> Option<http::HeaderValue> {
        let value = (!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| http::HeaderValue::from_str(&format!("Bearer {token}")).ok())
            .flatten();
        if let Some(mut value) = value {
            value.set_sensitive(true);
            return Some(value);
        }
        self.push(&format!("{name}: the token must be visible ASCII characters, not empty"));
        None
    }
}

fn split_list(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawSettings {
        let mut args = vec!["ollama-proxy".to_owned()];
        for (flag, value) in pairs {
            args.push(format!("--{flag}={value}"));
        }
        Cli::try_parse_from(args).map_or_else(|e| panic!("{e}"), |cli| cli.settings)
    }

    #[test]
    fn defaults_with_one_key_are_valid() {
        let settings = raw(&[("proxy-api-keys", "0123456789abcdef")]).validate();
        let settings = settings.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(settings.upstreams.len(), 1, "OLLAMA_UPSTREAM is a pool of one");
        assert_eq!(settings.upstreams[0].url.to_string(), "http://127.0.0.1:11434/");
        assert_eq!(settings.max_tries, 2);
        assert_eq!(settings.listen.port(), 8000);
        assert!(!settings.allow_admin);
        assert!(settings.workers >= 1, "0 means one worker per CPU");
    }

    #[test]
    fn an_upstream_option_that_may_be_a_token_is_never_echoed() {
        let pool = "http://a:11434;s3cr3t-forgot-the-key,http://b:11434;token=ab;cd-tail-of-token,http://c:1;shape=x";
        let problems = raw(&[("proxy-api-keys", "0123456789abcdef"), ("ollama-upstreams", pool)])
            .validate()
            .expect_err("three bad options");
        let text = problems.join("\n");
        assert!(!text.contains("s3cr3t") && !text.contains("cd-tail"), "{text}");
        assert!(text.contains("not shown: it may be a secret"), "{text}");
        assert!(text.contains("unknown option \"shape\""), "{text}");
    }

    #[test]
    fn every_problem_is_reported_together_without_secrets() {
        let problems = raw(&[
            ("proxy-api-keys", "short-secret"),
            ("port", "eighty"),
            ("ollama-upstream", "ftp://x"),
            ("proxy-max-in-flight", "0"),
            ("health-targets", "https://user:hunter2@edge.example/health"),
            ("proxy-allow-admin", "maybe"),
            ("health-timeout-ms", "5000"),
            ("proxy-workers", "100000"),
            ("proxy-max-header-bytes", "1024"),
            ("proxy-max-body-bytes", "2000"),
            ("proxy-body-buffer-bytes", "1000"),
            ("proxy-max-connections", "0"),
        ])
        .validate()
        .err()
        .unwrap_or_default();
        let text = problems.join("\n");
        for needle in [
            "PROXY_API_KEYS",
            "PORT",
            "OLLAMA_UPSTREAM",
            "PROXY_MAX_IN_FLIGHT",
            "HEALTH_TARGETS",
            "PROXY_ALLOW_ADMIN",
            "HEALTH_TIMEOUT_MS",
            "PROXY_WORKERS",
            "PROXY_MAX_HEADER_BYTES",
            "PROXY_BODY_BUFFER_BYTES",
            "PROXY_MAX_CONNECTIONS",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(!text.contains("short-secret") && !text.contains("hunter2"), "{text}");
    }

    #[test]
    fn every_variable_is_documented_in_env_example_and_readme() {
        use clap::CommandFactory;
        let example = include_str!("../.env.example");
        let readme = include_str!("../README.md");
        let names: Vec<String> = Cli::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env()?.to_str().map(str::to_owned))
            .collect();
        assert!(names.len() > 15, "{names:?}");
        for name in names {
            assert!(example.contains(&format!("\n{name}=")), "{name} missing from .env.example");
            assert!(readme.contains(&format!("| `{name}` |")), "{name} missing from the README's table");
        }
    }

    #[test]
    fn a_pool_is_parsed_with_weight_host_and_tokens() {
        let mut p = Vec::new();
        let specs = Problems(&mut p).upstreams(
            "http://a:11434;weight=2;host=x.example;token_env=BOX_A_TOKEN, https://b.example/ollama;token=t0k3n",
            |name| (name == "BOX_A_TOKEN").then(|| "s3cret".to_owned()),
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(specs.len(), 2);
        assert_eq!((specs[0].weight, specs[1].weight), (2, 1));
        assert_eq!(specs[0].host.as_ref().map(|h| h.to_str().unwrap_or_default()), Some("x.example"));
        assert_eq!(specs[0].token.as_ref().map(http::HeaderValue::as_bytes), Some(&b"Bearer s3cret"[..]));
        assert!(specs[1].token.as_ref().is_some_and(http::HeaderValue::is_sensitive));
        assert!(!format!("{specs:?}").contains("s3cret") && !format!("{specs:?}").contains("t0k3n"));
    }

    #[test]
    fn every_pool_problem_is_reported_together_without_tokens() {
        let mut p = Vec::new();
        let _ = Problems(&mut p).upstreams(
            "ftp://a;weight=0, http://b;token_env=MISSING;colour=red, http://c;host=a b;token=sec ret",
            |_| None,
        );
        let text = p.join("\n");
        for needle in
            ["entry #1", "weight", "MISSING is not set", "\"colour\"", "(entry #3): host", "visible ASCII"]
        {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(!text.contains("sec ret"), "{text}");
    }

    #[test]
    fn missing_keys_are_a_problem() {
        let problems = raw(&[]).validate().err().unwrap_or_default();
        assert!(problems.iter().any(|p| p.starts_with("PROXY_API_KEYS")));
    }
}
