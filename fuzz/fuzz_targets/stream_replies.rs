//! Arbitrary bytes, split arbitrarily, into the Groq (SSE) and Ollama (NDJSON) stream decoders.
//!
//! Input: two bytes seeding where the stream is split, then the stream itself.
//!
//! Invariants: never panics; the pieces, the error and the ending are the same whether the stream
//! arrives whole, byte by byte or in the seeded chunks; a text piece is never empty; `Done` comes at
//! most once, last, and the ending is `Complete` exactly when it came; after an error nothing more
//! is decoded and every later push returns the same error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ouija_edge::core::stream_parse::{Ending, GroqDecoder, OllamaDecoder, ParseError, Piece, StreamDecoder};

/// Everything a decoder made of a stream: its pieces, how reading stopped, and its ending.
type Decoded = (Vec<Piece>, Result<(), ParseError>, Ending);

fn decode<'a, D: StreamDecoder>(mut decoder: D, chunks: impl IntoIterator<Item = &'a [u8]>) -> Decoded {
    let mut pieces = Vec::new();
    for chunk in chunks {
        if let Err(error) = decoder.push(chunk, &mut pieces) {
            let before = pieces.len();
            assert_eq!(decoder.push(b"\n\n", &mut pieces), Err(error.clone()), "a failed decoder recovered");
            assert_eq!(pieces.len(), before, "a failed decoder decoded more");
            return (pieces, Err(error), decoder.finish());
        }
    }
    (pieces, Ok(()), decoder.finish())
}

/// `stream` cut into chunks of 1 to 64 bytes, their sizes drawn from `seed` (xorshift).
fn seeded_chunks(seed: u16, stream: &[u8]) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x1_0000;
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (1 + state as usize % 64).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

fn check_invariants((pieces, result, ending): &Decoded) {
    assert!(pieces.iter().all(|piece| *piece != Piece::Text(String::new())), "empty text piece");
    let done = pieces.iter().filter(|piece| **piece == Piece::Done).count();
    assert!(done <= 1, "Done {done} times");
    if done == 1 {
        assert_eq!(pieces.last(), Some(&Piece::Done), "pieces after Done");
        assert_eq!(result, &Ok(()), "an error after Done");
    }
    assert_eq!(*ending == Ending::Complete, done == 1, "ending {ending:?} with Done {done} times");
}

fn check<D: StreamDecoder>(new: fn() -> D, seed: u16, stream: &[u8]) {
    let whole = decode(new(), [stream]);
    check_invariants(&whole);
    assert_eq!(decode(new(), stream.chunks(1)), whole, "byte by byte");
    assert_eq!(decode(new(), seeded_chunks(seed, stream)), whole, "in chunks seeded by {seed}");
}

fuzz_target!(|data: &[u8]| {
    let (seed, stream) = match data {
        [high, low, stream @ ..] => (u16::from_be_bytes([*high, *low]), stream),
        _ => return,
    };
    check(GroqDecoder::new, seed, stream);
    check(OllamaDecoder::new, seed, stream);
});
