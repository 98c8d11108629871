//! Who is asking, without knowing who. An asker is a short keyed hash (HMAC-SHA-256) of the
//! client address the platform gives, so limits and memory can tell askers apart while the
//! database never holds an address. The key is `ASKER_KEY`, or when that is unset a random key
//! that migration 0004 put in the database.

use std::cell::RefCell;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::config::Config;
use super::seam::{DbError, Platform};

/// The client's address as the platform gives it (`CF-Connecting-IP` on Workers, `spin-client-addr`
/// on Spin). Adapters put it in the request's extensions; the core never reads those headers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress(pub String);

/// An asker: 32 hex characters, the first 128 bits of HMAC-SHA-256(key, address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker(String);

impl Asker {
    /// The hash as stored.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key the asker hashes (and the memory's question hashes) are made with.
#[derive(Clone, PartialEq, Eq)]
pub struct HashKey(Vec<u8>);

impl HashKey {
    /// The key as a store keeps it (hex text, used as bytes as SQL's is).
    #[cfg(any(feature = "spin", not(target_arch = "wasm32")))] // the key-value store only
    pub(crate) fn from_stored(key: String) -> HashKey {
        HashKey(key.into_bytes())
    }

    /// A key from raw bytes, for tests elsewhere in the core.
    #[cfg(test)]
    pub(crate) fn for_tests(key: &[u8]) -> HashKey {
        HashKey(key.to_vec())
    }

    /// The asker for `address` (port dropped: it changes with every connection). Requests whose
    /// platform gives no address are all one asker.
    #[must_use]
    pub fn asker(&self, address: Option<&str>) -> Asker {
        Asker(self.hash(b"asker", host_of(address.unwrap_or("unknown")).as_bytes()))
    }

    /// A keyed hash of `data` in `domain`, as 32 hex characters: not reversible without the key.
    #[must_use]
    pub fn hash(&self, domain: &[u8], data: &[u8]) -> String {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(domain);
        mac.update(&[0]);
        mac.update(data);
        let digest = mac.finalize().into_bytes();
        hex(&digest[..16])
    }
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

thread_local! {
    /// The database's key, once read. Per isolate on Workers (isolates live across requests);
    /// Spin makes an instance per request, so there it is read each time (in-process, cheap).
    static STORED_KEY: RefCell<Option<HashKey>> = const { RefCell::new(None) };
}

/// An `edge_secrets` row.
#[derive(Deserialize)]
struct SecretRow {
    value: String,
}

/// The hash key: `ASKER_KEY` when set, else the database's random key.
pub async fn hash_key<P: Platform>(platform: &P, config: &Config) -> Result<HashKey, DbError> {
    if let Some(key) = &config.asker_key {
        return Ok(HashKey(key.as_bytes().to_vec()));
    }
    if let Some(key) = STORED_KEY.with_borrow(Clone::clone) {
        return Ok(key);
    }
    key_value! {
        if platform.store() == super::seam::Store::KeyValue {
            let key = super::kv::hash_key(platform).await?;
            STORED_KEY.set(Some(key.clone()));
            return Ok(key);
        }
    }
    let read = "SELECT value FROM edge_secrets WHERE name = 'asker'";
    let mut rows: Vec<SecretRow> = platform.rows_as(read, &[]).await?;
    if rows.is_empty() {
        // Migration 0004 makes the key; should its row be gone, the first ask makes another.
        platform
            .query(
                "INSERT INTO edge_secrets (name, value) VALUES ('asker', lower(hex(randomblob(32)))) \
                 ON CONFLICT (name) DO NOTHING",
                &[],
            )
            .await?;
        rows = platform.rows_as(read, &[]).await?;
    }
    let row = rows.pop().ok_or_else(|| DbError("the asker key is missing".to_owned()))?;
    let key = HashKey(row.value.into_bytes());
    STORED_KEY.set(Some(key.clone()));
    Ok(key)
}

/// The host part of a client address: `203.0.113.7:51234` → `203.0.113.7`, `[2001:db8::1]:443`
/// → `2001:db8::1`; a bare IPv6 or IPv4 address is kept as it is.
#[must_use]
pub fn host_of(address: &str) -> &str {
    let address = address.trim();
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.split_once(':') {
        // One colon: IPv4 (or a name) with a port. More: a bare IPv6 address.
        Some((host, port)) if !port.contains(':') => host,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_dropped_from_every_address_form() {
        assert_eq!(host_of("203.0.113.7:51234"), "203.0.113.7");
        assert_eq!(host_of("203.0.113.7"), "203.0.113.7");
        assert_eq!(host_of("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(host_of("2001:db8::1"), "2001:db8::1");
    }

    #[test]
    fn askers_differ_by_address_and_key_never_by_port_and_hold_no_address() {
        let key = HashKey(b"k1".to_vec());
        let one = key.asker(Some("203.0.113.7:1"));
        assert_eq!(one, key.asker(Some("203.0.113.7:2")));
        assert_ne!(one, key.asker(Some("203.0.113.8:1")));
        assert_ne!(one, HashKey(b"k2".to_vec()).asker(Some("203.0.113.7:1")));
        assert_eq!(one.as_str().len(), 32);
        assert!(!one.as_str().contains("203"));
        // RFC 4231 test case 2 (HMAC-SHA-256, key "Jefe"), truncated: the hash is standard HMAC.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("any key");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(hex(&mac.finalize().into_bytes()[..4]), "5bdcc146");
    }
}
