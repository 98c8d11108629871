//! Ollama's response as the upstream client reads it (`h1::HeadParser`, `h1::Decoder`): the head
//! parsed from the read buffer, then the body decoded, the bytes arriving in pieces, then the
//! connection closing.
//!
//! Invariants: nothing panics; a head is only taken within `MAX_HEAD` bytes and more is never
//! buffered waiting for one; the outcome (the error and its kind, or the status, body, where the
//! message ended, the bytes left after it and whether the connection could carry another request)
//! is the same whether the bytes come at once or in pieces of any size; the buffer always holds
//! exactly the bytes that follow what was taken, so what is left after a message is exactly what
//! came after it; a connection with anything left, or whose body ended only because it closed, is
//! never reused; a body with a length never yields more than it; no frame is empty.

#![no_main]

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use ollama_proxy::h1::{Decoded, Head, HeadParser, MAX_HEAD, WireError};

/// Status, body, where the message ended, the bytes left after it, and whether the connection
/// goes back to the pool (as `PooledBody::finish` decides).
type Outcome = (u16, Vec<u8>, usize, Vec<u8>, bool);

/// Reads `data` arriving in pieces of `piece` bytes, then the connection's end.
fn read(data: &[u8], method: &Method, piece: usize) -> Result<Outcome, WireError> {
    let mut buf = BytesMut::new();
    let mut parser = HeadParser::default();
    let mut head: Option<Head> = None;
    let mut declared = None;
    let mut body = Vec::new();
    let mut ended = None;
    let mut fed = 0;
    for bytes in data.chunks(piece.max(1)) {
        buf.extend_from_slice(bytes);
        fed += bytes.len();
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
        assert_eq!(&buf[..], &data[fed - buf.len()..fed], "the buffer is what follows what was taken");
        let Some(parsed) = head.as_mut() else { continue };
        while ended.is_none() {
            match parsed.body.decode(&mut buf)? {
                Decoded::Data(data) => {
                    assert!(!data.is_empty());
                    body.extend_from_slice(&data);
                }
                Decoded::End => ended = Some(fed - buf.len()),
                Decoded::More => break,
            }
        }
        assert_eq!(&buf[..], &data[fed - buf.len()..fed], "the buffer is what follows what was taken");
    }
    // The connection closes.
    let Some(mut parsed) = head else { return Err(parser.at_eof(&buf)) };
    let (end, at_eof) = match ended {
        Some(end) => (end, false),
        None => {
            parsed.body.at_eof()?;
            assert!(parsed.body.is_done());
            (data.len() - buf.len(), true)
        }
    };
    if let Some(length) = declared {
        assert!(body.len() as u64 <= length);
    }
    let left = buf.to_vec();
    assert_eq!(left, &data[end..], "what is left is exactly what came after the message");
    let reusable = parsed.reusable && left.is_empty();
    assert!(!(at_eof && parsed.reusable), "a body that ends at the connection's end leaves nothing to reuse");
    Ok((parsed.response.status().as_u16(), body, end, left, reusable))
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else { return };
    let method = if control & 1 == 1 { Method::HEAD } else { Method::POST };
    let piece = usize::from(control >> 1) + 1;
    let at_once = read(data, &method, data.len());
    let in_pieces = read(data, &method, piece);
    assert_eq!(at_once, in_pieces);
});
