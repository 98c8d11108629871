//! Bearer-token check against the configured keys, in constant time.
//!
//! Keys are kept only as SHA-256 digests: comparing fixed-length digests with `subtle` leaks
//! neither a key's bytes nor its length through timing, and every key is compared on every
//! request so the position of the matching key does not leak either.

use http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::error::ProxyError;

/// The accepted API keys, stored as digests.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys, redacted)", self.digests.len())
    }
}

impl ApiKeys {
    /// Builds the key set from plain keys; the plain text is not kept.
    #[must_use]
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self { digests: keys.into_iter().map(digest).collect() }
    }

    /// Accepts the request only if it carries `Authorization: Bearer <one of the keys>`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        self.check_credential(headers.get(header::AUTHORIZATION))
    }

    /// [`check`](Self::check) for a request's (first) `Authorization` value, already found.
    pub fn check_credential(&self, authorization: Option<&HeaderValue>) -> Result<(), ProxyError> {
        let token = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or(ProxyError::Unauthorized)?;
        if self.matches(token) { Ok(()) } else { Err(ProxyError::Unauthorized) }
    }

    fn matches(&self, token: &str) -> bool {
        let presented = digest(token);
        let mut any = Choice::from(0);
        for key in &self.digests {
            any |= key.ct_eq(&presented);
        }
        any.into()
    }
}

/// The token of a `Bearer` credential (scheme case-insensitive, per RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(header::AUTHORIZATION, v);
        }
        headers
    }

    #[test]
    fn each_configured_key_is_accepted() {
        let keys = ApiKeys::new(["first-key-0123456789", "second-key-0123456789"]);
        assert!(keys.check(&headers("Bearer first-key-0123456789")).is_ok());
        assert!(keys.check(&headers("bearer second-key-0123456789")).is_ok());
    }

    #[test]
    fn missing_wrong_or_non_bearer_credentials_are_refused() {
        let keys = ApiKeys::new(["first-key-0123456789"]);
        assert!(keys.check(&HeaderMap::new()).is_err());
        assert!(keys.check(&headers("Bearer first-key-012345678")).is_err());
        assert!(keys.check(&headers("Basic first-key-0123456789")).is_err());
        assert!(keys.check(&headers("Bearer ")).is_err());
        assert!(keys.check(&headers("first-key-0123456789")).is_err());
    }

    #[test]
    fn debug_output_hides_the_keys() {
        let keys = ApiKeys::new(["first-key-0123456789"]);
        assert!(!format!("{keys:?}").contains("first-key"));
    }
}
