//! HTTP/1.1 on the upstream hop, without IO: the request head written to Ollama, Ollama's
//! response head parsed (`httparse`, over the connection's one read buffer) and its body decoded
//! (a length, chunked, or until the connection closes).
//!
//! hyper's client (which this replaced) did this through typed messages and a channel between the request and its
//! connection task (~13k instructions of a ~42k request). Here the bytes are read into one
//! buffer, the head is parsed in place, header values and body frames are slices of that buffer,
//! and nothing is sent between tasks. `src/upstream.rs` does the IO.
//!
//! Bounds: a response head of at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields, a chunk-size
//! line of at most [`MAX_CHUNK_LINE`] bytes, trailers of at most [`MAX_TRAILERS`] bytes (they are
//! read and dropped: Ollama sends none and the client's framing is rebuilt anyway). Anything
//! past a bound, or malformed, is an error: the exchange fails (502) or the body breaks.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};

/// Largest response head read: a hostile or broken upstream cannot make the proxy buffer more.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line, extensions included.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer fields after the last chunk.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// What is wrong with what Ollama sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The response head passed [`MAX_HEAD`] bytes.
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The response head does not parse (or has more than [`MAX_HEADERS`] fields).
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    /// A status the proxy cannot take: `101 Switching Protocols` (nothing here upgrades).
    #[error("unexpected status {0}")]
    Status(u16),
    /// `Content-Length` is not a number, or its values differ.
    #[error("invalid content-length")]
    ContentLength,
    /// A `Transfer-Encoding` other than a single `chunked` (`gzip, chunked`, two fields): the
    /// proxy undoes no other coding, and would pass on its bytes unlabelled.
    #[error("unsupported transfer-encoding")]
    TransferCoding,
    /// A chunk-size line or the end of a chunk is malformed, or a line is too long.
    #[error("malformed chunked body")]
    Chunk,
    /// The trailers passed [`MAX_TRAILERS`] bytes or are malformed.
    #[error("malformed or oversized trailers")]
    Trailers,
    /// The connection closed before the message ended.
    #[error("connection closed before the message ended")]
    Closed,
}

/// Writes the request head into `out` (cleared first): request line in origin form, the headers
/// but framing, and `Content-Length` from the body's `body_length` bytes. Without a body only a
/// `POST`, `PUT` or `PATCH` says its length (0): their methods define a meaning for content
/// (RFC 9110 §8.6); a `GET`, `HEAD` or `DELETE` gets none.
pub fn encode_request(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body_length: usize,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // The framing is the body's own: whatever the headers said is not trusted.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if body_length > 0 || *method == Method::POST || *method == Method::PUT || *method == Method::PATCH {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa(body_length, &mut [0; 20]));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written into the end of `digits`.
fn itoa(mut n: usize, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[at..];
        }
    }
}

/// A parsed response head: the response without its body, how the body is framed, and whether
/// the connection can carry another request once the body is read.
#[derive(Debug)]
pub struct Head {
    /// Status, version and headers (values are slices of the read buffer).
    pub response: http::Response<()>,
    /// How to read the body.
    pub body: Decoder,
    /// `false` for HTTP/1.0, `Connection: close`, a body read until close, or both framings.
    pub reusable: bool,
}

/// Parses response heads; keeps the scratch space where the fields of the last head lay, so a
/// connection's parser allocates nothing after its first response (a zeroed array of every
/// possible field was 3k instructions per response: a 3.2 KB `memset`).
///
/// A head that comes in pieces is parsed again only once its end may be there: httparse starts
/// over from the buffer's first byte each time, so parsing on every read would cost a 64 KiB head
/// dripped a byte at a time some 0.6 s of CPU (quadratic), from an upstream that only has to be
/// slow. Instead the bytes that came since the last look are searched for an empty line.
#[derive(Debug, Default)]
pub struct HeadParser {
    /// Name offset and length, value offset and length, per field.
    spans: Vec<[usize; 4]>,
    /// The status code and HTTP/1 minor version of the last head found.
    code: u16,
    minor: u8,
    /// Bytes of the buffer already looked at for the head being read, without finding its end
    /// (0: none yet).
    scanned: usize,
    /// Where that head's first line starts, once known: httparse skips empty lines before it, so
    /// they are no end.
    start: Option<usize>,
    /// How many times httparse was run, for the tests.
    #[cfg(test)]
    attempts: usize,
}

