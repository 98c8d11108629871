//! The `healthcheck` subcommand: probe a URL so a `FROM scratch` image needs no curl.

use std::time::Duration;

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The URL probed when none is given: this proxy's `/health` on loopback at `$PORT`.
#[must_use]
pub fn default_url() -> String {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".to_owned());
    format!("http://127.0.0.1:{port}/health")
}

/// GETs `url`; `Ok` for a 2xx answer within `timeout`, else a short reason.
pub async fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("not a URL: {url}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs can be probed".to_owned());
    }
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::get(uri).body(Body::empty()).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|_| "connection failed".to_owned())?;
    let status = response.status();
    if status.is_success() { Ok(status.as_u16()) } else { Err(format!("HTTP {}", status.as_u16())) }
}
