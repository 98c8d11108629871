//! Ollama's response as the upstream client reads it (`h1::HeadParser`, `h1::Decoder`): the head
//! parsed from the read buffer, then the body decoded, the bytes arriving in pieces.
//!
//! Invariants: nothing panics; a head is only taken within `MAX_HEAD` bytes and more is never
//! buffered waiting for one; the outcome (an error, or the status, body and whether it ended) is the
//! same whether the bytes come at once or in pieces of any size; a body with a length never
//! yields more than it; no frame is empty.

#![no_main]

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use ollama_proxy::h1::{Decoded, Head, HeadParser, MAX_HEAD, WireError};

/// Status, body, reusable, ended.
type Outcome = (u16, Vec<u8>, bool, bool);

fn read(data: &[u8], method: &Method, piece: usize) -> Result<Option<Outcome>, WireError> {
    let mut buf = BytesMut::new();
    let mut parser = HeadParser::default();
    let mut head: Option<Head> = None;
    let mut declared = None;
    let mut body = Vec::new();
    let mut ended = false;
    for bytes in data.chunks(piece.max(1)) {
        buf.extend_from_slice(bytes);
        if head.is_none() {
            let before = buf.len();
            head = parser.parse(&mut buf, method)?;
            match &head {
                None => assert!(before <= MAX_HEAD, "waiting on {before} bytes"),
                Some(parsed) => {
                    assert!(before - buf.len() <= MAX_HEAD);
                    declared = parsed.body.remaining();
                }
            }
        }
        let Some(parsed) = head.as_mut() else { continue };
        while !ended {
            match parsed.body.decode(&mut buf)? {
                Decoded::Data(data) => {
                    assert!(!data.is_empty());
                    body.extend_from_slice(&data);
                }
                Decoded::End => ended = true,
                Decoded::More => break,
            }
        }
    }
    if let Some(length) = declared {
        assert!(body.len() as u64 <= length);
    }
    Ok(head.map(|h| (h.response.status().as_u16(), body, h.reusable, ended)))
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else { return };
    let method = if control & 1 == 1 { Method::HEAD } else { Method::POST };
    let piece = usize::from(control >> 1) + 1;
    let at_once = read(data, &method, data.len());
    let in_pieces = read(data, &method, piece);
    assert_eq!(at_once.is_ok(), in_pieces.is_ok(), "{at_once:?} vs {in_pieces:?}");
    if let (Ok(a), Ok(b)) = (&at_once, &in_pieces) {
        assert_eq!(a, b);
    }
});