impl HeadParser {
    /// Parses a response head from the front of `buf` and removes it from `buf`; `Ok(None)` while
    /// the head is incomplete (and still under [`MAX_HEAD`]). Interim `1xx` heads are skipped.
    /// `method` is the request's: the answer to `HEAD` has no body.
    ///
    /// A malformed head may be found only once its end (or the bound) is there; [`Self::at_eof`]
    /// says what was wrong with one the connection closed on.
    pub fn parse(&mut self, buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, WireError> {
        loop {
            if !self.may_end(buf) {
                return Ok(None);
            }
            let Some(length) = self.find(buf)? else { return Ok(None) };
            let head = buf.split_to(length).freeze();
            if let Some(head) = self.build(&head, method)? {
                return Ok(Some(head));
            }
        }
    }

    /// Why a head that is not all there when the connection closes cannot be taken: malformed, or
    /// cut short ([`WireError::Closed`]).
    pub fn at_eof(&mut self, buf: &[u8]) -> WireError {
        match self.find(buf) {
            Err(error) => error,
            Ok(_) => WireError::Closed,
        }
    }

    /// Whether httparse is to look at `buf`: the first time for a head, past [`MAX_HEAD`], or when
    /// the bytes that came since the last look hold an empty line (`\n\r\n` or `\n\n`) after the
    /// head's first line starts. A complete head ends with one; any earlier one either is the end
    /// or makes the head malformed (header lines hold no bare line ends).
    fn may_end(&mut self, buf: &[u8]) -> bool {
        if buf.is_empty() {
            return false;
        }
        if self.scanned == 0 || buf.len() > MAX_HEAD {
            return true;
        }
        let scanned = std::mem::replace(&mut self.scanned, buf.len());
        let start = match self.start {
            Some(start) => start,
            None => match first_line(buf, scanned) {
                Some(start) => *self.start.insert(start),
                None => return false,
            },
        };
        // An end may straddle the last look: the bytes just before it are searched again.
        let window = &buf[start.max(scanned.saturating_sub(2))..];
        window.windows(2).any(|pair| pair == b"\n\n") || window.windows(3).any(|three| three == b"\n\r\n")
    }

    /// The length of the head at the front of `buf`, when it is all there; its fields' places go
    /// to `spans`.
    fn find(&mut self, buf: &[u8]) -> Result<Option<usize>, WireError> {
        #[cfg(test)]
        {
            self.attempts += 1;
        }
        let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let status = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut parsed, buf, &mut fields)
            .map_err(WireError::Head)?;
        let httparse::Status::Complete(length) = status else {
            if buf.len() > MAX_HEAD {
                return Err(WireError::HeadTooLarge);
            }
            // Looked at up to here: the next look waits for an end in what comes after.
            self.scanned = buf.len();
            self.start = first_line(buf, 0);
            return Ok(None);
        };
        (self.scanned, self.start) = (0, None);
        if length > MAX_HEAD {
            return Err(WireError::HeadTooLarge);
        }
        // httparse gives a three-digit code and a version of 0 or 1 in a complete head.
        (self.code, self.minor) = (parsed.code.unwrap_or_default(), parsed.version.unwrap_or(1));
        // Where each field lies, so the values can be slices of the head once it is split off the
        // buffer (no copies).
        let start = buf.as_ptr() as usize;
        self.spans.clear();
        self.spans.extend(parsed.headers.iter().map(|field| {
            let (name, value) = (field.name.as_bytes(), field.value);
            [name.as_ptr() as usize - start, name.len(), value.as_ptr() as usize - start, value.len()]
        }));
        Ok(Some(length))
    }

