//! A blocking HTTP(S) client that returns whatever came back, timed, and never panics.

use std::time::{Duration, Instant};

use ureq::Agent;

/// Longest any one request may take; the checks judge their own, tighter limits.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Shared by every check (and by threads: `ureq::Agent` is a cheap, thread-safe handle).
#[derive(Clone)]
pub struct Client {
    agent: Agent,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `content-type`, lowercased, parameters included (empty when absent).
    pub content_type: String,
    /// Body as text (lossy).
    pub body: String,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
    /// `Retry-After` in seconds, when the reply has one.
    pub retry_after: Option<Duration>,
}

impl Reply {
    /// The body as JSON, if it is.
    #[must_use]
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// Whether the media type is `media` (`text/html`, `application/json`, ...).
    #[must_use]
    pub fn is(&self, media: &str) -> bool {
        self.content_type.split(';').next().is_some_and(|m| m.trim() == media)
    }

    /// The first `max` characters of the body on one line, for messages.
    #[must_use]
    pub fn snippet(&self, max: usize) -> String {
        let one_line: String = self.body.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() > max {
            format!("{}…", one_line.chars().take(max).collect::<String>())
        } else {
            one_line
        }
    }
}

/// A request: method, URL, headers, optional JSON body.
pub struct Request<'a> {
    method: &'static str,
    url: String,
    headers: Vec<(&'static str, &'a str)>,
    body: Option<String>,
}

impl<'a> Request<'a> {
    /// `GET url`.
    #[must_use]
    pub fn get(url: String) -> Self {
        Request { method: "GET", url, headers: Vec::new(), body: None }
    }

    /// `POST url` with a JSON body.
    #[must_use]
    pub fn post_json(url: String, body: &serde_json::Value) -> Self {
        Request {
            method: "POST",
            url,
            headers: vec![("content-type", "application/json")],
            body: Some(body.to_string()),
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &'static str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client that treats every status as a reply (the checks judge them) and gives up after
    /// [`REQUEST_TIMEOUT`].
    #[must_use]
    pub fn new() -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent("ouija-smoke/0.1")
            .build()
            .into();
        Client { agent }
    }

    /// Sends `request`; `Err` says why no response came (connection refused, DNS, TLS, timeout).
    pub fn send(&self, request: Request<'_>) -> Result<Reply, String> {
        let started = Instant::now();
        let result = if let ("POST", Some(body)) = (request.method, request.body) {
            let mut builder = self.agent.post(&request.url);
            for (name, value) in &request.headers {
                builder = builder.header(*name, *value);
            }
            builder.send(body)
        } else {
            let mut builder = self.agent.get(&request.url);
            for (name, value) in &request.headers {
                builder = builder.header(*name, *value);
            }
            builder.call()
        };
        let mut response = result.map_err(|e| format!("{} {}: {e}", request.method, request.url))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response
            .body_mut()
            .with_config()
            .limit(8 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| format!("{} {}: reading the body: {e}", request.method, request.url))?;
        Ok(Reply {
            status,
            content_type,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            elapsed: started.elapsed(),
            retry_after,
        })
    }
}
