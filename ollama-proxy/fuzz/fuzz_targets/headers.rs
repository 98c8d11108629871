//! The headers the proxy rebuilds (`proxy::upstream_headers`, `proxy::response_headers`) and its
//! transfer-coding decision (`proxy::transfer_coding_ok`), on header blocks parsed from the input.
//!
//! Invariants: Ollama never gets the client's framing (`h1::encode_request` writes the body's),
//! `Expect`, key, a hop-by-hop header or a header its `Connection`
//! names, and nothing is added (`Host` is replaced per box by `upstream_request`, unit-tested
//! there); the client never gets Ollama's
//! `Transfer-Encoding`, nor a `Content-Length` beside one; a transfer coding is accepted only when
//! it is one `chunked`.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use ollama_proxy::proxy::{response_headers, transfer_coding_ok, upstream_headers};

fn parse(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii()))
        else {
            continue;
        };
        headers.append(name, value);
    }
    headers
}

fuzz_target!(|data: &[u8]| {
    let received = parse(data);
    let named: Vec<HeaderName> = received
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();

    let mut upstream = received.clone();
    upstream_headers(&mut upstream);
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::EXPECT,
        header::AUTHORIZATION,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
    ]
    .iter()
    .chain(&named)
    {
        assert!(!upstream.contains_key(name), "{name} reached Ollama from {received:?}");
    }
    for (name, value) in &upstream {
        assert!(received.get_all(name).iter().any(|v| v == value), "{name} was added");
    }

    for keep_length in [false, true] {
        let mut reply = received.clone();
        response_headers(&mut reply, keep_length);
        assert!(!reply.contains_key(header::TRANSFER_ENCODING));
        if received.contains_key(header::TRANSFER_ENCODING) || !keep_length {
            assert!(!reply.contains_key(header::CONTENT_LENGTH));
        }
    }

    if transfer_coding_ok(&received) {
        let codings: Vec<&HeaderValue> = received.get_all(header::TRANSFER_ENCODING).iter().collect();
        assert!(
            codings.is_empty()
                || (codings.len() == 1
                    && codings[0].as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked")),
            "accepted {codings:?}"
        );
    }
});