    /// The response of the complete `head` found last; `None` for an interim (`1xx`) one.
    fn build(&self, head: &Bytes, method: &Method) -> Result<Option<Head>, WireError> {
        let code = self.code;
        if (100..200).contains(&code) {
            return if code == 101 { Err(WireError::Status(code)) } else { Ok(None) };
        }
        let version = if self.minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
        let status = StatusCode::from_u16(code).map_err(|_| WireError::Status(code))?;
        let no_body =
            *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let mut headers = HeaderMap::with_capacity(self.spans.len());
        let mut framing = Framing::default();
        for &[name_at, name_length, value_at, value_length] in &self.spans {
            let name = HeaderName::from_bytes(&head[name_at..name_at + name_length])
                .map_err(|_| WireError::Head(httparse::Error::HeaderName))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_length))
                .map_err(|_| WireError::Head(httparse::Error::HeaderValue))?;
            // A body's framing is its decoder's, not its headers': the proxy frames it again for
            // the client (and would remove them: a hashed removal each). A response without a
            // body keeps them, for the proxy to decide (a reply to HEAD keeps its length).
            if framing.note(&name, &value)? && !no_body {
                continue;
            }
            headers.append(name, value);
        }
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        let (body, framed) = framing.decoder(no_body)?;
        let reusable = version == Version::HTTP_11 && !framing.close && framed;
        Ok(Some(Head { response, body, reusable }))
    }
}

/// What the framing headers of a response say.
#[derive(Default)]
struct Framing {
    /// Some `Content-Length`, all its values equal.
    length: Option<u64>,
    /// How many `Transfer-Encoding` fields there are, and whether the last says just `chunked`.
    codings: usize,
    chunked: bool,
    /// `Connection: close`.
    close: bool,
}

impl Framing {
    /// Takes note of one field; whether it is a framing one (`Content-Length`,
    /// `Transfer-Encoding`).
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<bool, WireError> {
        if name == header::CONTENT_LENGTH {
            for item in value.as_bytes().split(|&b| b == b',') {
                let length = parse_length(item.trim_ascii()).ok_or(WireError::ContentLength)?;
                if self.length.is_some_and(|seen| seen != length) {
                    return Err(WireError::ContentLength);
                }
                self.length = Some(length);
            }
        } else if name == header::TRANSFER_ENCODING {
            self.codings += 1;
            self.chunked = value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else {
            if name == header::CONNECTION {
                self.close |= value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// The body's decoder, and whether its end is known without the connection closing (and the
    /// framing unambiguous, RFC 9112 §6.3: with both headers the coding wins, but the connection
    /// is not reused). A transfer coding other than one `chunked` is refused, as it is on
    /// requests (501 there): a body that has none (a reply to `HEAD`, a 204, a 304) ignores it.
    fn decoder(&self, no_body: bool) -> Result<(Decoder, bool), WireError> {
        Ok(match (no_body, self.codings, self.length) {
            (true, _, _) | (false, 0, Some(0)) => (Decoder::Done, true),
            (false, 0, None) => (Decoder::Close, false),
            (false, 0, Some(length)) => (Decoder::Length(length), true),
            (false, 1, length) if self.chunked => (Decoder::Chunked(Chunk::Size), length.is_none()),
            (false, _, _) => return Err(WireError::TransferCoding),
        })
    }
}

/// Where the first byte that is not a line end lies in `buf`, from `from` on.
fn first_line(buf: &[u8], from: usize) -> Option<usize> {
    buf[from..].iter().position(|&b| b != b'\r' && b != b'\n').map(|at| from + at)
}

/// A `Content-Length` value: plain decimal digits that fit a `u64`.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() { n.checked_mul(10)?.checked_add(u64::from(d - b'0')) } else { None }
    })
}

/// Decodes a response body out of the connection's read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes are still to come.
    Length(u64),
    /// A chunked body, at this point of a chunk.
    Chunked(Chunk),
    /// Everything until the connection closes.
    Close,
    /// The body has ended.
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields so far, in bytes, until the empty line.
    Trailers(usize),
}

