//! Arbitrary bodies and headers into `POST /api/ouija`'s validation (`read_question`).
//!
//! Input: one control byte, then optional header lines, then the body.
//! - bits 0–2: content type: `application/json`, with `; charset=utf-8`, odd case and spacing,
//!   `text/plain`, none, `application/problem+json`, `application/json` again, or the next line raw;
//! - bits 3–4: `content-length`: none, the true length, 8193 (over the limit), or the next line raw;
//! - bit 5: the rest is the question's text, sent as `{"question": text}` (explores the text
//!   checks instead of JSON syntax);
//! - bits 6–7: the `random` that picks a personality.
//!
//! Invariants: never panics; a question is non-empty, at most 500 characters, trimmed, free of
//! control and invisible characters and shows something; a refusal is 400, 413 or 415, never 5xx.
#![no_main]

use http::{header, HeaderValue, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use ouija_edge::core::api::{read_question, MAX_BODY_BYTES, MAX_QUESTION_CHARS};
use ouija_edge::core::clean::{is_invisible, is_visible};

const CONTENT_TYPES: [Option<&str>; 7] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some(" Application/JSON ;q=1"),
    Some("text/plain"),
    None,
    Some("application/problem+json"),
    Some("application/json"),
];

fn next_line<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let line = &rest[..end];
    *rest = rest.get(end + 1..).unwrap_or_default();
    line
}

fn insert(request: &mut Request<Vec<u8>>, name: header::HeaderName, value: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(value) {
        request.headers_mut().insert(name, value);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut rest)) = data.split_first() else { return };
    let content_type = match CONTENT_TYPES.get(usize::from(control & 7)) {
        Some(known) => known.map(str::as_bytes),
        None => Some(next_line(&mut rest)),
    };
    let length_choice = (control >> 3) & 3;
    let raw_length = (length_choice == 3).then(|| next_line(&mut rest));
    let wrapped = control & 0x20 != 0;
    let random = u64::from(control >> 6);

    let question_text = String::from_utf8_lossy(rest);
    let body = if wrapped { question_body(&question_text) } else { rest.to_vec() };
    let body_len = body.len();
    let mut request = Request::post("/api/ouija").body(body).expect("static URI and method");
    if let Some(content_type) = content_type {
        insert(&mut request, header::CONTENT_TYPE, content_type);
    }
    match (length_choice, raw_length) {
        (1, _) => insert(&mut request, header::CONTENT_LENGTH, body_len.to_string().as_bytes()),
        (2, _) => insert(&mut request, header::CONTENT_LENGTH, b"8193"),
        (_, Some(raw)) => insert(&mut request, header::CONTENT_LENGTH, raw),
        _ => {}
    }

    match read_question(&request, random) {
        Ok(question) => {
            let text = question.text.as_str();
            assert!(!text.is_empty(), "empty question");
            assert!(text.chars().count() <= MAX_QUESTION_CHARS, "question over {MAX_QUESTION_CHARS} chars");
            assert_eq!(text.trim(), text, "untrimmed question {text:?}");
            assert!(!text.chars().any(char::is_control), "control character in {text:?}");
            assert!(!text.chars().any(is_invisible), "invisible character in {text:?}");
            assert!(text.chars().any(is_visible), "nothing visible in {text:?}");
            assert!(body_len <= MAX_BODY_BYTES, "a {body_len}-byte body was accepted");
            assert!(matches!(control & 7, 0 | 1 | 2 | 6 | 7), "accepted with content type {content_type:?}");
        }
        Err(error) => {
            let status = error.status();
            assert!(
                matches!(
                    status,
                    StatusCode::BAD_REQUEST
                        | StatusCode::PAYLOAD_TOO_LARGE
                        | StatusCode::UNSUPPORTED_MEDIA_TYPE
                ),
                "{status} for {error}"
            );
            // A well-formed question within every limit is never refused.
            let trimmed = question_text.trim();
            let fits = wrapped
                && matches!(control & 7, 0 | 1 | 2 | 6)
                && matches!(length_choice, 0 | 1)
                && body_len <= MAX_BODY_BYTES
                && trimmed.chars().count() <= MAX_QUESTION_CHARS
                && trimmed.chars().any(is_visible);
            assert!(!fits, "a valid question was refused with {status}: {error}");
        }
    }
});

/// `{"question": text}` with `text` escaped as JSON.
fn question_body(text: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "question": text })).expect("a string field always serializes")
}
