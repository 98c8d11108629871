//! Arbitrary provider replies into the Groq and Ollama parsers.
//!
//! Input: one byte picking the status (200, 400, 401, 404, 413, 429, 500, 503), then three lines
//! with the values of `retry-after`, `x-ratelimit-reset-requests` and
//! `x-ratelimit-remaining-requests` (an empty line leaves the header out), then the body.
//!
//! Invariants: never panics; a 429 is a cool-down of 1 s to 1 h or "too large"; a 413 is "too
//! large"; no other non-2xx status is ever an answer; an answer passes the cleaner's invariants; a
//! spent daily quota cools down for 1 s to 1 h, and only when the remaining count is 0.
#![no_main]

use http::{HeaderValue, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use ouija_edge::core::providers::{groq_daily_quota_spent, lists_model, parse_groq, parse_ollama, Failure};
use ouija_edge_fuzz::assert_clean_answer;

const STATUSES: [u16; 8] = [200, 400, 401, 404, 413, 429, 500, 503];
const HEADERS: [&str; 3] = ["retry-after", "x-ratelimit-reset-requests", "x-ratelimit-remaining-requests"];
const COOL_DOWN_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;

fn next_line<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let line = &rest[..end];
    *rest = rest.get(end + 1..).unwrap_or_default();
    line
}

fn check_answer(status: StatusCode, parsed: &Result<String, Failure>) {
    match (status.as_u16(), parsed) {
        (200, Ok(answer)) => assert_clean_answer(answer),
        (200, Err(Failure::Malformed | Failure::Junk(_))) | (413 | 429, Err(Failure::TooLarge)) => {}
        (429, Err(Failure::RateLimited { retry_after_ms })) => {
            assert!(COOL_DOWN_MS.contains(retry_after_ms), "429 cool-down of {retry_after_ms} ms");
        }
        (code, Err(Failure::Http(reported))) if code != 200 && !matches!(code, 413 | 429) => {
            assert_eq!(code, *reported, "status reported wrongly");
        }
        (code, other) => panic!("{code} parsed as {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else { return };
    let mut response = Response::new(Vec::new());
    *response.status_mut() = StatusCode::from_u16(STATUSES[usize::from(pick) % STATUSES.len()])
        .expect("listed statuses are valid");
    for name in HEADERS {
        let value = next_line(&mut rest);
        if value.is_empty() {
            continue;
        }
        if let Ok(value) = HeaderValue::from_bytes(value) {
            response.headers_mut().insert(name, value);
        }
    }
    *response.body_mut() = rest.to_vec();
    let status = response.status();

    check_answer(status, &parse_groq(&response));
    check_answer(status, &parse_ollama(&response));

    let listed = lists_model(&response, "llama-3.1-8b-instant");
    assert!(status.is_success() || listed.is_err(), "{status} listed models: {listed:?}");
    if status.is_success() {
        assert!(matches!(listed, Ok(_) | Err(Failure::Malformed)), "{listed:?}");
    }

    if let Some(cool_down_ms) = groq_daily_quota_spent(&response) {
        assert!(COOL_DOWN_MS.contains(&cool_down_ms), "daily-quota cool-down of {cool_down_ms} ms");
        let remaining = response.headers().get(HEADERS[2]).and_then(|v| v.to_str().ok()).map(str::trim);
        assert_eq!(
            remaining.and_then(|r| r.parse::<u64>().ok()),
            Some(0),
            "quota spent with {remaining:?} left"
        );
    }
});
