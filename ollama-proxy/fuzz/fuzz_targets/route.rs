//! The request-target normalisation and the allow-list decision (`route::classify`).
//!
//! Invariants: a forwarded path is canonical (classifying it again gives itself), has no empty or
//! dot segment, no encoded or literal separator trick, and stays under its route's prefix; an admin
//! route is refused (with `PROXY_ALLOW_ADMIN` off) in every spelling: percent-encoding of any byte,
//! either case, dot segments, double slashes, a trailing slash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ollama_proxy::route::{Forward, classify};

const ADMIN: [&str; 6] =
    ["/api/pull", "/api/push", "/api/create", "/api/delete", "/api/copy", "/api/blobs/sha256:x"];
const FORWARDED: [&str; 8] = [
    "/api/chat",
    "/api/generate",
    "/api/tags",
    "/api/show",
    "/api/version",
    "/api/ps",
    "/api/embed",
    "/api/embeddings",
];

fn check_forwarded(raw: &str, forward: &Forward, allow_admin: bool) {
    let path: &str = &forward.path;
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    assert!(
        path[1..].split('/').all(|s| !s.is_empty() && s != "." && s != ".."),
        "{raw:?} -> {path:?}: empty or dot segment"
    );
    assert!(!path.contains(['\\', '?', '#']) && !path.chars().any(char::is_control), "{raw:?} -> {path:?}");
    // Canonical: what goes upstream classifies to itself.
    let again = classify(path, allow_admin);
    assert_eq!(again.as_ref().ok(), Some(forward), "{raw:?} -> {path:?} is not canonical");
    // Never outside its prefix.
    let label = forward.label;
    let inside = match label {
        "/v1/*" => path.starts_with("/v1/"),
        "/api/blobs/*" => path == "/api/blobs" || path.starts_with("/api/blobs/"),
        _ if label.starts_with("/v1/") => path == label || path.starts_with(&format!("{label}/")),
        _ => path == label,
    };
    assert!(inside, "{raw:?} -> {path:?} escapes {label}");
    if !allow_admin {
        let lower = path.to_ascii_lowercase();
        assert!(
            !ADMIN[..5].contains(&lower.as_str()) && !lower.starts_with("/api/blobs"),
            "{raw:?} forwarded an admin route as {path:?}"
        );
        assert!(FORWARDED.contains(&path) || path.starts_with("/v1/"), "{raw:?} -> {path:?}");
    }
}

/// Spells `route` again, one choice per input byte: escapes (either hex case), letter case, and
/// dot segments, empty segments or a trailing slash between segments.
fn respell(route: &str, choices: &[u8]) -> String {
    let mut choices = choices.iter().copied().cycle();
    let mut spelled = String::new();
    for byte in route.bytes() {
        let choice = choices.next().unwrap_or(0);
        if byte == b'/' {
            spelled.push('/');
            match choice % 8 {
                1 => spelled.push_str("./"),
                2 => spelled.push('/'),
                3 => spelled.push_str("x/../"),
                4 => spelled.push_str("%2e/"),
                _ => {}
            }
            continue;
        }
        match choice % 4 {
            1 => spelled.push_str(&format!("%{byte:02X}")),
            2 => spelled.push_str(&format!("%{byte:02x}")),
            3 => spelled.push(byte.to_ascii_uppercase() as char),
            _ => spelled.push(byte as char),
        }
    }
    if choices.next().unwrap_or(0) % 5 == 0 {
        spelled.push('/');
    }
    spelled
}

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = std::str::from_utf8(data) {
        for allow_admin in [false, true] {
            if let Ok(forward) = classify(raw, allow_admin) {
                check_forwarded(raw, &forward, allow_admin);
            }
        }
    }
    if let Some((&pick, choices)) = data.split_first() {
        let route = ADMIN[usize::from(pick) % ADMIN.len()];
        let spelled = respell(route, choices);
        assert!(classify(&spelled, false).is_err(), "{spelled:?} reached {route} with admin off");
        if let Ok(forward) = classify(&spelled, true) {
            check_forwarded(&spelled, &forward, true);
        }
    }
});