/// What decoding the buffer gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A piece of the body (never empty).
    Data(Bytes),
    /// The body has ended.
    End,
    /// More bytes are needed.
    More,
}

impl Decoder {
    /// Takes the next piece of the body out of `buf`: everything of the body that is there, up to
    /// the end of the current chunk.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match self {
                Self::Done | Self::Length(0) => {
                    *self = Self::Done;
                    return Ok(Decoded::End);
                }
                Self::Length(left) => return Ok(take(buf, left)),
                Self::Close if buf.is_empty() => return Ok(Decoded::More),
                Self::Close => return Ok(Decoded::Data(buf.split().freeze())),
                Self::Chunked(chunk) => match chunk {
                    Chunk::Size => {
                        let line = match line(buf, MAX_CHUNK_LINE) {
                            Line::Complete(line) => line,
                            Line::Partial => return Ok(Decoded::More),
                            Line::Bad => return Err(WireError::Chunk),
                        };
                        let size = chunk_size(&buf[..line])?;
                        buf.advance(line + 2);
                        *chunk = if size == 0 { Chunk::Trailers(0) } else { Chunk::Data(size) };
                    }
                    Chunk::Data(left) => {
                        let data = take(buf, left);
                        if *left == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        return Ok(data);
                    }
                    Chunk::DataEnd => match buf.get(..2) {
                        Some(b"\r\n") => {
                            buf.advance(2);
                            *chunk = Chunk::Size;
                        }
                        Some(_) => return Err(WireError::Chunk),
                        None if buf.first().is_some_and(|&b| b != b'\r') => return Err(WireError::Chunk),
                        None => return Ok(Decoded::More),
                    },
                    Chunk::Trailers(seen) => {
                        let room = MAX_TRAILERS.saturating_sub(*seen);
                        let line = match line(buf, room) {
                            Line::Complete(line) => line,
                            Line::Partial => return Ok(Decoded::More),
                            Line::Bad => return Err(WireError::Trailers),
                        };
                        buf.advance(line + 2);
                        if line == 0 {
                            *self = Self::Done;
                            return Ok(Decoded::End);
                        }
                        *seen += line + 2;
                    }
                },
            }
        }
    }

    /// The connection closed: the end of a body read until close, an error for any other that
    /// has not ended.
    pub fn at_eof(&mut self) -> Result<(), WireError> {
        match self {
            Self::Close | Self::Done => {
                *self = Self::Done;
                Ok(())
            }
            _ => Err(WireError::Closed),
        }
    }

    /// Whether the body has ended (nothing more to read for it).
    #[must_use]
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done | Self::Length(0))
    }

    /// Bytes still to come, when known.
    #[must_use]
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Self::Length(left) => Some(*left),
            Self::Done => Some(0),
            _ => None,
        }
    }
}

/// Up to `left` bytes of `buf`, counted off `left`.
fn take(buf: &mut BytesMut, left: &mut u64) -> Decoded {
    if buf.is_empty() {
        return Decoded::More;
    }
    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
    *left -= n as u64;
    Decoded::Data(buf.split_to(n).freeze())
}

/// A line at the front of a buffer.
enum Line {
    /// It ends with CRLF after this many bytes.
    Complete(usize),
    /// Its end has not arrived yet (and it is still under its bound).
    Partial,
    /// It is longer than its bound, or has a bare CR or LF.
    Bad,
}

