//! The allow-list: which request paths are forwarded to Ollama, which are refused, and why.
//!
//! The path is decoded once into a canonical form and classified on that form; the canonical form
//! is also what goes upstream, so Ollama never sees a path other than the one that was checked.
//! Anything whose meaning depends on the decoder (encoded `/`, `\` or `%`, dot segments, empty
//! segments, control bytes, invalid UTF-8) is refused as ambiguous rather than guessed at.

use std::borrow::Cow;

use crate::error::ProxyError;

/// Inference and read-only routes that are always forwarded (the `/v1/` prefix is handled apart).
const FORWARDED: &[&str] = &[
    "/api/chat",
    "/api/generate",
    "/api/tags",
    "/api/show",
    "/api/version",
    "/api/ps",
    "/api/embed",
    "/api/embeddings",
];

/// Model-management routes, forwarded only when `PROXY_ALLOW_ADMIN=true`.
const ADMIN: &[&str] = &["/api/pull", "/api/push", "/api/create", "/api/delete", "/api/copy"];

/// OpenAI-compatible routes Ollama serves; others under `/v1/` are forwarded with a generic label.
const OPENAI: &[&str] = &["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"];

/// A path that may be forwarded: the canonical path to send and a bounded label for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward<'a> {
    /// The decoded, checked path that goes upstream: the received one when it had nothing to
    /// decode (no copy), else the decoded copy.
    pub path: Cow<'a, str>,
    /// The metrics label: the route itself or a fixed pattern, never free text.
    pub label: &'static str,
}

/// Decides whether `raw_path` (as received, still percent-encoded) may be forwarded.
pub fn classify(raw_path: &str, allow_admin: bool) -> Result<Forward<'_>, ProxyError> {
    let path = canonicalize(raw_path)?;
    if let Some(label) = FORWARDED.iter().find(|r| **r == path) {
        return Ok(Forward { path, label });
    }
    if path.starts_with("/v1/") {
        let label = OPENAI
            .iter()
            .find(|r| path.strip_prefix(**r).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
            .copied()
            .unwrap_or("/v1/*");
        return Ok(Forward { path, label });
    }
    // Admin routes are matched case-insensitively so `/API/PULL` is refused as what it means.
    let lower = path.to_ascii_lowercase();
    let admin =
        ADMIN.iter().find(|r| **r == lower).copied().or_else(|| {
            (lower == "/api/blobs" || lower.starts_with("/api/blobs/")).then_some("/api/blobs/*")
        });
    match admin {
        Some(label) if allow_admin && lower == *path => Ok(Forward { path, label }),
        Some(_) => Err(ProxyError::AdminRouteForbidden),
        None => Err(ProxyError::NotFound),
    }
}

/// Decodes percent-escapes and refuses every path that is not already in plain canonical form.
fn canonicalize(raw: &str) -> Result<Cow<'_, str>, ProxyError> {
    if !raw.starts_with('/') {
        return Err(ProxyError::AmbiguousPath);
    }
    let path = if raw.contains('%') { Cow::Owned(decode(raw)?) } else { Cow::Borrowed(raw) };
    // A literal `?` or `#` never comes from hyper (it splits them off), but a path holding one would
    // turn into a query or fragment when put back into a URI: refused, so the function stands alone.
    if path.chars().any(|c| c.is_control() || matches!(c, '\\' | '?' | '#')) {
        return Err(ProxyError::AmbiguousPath);
    }
    let ambiguous_segment =
        path[1..].split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..");
    if ambiguous_segment && path != "/" {
        return Err(ProxyError::AmbiguousPath);
    }
    Ok(path)
}

/// `raw` with its percent-escapes decoded; an escape that is malformed, encodes a separator, an
/// escape or a query or fragment mark, or leaves invalid UTF-8 is refused.
fn decode(raw: &str) -> Result<String, ProxyError> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(ProxyError::AmbiguousPath)?;
            let value = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(ProxyError::AmbiguousPath)?;
            // An encoded separator or escape changes the path's structure depending on who decodes
            // it; a decoded `?` or `#` would turn part of the checked path into a query or fragment.
            if matches!(value, b'/' | b'\\' | b'%' | b'?' | b'#') {
                return Err(ProxyError::AmbiguousPath);
            }
            decoded.push(value);
            i += 3;
        } else {
            decoded.push(byte);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| ProxyError::AmbiguousPath)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(path: &str) -> u16 {
        classify(path, false).map_or_else(|e| e.status_code().as_u16(), |_| 200)
    }

    #[test]
    fn allow_listed_routes_are_forwarded_unchanged() {
        for route in FORWARDED {
            assert_eq!(classify(route, false).map(|f| f.path).ok().as_deref(), Some(*route));
        }
        let chat = classify("/v1/chat/completions", false);
        assert_eq!(chat.map(|f| f.label).ok(), Some("/v1/chat/completions"));
        let model = classify("/v1/models/qwen2.5:0.5b", false);
        assert_eq!(model.map(|f| f.label).ok(), Some("/v1/models"));
        let other = classify("/v1/modelsx", false);
        assert_eq!(other.map(|f| f.label).ok(), Some("/v1/*"));
    }

    #[test]
    fn encoded_query_and_fragment_marks_are_ambiguous() {
        assert_eq!(status("/v1/x%3F"), 400);
        assert_eq!(status("/api/tags%3fa=b"), 400);
        assert_eq!(status("/api/tags%23x"), 400);
    }

    /// Found by the `route` fuzz target: a literal `?` in the path given to `classify` came back in
    /// the forwarded path, where it would become a query upstream.
    #[test]
    fn literal_query_and_fragment_marks_in_a_path_are_ambiguous() {
        assert_eq!(status("/v1/!api?ta./pull"), 400);
        assert_eq!(status("/api/tags?x"), 400);
        assert_eq!(status("/api/tags#x"), 400);
    }

    #[test]
    fn percent_encoded_letters_are_decoded_before_the_check() {
        assert_eq!(status("/api/%70ull"), 403);
        assert_eq!(classify("/api/%74ags", false).map(|f| f.path).ok().as_deref(), Some("/api/tags"));
        assert_eq!(status("/%61pi/blobs/sha256:x"), 403);
    }

    #[test]
    fn admin_routes_are_forbidden_in_any_case() {
        for path in ["/api/pull", "/API/PULL", "/Api/Delete", "/api/blobs/sha256:x", "/api/blobs"] {
            assert_eq!(status(path), 403, "{path}");
        }
    }

    #[test]
    fn admin_routes_pass_only_when_enabled_and_spelled_canonically() {
        assert!(classify("/api/pull", true).is_ok());
        assert!(classify("/api/blobs/sha256:abc", true).is_ok());
        assert!(classify("/API/PULL", true).is_err());
    }

    #[test]
    fn structural_tricks_are_ambiguous() {
        for path in [
            "/api//pull",
            "/api/tags/../pull",
            "/api/./chat",
            "/api/%2e%2e/api/pull",
            "/api%2fpull",
            "/api%2Fpull",
            "/api/%2570ull",
            "/api\\pull",
            "/api/chat/",
            "/api/tags%00",
            "/api/%zz",
            "/api/%7",
            "/api/%ff",
            "api/chat",
        ] {
            assert_eq!(status(path), 400, "{path}");
        }
    }

    #[test]
    fn unknown_routes_are_not_found() {
        for path in ["/", "/api", "/api/tagsx", "/API/TAGS", "/metricsx", "/v1"] {
            assert_eq!(status(path), 404, "{path}");
        }
    }
}