/// The line at the front of `buf`, of at most `max` bytes before its CRLF.
fn line(buf: &[u8], max: usize) -> Line {
    let window = &buf[..buf.len().min(max + 2)];
    let open = window.len() < max + 2;
    match window.iter().position(|&b| b == b'\n' || b == b'\r') {
        Some(at) if window.get(at..at + 2) == Some(b"\r\n") => Line::Complete(at),
        Some(at) if window[at] == b'\r' && at + 1 == window.len() && open => Line::Partial,
        None if open => Line::Partial,
        Some(_) | None => Line::Bad,
    }
}

/// A chunk-size line without its CRLF: hex digits (at most 16), optional blanks, optional
/// `;extensions` (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(WireError::Chunk);
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(WireError::Chunk);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| WireError::Chunk)?;
    u64::from_str_radix(text, 16).map_err(|_| WireError::Chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a response came to: its status, body, whether its connection is reusable, and
    /// whether the body ended (rather than waiting for more).
    #[derive(Debug, PartialEq, Eq)]
    struct Read {
        status: u16,
        body: Vec<u8>,
        reusable: bool,
        ended: bool,
    }

    /// Feeds `pieces` one after another into one buffer, as reads would, parsing the head and then
    /// decoding the body as far as each piece allows; `eof` closes the connection after them.
    fn read(pieces: &[&[u8]], method: &Method, eof: bool) -> Result<Option<Read>, WireError> {
        let mut buf = BytesMut::new();
        let mut parser = HeadParser::default();
        let mut head: Option<Head> = None;
        let mut body = Vec::new();
        let mut ended = false;
        for piece in pieces {
            buf.extend_from_slice(piece);
            if head.is_none() {
                head = parser.parse(&mut buf, method)?;
            }
            let Some(head) = head.as_mut() else { continue };
            loop {
                match head.body.decode(&mut buf)? {
                    Decoded::Data(data) => {
                        assert!(!data.is_empty(), "an empty frame");
                        body.extend_from_slice(&data);
                    }
                    Decoded::End => {
                        ended = true;
                        break;
                    }
                    Decoded::More => break,
                }
            }
        }
        let Some(mut head) = head else {
            // What the upstream client says of a head the connection closed on.
            return if eof { Err(parser.at_eof(&buf)) } else { Ok(None) };
        };
        if eof && !ended {
            head.body.at_eof()?;
            ended = true;
        }
        let status = head.response.status().as_u16();
        Ok(Some(Read { status, body, reusable: head.reusable, ended }))
    }

    fn whole(bytes: &[u8]) -> Result<Option<Read>, WireError> {
        read(&[bytes], &Method::POST, false)
    }

    #[expect(clippy::unnecessary_wraps, reason = "compared with what `read` returns")]
    fn ok(status: u16, body: &[u8], reusable: bool) -> Result<Option<Read>, WireError> {
        Ok(Some(Read { status, body: body.to_vec(), reusable, ended: true }))
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n\
        6;name=value\r\n{\"a\":1\r\n3 \r\n}\r\n\r\n1A ; x=\"q;\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\nX-More: 2\r\n\r\n";
    const CHUNKED_BODY: &[u8] = b"{\"a\":1}\r\nabcdefghijklmnopqrstuvwxyz";

    #[test]
    fn a_request_head_has_origin_form_its_headers_and_the_bodys_own_length() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("ollama:11434"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut out = b"left over".to_vec();
        let uri = Uri::from_static("/api/chat?x=1");
        encode_request(&mut out, &Method::POST, &uri, &headers, 12);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /api/chat?x=1 HTTP/1.1\r\nhost: ollama:11434\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n"
        );
        // No body: a length only for a method whose content means something (0 for an empty POST).
        let mut empty = HeaderMap::new();
        empty.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        encode_request(&mut out, &Method::GET, &Uri::from_static("/api/tags"), &empty, 0);
        assert_eq!(out, b"GET /api/tags HTTP/1.1\r\n\r\n");
        encode_request(&mut out, &Method::POST, &Uri::from_static("/api/x"), &HeaderMap::new(), 0);
        assert_eq!(out, b"POST /api/x HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(usize::MAX, &mut [0; 20]), usize::MAX.to_string().as_bytes());
    }

    #[test]
    fn a_length_body_is_read_and_its_head_kept_with_values_as_sent() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Odd: a\x80b\t c\r\n\r\nhello"[..],
        );
        let head = HeadParser::default()
            .parse(&mut buf, &Method::POST)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a head"));
        assert_eq!(head.response.status(), StatusCode::CREATED);
        assert_eq!(head.response.version(), Version::HTTP_11);
        assert_eq!(head.response.headers()["x-odd"].as_bytes(), b"a\x80b\t c");
        assert_eq!(head.body, Decoder::Length(5));
        assert!(head.reusable);
        assert_eq!(&buf[..], b"hello", "the head is taken off the buffer, the body left");
        assert!(head.response.headers().get(header::CONTENT_LENGTH).is_none(), "the decoder has the framing");
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..]);
        let head = HeadParser::default()
            .parse(&mut buf, &Method::HEAD)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a head"));
        assert_eq!(head.response.headers()[header::CONTENT_LENGTH], "5", "a reply to HEAD keeps its length");
        assert_eq!(whole(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), ok(200, b"hello", true));
        assert_eq!(whole(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), ok(200, b"", true));
        assert_eq!(
            whole(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello"),
            ok(200, b"hello", true)
        );
    }

    #[test]
    fn a_chunked_body_with_extensions_and_trailers_reads_the_same_split_at_every_byte() {
        let expected = ok(200, CHUNKED_BODY, true);
        assert_eq!(whole(CHUNKED), expected);
        for at in 0..=CHUNKED.len() {
            assert_eq!(
                read(&[&CHUNKED[..at], &CHUNKED[at..]], &Method::POST, false),
                expected,
                "split at {at}"
            );
        }
        let bytes: Vec<&[u8]> = CHUNKED.chunks(1).collect();
        assert_eq!(read(&bytes, &Method::POST, false), expected, "a byte at a time");
        let mut length = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec();
        length.extend_from_slice(b"0123456789");
        let bytes: Vec<&[u8]> = length.chunks(1).collect();
        assert_eq!(read(&bytes, &Method::POST, false), ok(200, b"0123456789", true));
    }

    #[test]
    fn a_truncated_body_or_head_is_an_error_at_eof_and_a_close_delimited_one_ends_there() {
        let cut = &CHUNKED[..CHUNKED.len() - 3];
        assert_eq!(read(&[cut], &Method::POST, true), Err(WireError::Closed));
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";
        assert_eq!(read(&[short], &Method::POST, true), Err(WireError::Closed));
        assert_eq!(read(&[b"HTTP/1.1 200 OK\r\nContent-Le"], &Method::POST, true), Err(WireError::Closed));
        assert_eq!(read(&[b"HTTP/1.1 200 OK\r\nContent-Le"], &Method::POST, false), Ok(None));
        // Malformed in a piece that holds no end: only the close finds it.
        let malformed: [&[u8]; 2] = [b"HTTP/1.1 200 OK\r\n", b"Bad Name: x\r\n"];
        assert_eq!(read(&malformed, &Method::POST, false), Ok(None));
        assert_eq!(read(&malformed, &Method::POST, true), Err(WireError::Head(httparse::Error::HeaderName)));
        // No framing: the body is everything until the connection closes; no reuse.
        let open = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ";
        assert_eq!(read(&[open, b"it"], &Method::POST, true), ok(200, b"all of it", false));
    }

    #[test]
    fn framing_and_reuse_follow_rfc_9112() {
        // A reply to HEAD, a 204 and a 304 have no body whatever they say.
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 120\r\n\r\n";
        assert_eq!(read(&[head], &Method::HEAD, false), ok(200, b"", true));
        assert_eq!(whole(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"), ok(204, b"", true));
        assert_eq!(
            whole(b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ok(304, b"", true)
        );
        // Both framings: the coding wins and the connection is not reused.
        let both =
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        assert_eq!(whole(both), ok(200, b"hi", false));
        assert_eq!(
            whole(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx"),
            ok(200, b"x", false)
        );
        assert_eq!(whole(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"), ok(200, b"x", false));
        // Interim answers are skipped; a switch of protocols is refused.
        assert_eq!(
            whole(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"),
            ok(200, b"x", true)
        );
        assert_eq!(
            whole(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
            Err(WireError::Status(101))
        );
    }

    #[test]
    fn a_transfer_coding_other_than_one_chunked_is_an_error() {
        for codings in [
            "gzip",
            "gzip, chunked",
            "chunked, chunked",
            "chunked\r\nTransfer-Encoding: chunked",
            "gzip\r\nTransfer-Encoding: chunked",
            "identity",
            "",
        ] {
            let response = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {codings}\r\n\r\n0\r\n\r\n");
            assert_eq!(whole(response.as_bytes()), Err(WireError::TransferCoding), "{codings:?}");
        }
        let single = b"HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked \r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        assert_eq!(whole(single), ok(200, b"hi", true));
        // No body, nothing to decode: a reply to HEAD may carry the coding a GET would have had.
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(read(&[head], &Method::HEAD, false), ok(200, b"", true));
    }

    #[test]
    fn bad_lengths_and_heads_are_errors() {
        for length in ["x", "-1", "+5", "5 5", "", "5, 6", "99999999999999999999999"] {
            let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
            assert_eq!(whole(response.as_bytes()), Err(WireError::ContentLength), "{length:?}");
        }
        assert_eq!(
            whole(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(WireError::ContentLength)
        );
        assert!(matches!(whole(b"HTTP/1.1 2000 OK\r\n\r\n"), Err(WireError::Head(_))));
        assert!(matches!(whole(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(WireError::Head(_))));
        assert!(matches!(whole(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"), Err(WireError::Head(_))));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(whole(&many), Err(WireError::Head(httparse::Error::TooManyHeaders)));
    }

    #[test]
    fn a_head_over_64_kib_is_refused_complete_or_not() {
        let mut big = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        big.resize(MAX_HEAD + 1, b'a');
        assert_eq!(whole(&big), Err(WireError::HeadTooLarge), "incomplete");
        big.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(whole(&big), Err(WireError::HeadTooLarge), "complete");
        let mut fits = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        fits.resize(MAX_HEAD - 24, b'a');
        fits.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        assert!(fits.len() <= MAX_HEAD);
        assert_eq!(whole(&fits), ok(200, b"", true));
    }

    /// Feeds `bytes` to a parser one at a time; what it gave, the bytes left, and how many times
    /// httparse ran.
    fn drip(bytes: &[u8]) -> (Result<Option<u16>, WireError>, usize, usize) {
        let mut parser = HeadParser::default();
        let mut buf = BytesMut::new();
        for &byte in bytes {
            buf.extend_from_slice(&[byte]);
            match parser.parse(&mut buf, &Method::GET) {
                Ok(None) => {}
                done => {
                    let status = done.map(|head| head.map(|head| head.response.status().as_u16()));
                    return (status, buf.len(), parser.attempts);
                }
            }
        }
        (Ok(None), buf.len(), parser.attempts)
    }

    #[test]
    fn a_head_dripped_a_byte_at_a_time_is_parsed_a_bounded_number_of_times() {
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        for n in 0..900 {
            big.extend_from_slice(format!("X-Pad-{n}: {}\r\n", "a".repeat(55)).as_bytes());
        }
        big.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        assert!(big.len() > 60_000 && big.len() < MAX_HEAD, "{}", big.len());
        // More fields than allowed, but the same answer as at once: parsed once the end came.
        let at_once = whole(&big).map(|read| read.map(|read| read.status));
        assert_eq!(at_once, Err(WireError::Head(httparse::Error::TooManyHeaders)));
        let (dripped, _, attempts) = drip(&big);
        assert_eq!(dripped, at_once);
        assert!(attempts <= 2, "httparse ran {attempts} times");
        // Within the field limit; bare line ends too.
        let mut fine = b"\n\nHTTP/1.1 200 OK\n".to_vec();
        for n in 0..90 {
            fine.extend_from_slice(format!("X-Pad-{n}: {}\n", "a".repeat(700)).as_bytes());
        }
        fine.extend_from_slice(b"\nbody");
        let (dripped, left, attempts) = drip(&fine);
        assert_eq!((dripped, left), (Ok(Some(200)), 0));
        assert!(attempts <= 2, "httparse ran {attempts} times");
        // One that never ends: parsed at the bound, once more.
        let mut endless = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        endless.resize(MAX_HEAD + 1, b'a');
        let (dripped, _, attempts) = drip(&endless);
        assert_eq!(dripped, Err(WireError::HeadTooLarge));
        assert!(attempts <= 2, "httparse ran {attempts} times");
        // Empty lines before a head are no end; an interim head costs two looks of its own.
        let interim = [&b"\r\n\r\n\nHTTP/1.1 100 Continue\r\n\r\n"[..], &big].concat();
        let (dripped, _, attempts) = drip(&interim);
        assert_eq!(dripped, Err(WireError::Head(httparse::Error::TooManyHeaders)));
        assert!(attempts <= 4, "httparse ran {attempts} times");
    }

    #[test]
    fn a_malformed_head_is_found_at_its_end_or_at_eof() {
        let bad = b"HTTP/1.1 200 OK\r\nBad Name: x\r\nX: y\r\n\r\n";
        let (dripped, _, _) = drip(bad);
        assert_eq!(dripped, Err(WireError::Head(httparse::Error::HeaderName)));
        // Never ended: the connection's end says what was wrong.
        let mut parser = HeadParser::default();
        let mut buf = BytesMut::new();
        for &byte in &bad[..30] {
            buf.extend_from_slice(&[byte]);
            assert_eq!(parser.parse(&mut buf, &Method::GET).map(|h| h.is_some()), Ok(false));
        }
        assert_eq!(parser.at_eof(&buf), WireError::Head(httparse::Error::HeaderName));
        assert_eq!(HeadParser::default().at_eof(b"HTTP/1.1 200 OK\r\nX: "), WireError::Closed);
    }

    #[test]
    fn malformed_chunks_are_errors() {
        let chunked = |body: &[u8]| {
            let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            response.extend_from_slice(body);
            whole(&response)
        };
        for bad in [
            &b"zz\r\nhi\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"; ext\r\n",
            b"10000000000000000\r\n",
            b"2 x\r\nhi\r\n",
            b"2\nhi\r\n0\r\n\r\n",
            b"2\r\r\nhi",
            b"2\r\nhiXX0\r\n\r\n",
            b"2\r\nhi\n0\r\n\r\n",
            b"-2\r\nhi\r\n",
        ] {
            assert_eq!(chunked(bad), Err(WireError::Chunk), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long_line = b"2;".to_vec();
        long_line.resize(MAX_CHUNK_LINE + 3, b'x');
        assert_eq!(chunked(&long_line), Err(WireError::Chunk), "a size line past its bound");
        long_line.truncate(MAX_CHUNK_LINE);
        long_line.extend_from_slice(b"\r\nhi\r\n0\r\n\r\n");
        assert_eq!(chunked(&long_line), ok(200, b"hi", true), "a long extension within the bound");
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() <= MAX_TRAILERS + 8 {
            trailers.extend_from_slice(b"X-T: 1234567890\r\n");
        }
        assert_eq!(chunked(&trailers), Err(WireError::Trailers));
        // The largest size that fits 16 hex digits is taken (and the body then waits for it).
        assert_eq!(chunked(b"FFFFFFFFFFFFFFFF\r\nab").map(|r| r.map(|r| r.ended)), Ok(Some(false)));
    }
}
