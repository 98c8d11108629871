//! Incremental parsers for the providers' streamed replies (#12): Groq's OpenAI-compatible
//! server-sent events and Ollama's `/api/chat` NDJSON, fed bytes as they arrive, split anywhere.
//!
//! Pure and bounded: no IO, no clock, and a line (or an SSE event's data) longer than
//! [`MAX_MESSAGE_BYTES`] is refused rather than buffered. Each decoder tells at the end whether the
//! provider's own end marker was read, so a cut stream never passes for a clean close.

use serde::Deserialize;
use serde_json::Value;

/// Longest line, or joined `data` of one SSE event, accepted (bytes, line ending excluded). A real
/// streamed chunk is a few hundred bytes; this bounds what a broken or hostile upstream can make us
/// hold.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// What a provider's stream said, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The next piece of the answer's text; never empty.
    Text(String),
    /// The provider's end marker: reported once, last, and nothing after it is read.
    Done,
}

/// Why a stream cannot be read any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line, or an SSE event's data, longer than [`MAX_MESSAGE_BYTES`].
    #[error("stream line longer than {MAX_MESSAGE_BYTES} bytes")]
    TooLong,
    /// Bytes that are not the provider's stream format.
    #[error("malformed stream: {0}")]
    Malformed(String),
    /// The provider reported an error in the stream itself.
    #[error("upstream error: {0}")]
    Upstream(String),
}

/// How a stream ended, told once its bytes stop coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The provider's end marker was read.
    Complete,
    /// The bytes stopped, or could not be read, before the end marker.
    Cut,
}

/// A provider's streamed reply, decoded as its bytes arrive.
pub trait StreamDecoder {
    /// Decodes the next bytes, appending what they complete to `out`. Pieces found before an error
    /// are appended before it is returned, so no text received is lost; after an error every push
    /// returns it again, and after [`Piece::Done`] bytes are ignored.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Piece>) -> Result<(), ParseError>;

    /// How the stream ended: [`Ending::Complete`] only if [`Piece::Done`] was reported. An
    /// unfinished last line or event is dropped, as the SSE spec says, and counts as cut. (Behind a
    /// `dyn StreamDecoder`, whether [`Piece::Done`] came says the same.)
    #[must_use]
    fn finish(self) -> Ending
    where
        Self: Sized;
}

/// Groq's `stream: true` reply: `text/event-stream` events whose `data` is an `OpenAI`
/// `chat.completion.chunk` (text in `choices[0].delta.content`), ended by `data: [DONE]`.
#[derive(Debug)]
pub struct GroqDecoder {
    lines: Lines,
    event: SseEvent,
    status: Status,
}

/// Ollama's `/api/chat` reply with `stream: true`: one JSON object a line (text in
/// `message.content`), the last with `"done": true`.
#[derive(Debug)]
pub struct OllamaDecoder {
    lines: Lines,
    status: Status,
}

impl GroqDecoder {
    /// A decoder at the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Self { lines: Lines::new(true), event: SseEvent::default(), status: Status::Reading }
    }
}

impl Default for GroqDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder for GroqDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Piece>) -> Result<(), ParseError> {
        let event = &mut self.event;
        push_lines(&mut self.lines, &mut self.status, bytes, out, |line, out| event.line(line, out))
    }

    fn finish(self) -> Ending {
        self.status.ending()
    }
}

impl OllamaDecoder {
    /// A decoder at the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Self { lines: Lines::new(false), status: Status::Reading }
    }
}

impl Default for OllamaDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder for OllamaDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Piece>) -> Result<(), ParseError> {
        push_lines(&mut self.lines, &mut self.status, bytes, out, ollama_line)
    }

    fn finish(self) -> Ending {
        self.status.ending()
    }
}

/// Where a decoder is in its stream.
#[derive(Debug)]
enum Status {
    Reading,
    Done,
    Failed(ParseError),
}

impl Status {
    fn ending(&self) -> Ending {
        match self {
            Status::Done => Ending::Complete,
            Status::Reading | Status::Failed(_) => Ending::Cut,
        }
    }
}

/// Feeds `bytes` line by line to `on_line` (which appends text and says whether the end marker
/// was read), keeping the decoder's status.
fn push_lines(
    lines: &mut Lines,
    status: &mut Status,
    bytes: &[u8],
    out: &mut Vec<Piece>,
    mut on_line: impl FnMut(&[u8], &mut Vec<Piece>) -> Result<bool, ParseError>,
) -> Result<(), ParseError> {
    match status {
        Status::Reading => {}
        Status::Done => return Ok(()),
        Status::Failed(error) => return Err(error.clone()),
    }
    let mut rest = bytes;
    let read = loop {
        match lines.next(&mut rest) {
            Ok(Some(line)) => match on_line(line, out) {
                Ok(false) => {}
                Ok(true) => break Ok(true),
                Err(error) => break Err(error),
            },
            Ok(None) => break Ok(false),
            Err(error) => break Err(error),
        }
    };
    match read {
        Ok(true) => {
            out.push(Piece::Done);
            *status = Status::Done;
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(error) => {
            *status = Status::Failed(error.clone());
            Err(error)
        }
    }
}

/// Splits bytes into lines across pushes, holding at most [`MAX_MESSAGE_BYTES`] of an unfinished one.
#[derive(Debug)]
struct Lines {
    /// The unfinished line so far, or the last line handed out when `handed_out`.
    partial: Vec<u8>,
    handed_out: bool,
    /// Whether a lone `\r` ends a line too (SSE), or only `\n` does (NDJSON, where a `\r` before it
    /// is JSON whitespace).
    cr_ends_line: bool,
    /// The last line ended with `\r`: a `\n` right after it, even in the next push, belongs to it.
    after_cr: bool,
}

impl Lines {
    fn new(cr_ends_line: bool) -> Self {
        Self { partial: Vec::new(), handed_out: false, cr_ends_line, after_cr: false }
    }

    /// The next whole line of `rest` (its ending removed), advancing `rest` past it; `None` once
    /// `rest` is used up, its unfinished tail kept for the next push.
    fn next<'s, 'i: 's>(&'s mut self, rest: &mut &'i [u8]) -> Result<Option<&'s [u8]>, ParseError> {
        if self.handed_out {
            self.partial.clear();
            self.handed_out = false;
        }
        let mut input: &'i [u8] = rest;
        if self.after_cr
            && let Some(&first) = input.first()
        {
            self.after_cr = false;
            if first == b'\n' {
                input = &input[1..];
            }
        }
        let cr_ends_line = self.cr_ends_line;
        let end = input.iter().position(|&b| b == b'\n' || (cr_ends_line && b == b'\r'));
        let Some(end) = end else {
            *rest = &[];
            if self.partial.len() + input.len() > MAX_MESSAGE_BYTES {
                return Err(ParseError::TooLong);
            }
            self.partial.extend_from_slice(input);
            return Ok(None);
        };
        let (line, ending) = (&input[..end], input[end]);
        *rest = &input[end + 1..];
        self.after_cr = ending == b'\r';
        if self.partial.len() + line.len() > MAX_MESSAGE_BYTES {
            return Err(ParseError::TooLong);
        }
        if self.partial.is_empty() {
            return Ok(Some(line));
        }
        self.partial.extend_from_slice(line);
        self.handed_out = true;
        Ok(Some(&self.partial))
    }
}

/// The SSE event being read: the WHATWG "event stream interpretation", keeping only `data`.
#[derive(Debug, Default)]
struct SseEvent {
    /// The `data` lines so far, joined with `\n`.
    data: Vec<u8>,
    /// Whether a `data` field was read: an event without one is not dispatched, per the spec.
    has_data: bool,
    /// Whether the stream's first line (which may start with a byte order mark) was read.
    started: bool,
}

impl SseEvent {
    /// Reads one line; `true` once `data: [DONE]` was dispatched.
    fn line(&mut self, line: &[u8], out: &mut Vec<Piece>) -> Result<bool, ParseError> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let line = if self.started { line } else { line.strip_prefix(BOM).unwrap_or(line) };
        self.started = true;
        match line.first() {
            None => self.dispatch(out),
            Some(b':') => Ok(false),
            Some(_) => {
                let (name, value) = match line.iter().position(|&b| b == b':') {
                    Some(colon) => {
                        let value = &line[colon + 1..];
                        (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                    }
                    None => (line, &[][..]),
                };
                if name == b"data" {
                    self.append_data(value)?;
                }
                Ok(false)
            }
        }
    }

    fn append_data(&mut self, value: &[u8]) -> Result<(), ParseError> {
        let separator = usize::from(self.has_data);
        if self.data.len() + separator + value.len() > MAX_MESSAGE_BYTES {
            return Err(ParseError::TooLong);
        }
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
        Ok(())
    }

    /// The blank line that ends an event.
    fn dispatch(&mut self, out: &mut Vec<Piece>) -> Result<bool, ParseError> {
        if !std::mem::take(&mut self.has_data) {
            return Ok(false);
        }
        let read = groq_event(&self.data, out);
        self.data.clear();
        read
    }
}

/// One chunk of Groq's stream; fields we do not use are skipped by serde.
#[derive(Deserialize)]
struct GroqChunk {
    choices: Option<Vec<GroqChoice>>,
    /// `OpenAI`'s in-stream error, `{"message": …, "type": …}` (a string from some compatible
    /// servers): kept as a `Value` because only its message is read, and only on this rare path.
    error: Option<Value>,
    x_groq: Option<XGroq>,
}

#[derive(Deserialize)]
struct GroqChoice {
    delta: Option<GroqDelta>,
}

#[derive(Deserialize)]
struct GroqDelta {
    content: Option<String>,
}

/// Groq's own metadata; `error` says why a stream was stopped early.
#[derive(Deserialize)]
struct XGroq {
    error: Option<String>,
}

/// Reads one dispatched event's data; `true` for the `[DONE]` end marker.
fn groq_event(data: &[u8], out: &mut Vec<Piece>) -> Result<bool, ParseError> {
    if data == b"[DONE]" {
        return Ok(true);
    }
    // An empty `data:` is a keep-alive some proxies send, not a chunk.
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let chunk: GroqChunk = serde_json::from_slice(data)
        .map_err(|error| ParseError::Malformed(format!("Groq event: {error}")))?;
    if let Some(error) = chunk.error {
        return Err(ParseError::Upstream(error_message(&error)));
    }
    if let Some(error) = chunk.x_groq.and_then(|x_groq| x_groq.error) {
        return Err(ParseError::Upstream(error));
    }
    let text = chunk.choices.into_iter().flatten().next().and_then(|choice| choice.delta?.content);
    push_text(text, out);
    Ok(false)
}

fn error_message(error: &Value) -> String {
    let message = error.get("message").and_then(Value::as_str).or_else(|| error.as_str());
    message.map_or_else(|| error.to_string(), str::to_owned)
}

/// One line of Ollama's stream; fields we do not use are skipped by serde.
#[derive(Deserialize)]
struct OllamaChunk {
    message: Option<OllamaMessage>,
    #[serde(default)]
    done: bool,
    /// Ollama streams a failure after the first line as `{"error": "…"}` (server/routes.go).
    error: Option<String>,
}

#[derive(Deserialize)]
struct OllamaMessage {
    content: Option<String>,
}

/// Reads one NDJSON line; `true` for the object with `"done": true`.
fn ollama_line(line: &[u8], out: &mut Vec<Piece>) -> Result<bool, ParseError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let chunk: OllamaChunk = serde_json::from_slice(line)
        .map_err(|error| ParseError::Malformed(format!("Ollama line: {error}")))?;
    if let Some(error) = chunk.error {
        return Err(ParseError::Upstream(error));
    }
    push_text(chunk.message.and_then(|message| message.content), out);
    Ok(chunk.done)
}

fn push_text(text: Option<String>, out: &mut Vec<Piece>) {
    if let Some(text) = text.filter(|text| !text.is_empty()) {
        out.push(Piece::Text(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::memory::SplitMix;
    use serde_json::json;

    /// A Groq reply as it is on the wire. The chunk shape is Groq's `ChatCompletionChunk`
    /// (groq/groq-python, `src/groq/types/chat/chat_completion_chunk.py`: a role-only first delta,
    /// `x_groq.id` on the first chunk, an empty delta with `finish_reason` and `x_groq.usage` on
    /// the last); the framing is its SSE decoder's (src/groq/_streaming.py: `data:` lines, a
    /// blank line per event, `data: [DONE]` last).
    const GROQ_REPLY: &str = concat!(
        r#"data: {"id":"chatcmpl-5f2c7a9e-0c1d-4f4e-9b7a-3c2e1d0f9a8b","object":"chat.completion.chunk","created":1733312345,"model":"llama-3.1-8b-instant","system_fingerprint":"fp_9cb648b966","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"x_groq":{"id":"req_01jeb3v4mxf8s9y3r7w2k5n6p4"}}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-5f2c7a9e-0c1d-4f4e-9b7a-3c2e1d0f9a8b","object":"chat.completion.chunk","created":1733312345,"model":"llama-3.1-8b-instant","system_fingerprint":"fp_9cb648b966","choices":[{"index":0,"delta":{"content":"Yes"},"logprobs":null,"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-5f2c7a9e-0c1d-4f4e-9b7a-3c2e1d0f9a8b","object":"chat.completion.chunk","created":1733312345,"model":"llama-3.1-8b-instant","system_fingerprint":"fp_9cb648b966","choices":[{"index":0,"delta":{"content":", the spirits"},"logprobs":null,"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-5f2c7a9e-0c1d-4f4e-9b7a-3c2e1d0f9a8b","object":"chat.completion.chunk","created":1733312345,"model":"llama-3.1-8b-instant","system_fingerprint":"fp_9cb648b966","choices":[{"index":0,"delta":{"content":" say \"soon\" 🕯️"},"logprobs":null,"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-5f2c7a9e-0c1d-4f4e-9b7a-3c2e1d0f9a8b","object":"chat.completion.chunk","created":1733312345,"model":"llama-3.1-8b-instant","system_fingerprint":"fp_9cb648b966","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"x_groq":{"id":"req_01jeb3v4mxf8s9y3r7w2k5n6p4","usage":{"queue_time":0.019,"prompt_tokens":45,"prompt_time":0.0021,"completion_tokens":9,"completion_time":0.0075,"total_tokens":54,"total_time":0.0096}}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );

    /// An Ollama `/api/chat` reply as it is on the wire: the objects of ollama/ollama docs/api.md
    /// ("Chat Request (Streaming)"; the final one as current servers send it, with an empty
    /// message and `done_reason`), each written on one line and ended by `\n` (server/routes.go,
    /// `streamResponse`: `json.Marshal`, then `append(bts, '\n')`).
    const OLLAMA_REPLY: &str = concat!(
        r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.405406455-07:00","message":{"role":"assistant","content":" veil is thin"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.425406455-07:00","message":{"role":"assistant","content":" tonight. ¿Sí?"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#,
        "\n",
    );

    /// Everything a decoder makes of `chunks`, stopping at the first error.
    fn decode<D: StreamDecoder>(
        mut decoder: D,
        chunks: &[&[u8]],
    ) -> (Vec<Piece>, Result<(), ParseError>, Ending) {
        let mut pieces = Vec::new();
        let mut result = Ok(());
        for chunk in chunks {
            result = decoder.push(chunk, &mut pieces);
            if result.is_err() {
                break;
            }
        }
        (pieces, result, decoder.finish())
    }

    fn decode_groq(wire: &[u8]) -> (Vec<Piece>, Result<(), ParseError>, Ending) {
        decode(GroqDecoder::new(), &[wire])
    }

    fn decode_ollama(wire: &[u8]) -> (Vec<Piece>, Result<(), ParseError>, Ending) {
        decode(OllamaDecoder::new(), &[wire])
    }

    fn spelled(pieces: &[Piece]) -> String {
        pieces.iter().map(|piece| if let Piece::Text(text) = piece { text.as_str() } else { "" }).collect()
    }

    fn texts(parts: &[&str]) -> Vec<Piece> {
        parts.iter().map(|part| Piece::Text((*part).to_owned())).collect()
    }

    fn texts_then_done(parts: &[&str]) -> Vec<Piece> {
        let mut pieces = texts(parts);
        pieces.push(Piece::Done);
        pieces
    }

    #[test]
    fn groq_reply_decodes_to_its_text_then_done() {
        let (pieces, result, ending) = decode_groq(GROQ_REPLY.as_bytes());
        assert_eq!(result, Ok(()));
        assert_eq!(pieces, texts_then_done(&["Yes", ", the spirits", " say \"soon\" 🕯️"]));
        assert_eq!(ending, Ending::Complete);
    }

    #[test]
    fn ollama_reply_decodes_to_its_text_then_done() {
        let (pieces, result, ending) = decode_ollama(OLLAMA_REPLY.as_bytes());
        assert_eq!(result, Ok(()));
        assert_eq!(pieces, texts_then_done(&["The", " veil is thin", " tonight. ¿Sí?"]));
        assert_eq!(ending, Ending::Complete);
    }

    #[test]
    fn ollama_final_object_without_a_message_is_done() {
        // The final object exactly as docs/api.md shows it: no `message` at all.
        let wire = concat!(
            r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The","images":null},"done":false}"#,
            "\r\n",
            r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","done":true,"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#,
            "\r\n",
        );
        assert_eq!(decode_ollama(wire.as_bytes()), (texts_then_done(&["The"]), Ok(()), Ending::Complete));
    }

    #[test]
    fn ollama_text_on_the_done_line_is_kept() {
        let wire = b"{\"message\":{\"content\":\"Yes\"},\"done\":false}\n\n{\"message\":{\"content\":\".\"},\"done\":true}\n";
        assert_eq!(decode_ollama(wire), (texts_then_done(&["Yes", "."]), Ok(()), Ending::Complete));
    }

    #[test]
    fn decoders_work_behind_a_trait_object() {
        let mut decoders: [Box<dyn StreamDecoder>; 2] =
            [Box::new(GroqDecoder::new()), Box::new(OllamaDecoder::new())];
        for (decoder, wire) in decoders.iter_mut().zip([GROQ_REPLY, OLLAMA_REPLY]) {
            let mut pieces = Vec::new();
            decoder.push(wire.as_bytes(), &mut pieces).expect("a whole reply");
            assert_eq!(pieces.last(), Some(&Piece::Done));
        }
    }

    #[test]
    fn sse_comments_and_other_fields_are_ignored() {
        let wire = ": keep-alive\n\nevent: message\nid: 7\nretry: 3000\nfoo: bar\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\nevent: ping\n\n: bye\ndata: [DONE]\n\n";
        assert_eq!(decode_groq(wire.as_bytes()), (texts_then_done(&["Hi"]), Ok(()), Ending::Complete));
    }

    #[test]
    fn sse_data_lines_are_joined_with_newlines() {
        // Pretty-printed JSON over several `data` lines (one without the space after the colon)
        // is one event, whose text keeps its escaped newline.
        let wire = "data: {\ndata:  \"choices\": [{\"delta\": {\"content\": \"a\\nb\"}}]\ndata\ndata: }\n\ndata: [DONE]\n\n";
        assert_eq!(decode_groq(wire.as_bytes()), (texts_then_done(&["a\nb"]), Ok(()), Ending::Complete));
        // Joined, not glued: a JSON string broken over two lines holds a raw newline, which JSON
        // refuses.
        let broken = "data: {\"choices\":[{\"delta\":{\"content\":\"a\ndata: b\"}}]}\n\n";
        assert!(matches!(decode_groq(broken.as_bytes()).1, Err(ParseError::Malformed(_))));
    }

    #[test]
    fn sse_all_three_line_endings_work_even_split_between_cr_and_lf() {
        for ending in ["\n", "\r\n", "\r"] {
            let wire = GROQ_REPLY.replace('\n', ending);
            let bytes = wire.as_bytes();
            let expected =
                (texts_then_done(&["Yes", ", the spirits", " say \"soon\" 🕯️"]), Ok(()), Ending::Complete);
            assert_eq!(decode_groq(bytes), expected, "{ending:?}");
            let byte_by_byte: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(decode(GroqDecoder::new(), &byte_by_byte), expected, "{ending:?} byte by byte");
        }
    }

    #[test]
    fn sse_byte_order_mark_is_skipped() {
        let wire = "\u{FEFF}data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
        let split: Vec<&[u8]> = wire.as_bytes().chunks(2).collect();
        assert_eq!(decode(GroqDecoder::new(), &split), (texts_then_done(&["Hi"]), Ok(()), Ending::Complete));
    }

    #[test]
    fn empty_and_null_deltas_and_empty_choices_are_no_text() {
        let wire = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":null}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":null}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n",
            "data: {\"choices\":null,\"error\":null}\n\n",
            "data:\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(decode_groq(wire.as_bytes()), (vec![Piece::Done], Ok(()), Ending::Complete));
    }

    #[test]
    fn bytes_after_done_are_ignored() {
        let junk =
            format!("data: {{\"error\":\"late\"}}\n\n{}\n{{not json\n", "x".repeat(MAX_MESSAGE_BYTES * 2));
        let mut decoder = GroqDecoder::new();
        let mut pieces = Vec::new();
        decoder.push(format!("{GROQ_REPLY}{junk}").as_bytes(), &mut pieces).expect("ignored");
        decoder.push(junk.as_bytes(), &mut pieces).expect("ignored");
        assert_eq!(pieces.iter().filter(|piece| **piece == Piece::Done).count(), 1);
        assert_eq!(pieces.last(), Some(&Piece::Done));
        assert_eq!(decoder.finish(), Ending::Complete);

        let mut decoder = OllamaDecoder::new();
        let mut pieces = Vec::new();
        decoder.push(format!("{OLLAMA_REPLY}{junk}").as_bytes(), &mut pieces).expect("ignored");
        assert_eq!(pieces.last(), Some(&Piece::Done));
        assert_eq!(decoder.finish(), Ending::Complete);
    }

    #[test]
    fn a_stream_cut_before_its_end_marker_is_cut() {
        let cut_groq = &GROQ_REPLY[..GROQ_REPLY.find("data: [DONE]").expect("marker")];
        assert_eq!(
            decode_groq(cut_groq.as_bytes()),
            (texts(&["Yes", ", the spirits", " say \"soon\" 🕯️"]), Ok(()), Ending::Cut)
        );
        // `[DONE]` without the blank line that dispatches it is an unfinished event (SSE spec).
        assert_eq!(decode_groq(b"data: [DONE]\n"), (vec![], Ok(()), Ending::Cut));
        assert_eq!(decode_groq(b""), (vec![], Ok(()), Ending::Cut));

        let cut_ollama = &OLLAMA_REPLY[..OLLAMA_REPLY.len() - 1];
        assert_eq!(
            decode_ollama(cut_ollama.as_bytes()),
            (texts(&["The", " veil is thin", " tonight. ¿Sí?"]), Ok(()), Ending::Cut)
        );
        assert_eq!(
            decode_ollama(b"{\"message\":{\"content\":\"a\"},\"done\":false}\n"),
            (texts(&["a"]), Ok(()), Ending::Cut)
        );
    }

    #[test]
    fn a_line_longer_than_the_bound_is_too_long_however_it_arrives() {
        let padded = |len: usize| {
            let json = r#"{"message":{"content":"a"},"done":false}"#;
            format!("{json}{}", " ".repeat(len - json.len()))
        };
        let longest = format!("{}\n", padded(MAX_MESSAGE_BYTES));
        assert_eq!(decode_ollama(longest.as_bytes()), (texts(&["a"]), Ok(()), Ending::Cut));
        let too_long = format!("{}\n", padded(MAX_MESSAGE_BYTES + 1));
        assert_eq!(decode_ollama(too_long.as_bytes()), (vec![], Err(ParseError::TooLong), Ending::Cut));
        let in_pieces: Vec<&[u8]> = too_long.as_bytes().chunks(1000).collect();
        assert_eq!(decode(OllamaDecoder::new(), &in_pieces), (vec![], Err(ParseError::TooLong), Ending::Cut));

        let sse_too_long = format!("data: {}\n\n", padded(MAX_MESSAGE_BYTES));
        assert_eq!(decode_groq(sse_too_long.as_bytes()).1, Err(ParseError::TooLong));
    }

    fn refuses_an_unterminated_line_as_soon_as_it_passes_the_bound<D: StreamDecoder>(mut decoder: D) {
        let mut pieces = Vec::new();
        assert_eq!(decoder.push(&vec![b'x'; MAX_MESSAGE_BYTES], &mut pieces), Ok(()));
        assert_eq!(decoder.push(b"x", &mut pieces), Err(ParseError::TooLong));
        // Failed for good: the same error again, nothing more read, and the stream counts as cut.
        assert_eq!(decoder.push(b"\n", &mut pieces), Err(ParseError::TooLong));
        assert!(pieces.is_empty());
        assert_eq!(decoder.finish(), Ending::Cut);
    }

    #[test]
    fn an_unterminated_line_is_refused_as_soon_as_it_passes_the_bound() {
        refuses_an_unterminated_line_as_soon_as_it_passes_the_bound(GroqDecoder::new());
        refuses_an_unterminated_line_as_soon_as_it_passes_the_bound(OllamaDecoder::new());
    }

    #[test]
    fn an_event_whose_data_lines_add_up_past_the_bound_is_too_long() {
        let line = format!("data: {}\n", " ".repeat(MAX_MESSAGE_BYTES / 4));
        let wire = line.repeat(5);
        assert_eq!(decode_groq(wire.as_bytes()), (vec![], Err(ParseError::TooLong), Ending::Cut));
    }

    #[test]
    fn groq_error_events_are_upstream_errors_and_earlier_text_is_kept() {
        let wire = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Yes\"}}]}\n\n",
            "data: {\"error\":{\"message\":\"Service Unavailable\",\"type\":\"internal_server_error\"}}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\" never\"}}]}\n\n",
        );
        let upstream = Err(ParseError::Upstream("Service Unavailable".into()));
        assert_eq!(decode_groq(wire.as_bytes()), (texts(&["Yes"]), upstream, Ending::Cut));

        let x_groq = "data: {\"choices\":[{\"delta\":{}}],\"x_groq\":{\"id\":\"req_1\",\"error\":\"stream stopped\"}}\n\n";
        assert_eq!(decode_groq(x_groq.as_bytes()).1, Err(ParseError::Upstream("stream stopped".into())));
        let as_text = "event: error\ndata: {\"error\":\"overloaded\"}\n\n";
        assert_eq!(decode_groq(as_text.as_bytes()).1, Err(ParseError::Upstream("overloaded".into())));
        let no_message = "data: {\"error\":{\"code\":500}}\n\n";
        assert_eq!(decode_groq(no_message.as_bytes()).1, Err(ParseError::Upstream("{\"code\":500}".into())));
    }

    #[test]
    fn ollama_error_lines_are_upstream_errors_and_earlier_text_is_kept() {
        let wire = "{\"message\":{\"content\":\"The\"},\"done\":false}\n{\"error\":\"an error was encountered while running the model: unexpected EOF\"}\n";
        let (pieces, result, ending) = decode_ollama(wire.as_bytes());
        assert_eq!(pieces, texts(&["The"]));
        assert_eq!(
            result,
            Err(ParseError::Upstream(
                "an error was encountered while running the model: unexpected EOF".into()
            ))
        );
        assert_eq!(ending, Ending::Cut);
    }

    #[test]
    fn lines_that_are_not_the_format_are_malformed() {
        for wire in
            ["data: {not json\n\n", "data: 42\n\n", "data: {\"choices\":[{\"delta\":{\"content\":7}}]}\n\n"]
        {
            let (_, result, ending) = decode_groq(wire.as_bytes());
            assert!(matches!(result, Err(ParseError::Malformed(_))), "{wire:?}: {result:?}");
            assert_eq!(ending, Ending::Cut);
        }
        let ollama: [&[u8]; 4] = [
            b"<html>502 Bad Gateway</html>\n",
            b"{\"done\":\"yes\"}\n",
            b"[1]\n",
            b"{\"message\":{\"content\":\"\xff\"}}\n",
        ];
        for wire in ollama {
            let (_, result, _) = decode_ollama(wire);
            assert!(matches!(result, Err(ParseError::Malformed(_))), "{wire:?}: {result:?}");
        }
        assert!(matches!(decode_groq(b"data: \"\xff\"\n\n").1, Err(ParseError::Malformed(_))));
    }

    /// What generated answers are made of: multi-byte letters, emoji (one with a joiner), quotes,
    /// backslashes, line breaks of every kind, and text that looks like the wire format itself.
    const FRAGMENTS: &[&str] = &[
        "Yes",
        "no",
        " ",
        " the spirits",
        ".",
        ",",
        "\"",
        "'",
        "\\",
        "\n",
        "\r\n",
        "\r",
        "\t",
        "é",
        "ñ",
        "ß",
        "¿",
        "日本",
        "🕯️",
        "👻",
        "🧑‍🚀",
        "\u{2028}",
        "\u{0}",
        "\u{FEFF}",
        "data: [DONE]",
        "\n\n",
        ": ",
        "{\"done\":true}",
        "</s>",
    ];

    fn answer(rng: &mut SplitMix) -> String {
        (0..rng.below(40)).map(|_| *rng.pick(FRAGMENTS)).collect()
    }

    /// `text` cut at random character boundaries into pieces, some of them empty.
    fn split_text(rng: &mut SplitMix, text: &str) -> Vec<String> {
        let mut pieces = Vec::new();
        let mut current = String::new();
        for c in text.chars() {
            current.push(c);
            if rng.one_in(3) {
                pieces.push(std::mem::take(&mut current));
                if rng.one_in(5) {
                    pieces.push(String::new());
                }
            }
        }
        pieces.push(current);
        pieces
    }

    /// A generated reply on the wire, and how many of its bytes it takes for the end marker to
    /// be read.
    struct Wire {
        bytes: Vec<u8>,
        done_at: usize,
    }

    fn groq_wire(rng: &mut SplitMix, pieces: &[String]) -> Wire {
        let ending = *rng.pick(&["\n", "\r\n", "\r"]);
        let head = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_733_312_345,
            "model": "llama-3.1-8b-instant", "system_fingerprint": "fp_9cb648b966"});
        let chunk = |delta: Value, finish_reason: Value| {
            let mut chunk = head.clone();
            chunk["choices"] =
                json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]);
            chunk
        };
        let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        for piece in pieces {
            let delta = match (piece.is_empty(), rng.below(3)) {
                (false, _) | (true, 0) => json!({"content": piece}),
                (true, 1) => json!({"content": null}),
                (true, _) => json!({}),
            };
            chunks.push(chunk(delta, Value::Null));
        }
        let mut last = chunk(json!({}), json!("stop"));
        last["x_groq"] = json!({"id": "req_1", "usage": {"prompt_tokens": 45, "completion_tokens": 9}});
        chunks.push(last);

        let mut wire = String::new();
        if rng.one_in(10) {
            wire.push('\u{FEFF}');
        }
        for chunk in chunks {
            if rng.one_in(6) {
                wire.push_str(&[": keep-alive", ending].concat());
            }
            if rng.one_in(6) {
                wire.push_str(&["event: message", ending, "id: 7", ending].concat());
            }
            let data = if rng.one_in(4) {
                serde_json::to_string_pretty(&chunk)
            } else {
                serde_json::to_string(&chunk)
            };
            for line in data.expect("serializable").lines() {
                let space = if rng.one_in(3) { "" } else { " " };
                wire.push_str(&["data:", space, line, ending].concat());
            }
            wire.push_str(ending);
        }
        wire.push_str(&["data: [DONE]", ending].concat());
        // The first byte of the blank line's ending dispatches the event.
        let done_at = wire.len() + 1;
        wire.push_str(ending);
        Wire { bytes: wire.into_bytes(), done_at }
    }

    fn ollama_wire(rng: &mut SplitMix, pieces: &[String]) -> Wire {
        let ending = *rng.pick(&["\n", "\r\n"]);
        let object = |content: &str, done: bool| {
            let mut line = json!({"model": "qwen2.5:0.5b", "created_at": "2024-12-04T20:19:39.123456Z",
                "message": {"role": "assistant", "content": content}, "done": done});
            if done {
                line["done_reason"] = json!("stop");
                line["total_duration"] = json!(4_883_583_458_u64);
                line["eval_count"] = json!(282);
            }
            line
        };
        let (body, last) = match pieces.split_last() {
            Some((last, body)) if rng.one_in(3) => (body, last.as_str()),
            _ => (pieces, ""),
        };
        let mut lines: Vec<Value> = body.iter().map(|piece| object(piece, false)).collect();
        let mut done = object(last, true);
        if last.is_empty() && rng.one_in(3) {
            done.as_object_mut().expect("object").remove("message");
        }
        lines.push(done);
        let mut wire = String::new();
        for line in lines {
            wire.push_str(&serde_json::to_string(&line).expect("serializable"));
            wire.push_str(ending);
        }
        Wire { done_at: wire.len(), bytes: wire.into_bytes() }
    }

    /// `bytes` cut at random points into chunks of random sizes, from single bytes to all of it.
    fn chunked<'a>(rng: &mut SplitMix, bytes: &'a [u8]) -> Vec<&'a [u8]> {
        let largest = *rng.pick(&[1, 3, 16, 200, bytes.len().max(1)]);
        let mut chunks = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at((1 + rng.below(largest)).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
            if rng.one_in(20) {
                chunks.push(&[]);
            }
        }
        chunks
    }

    /// Junk a misbehaving server might send after its end marker.
    fn junk(rng: &mut SplitMix) -> Vec<u8> {
        match rng.below(4) {
            0 => Vec::new(),
            1 => b"data: {\"error\":\"late\"}\n\n{\"error\":\"late\"}\n".to_vec(),
            2 => vec![b'x'; 1000],
            _ => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        }
    }

    fn check_generated_replies<D: StreamDecoder>(
        seed: u64,
        new: impl Fn() -> D,
        encode: impl Fn(&mut SplitMix, &[String]) -> Wire,
    ) {
        let mut rng = SplitMix(seed);
        for round in 0..600 {
            let text = answer(&mut rng);
            let pieces = split_text(&mut rng, &text);
            let wire = encode(&mut rng, &pieces);

            let mut whole = wire.bytes.clone();
            whole.extend(junk(&mut rng));
            let (decoded, result, ending) = decode(new(), &chunked(&mut rng, &whole));
            let context = || format!("round {round}: {text:?} as {:?}", String::from_utf8_lossy(&wire.bytes));
            assert_eq!(result, Ok(()), "{}", context());
            assert_eq!(spelled(&decoded), text, "{}", context());
            assert!(decoded.iter().all(|piece| *piece != Piece::Text(String::new())), "{}", context());
            assert_eq!(decoded.iter().filter(|piece| **piece == Piece::Done).count(), 1, "{}", context());
            assert_eq!(decoded.last(), Some(&Piece::Done), "{}", context());
            assert_eq!(ending, Ending::Complete, "{}", context());

            let cut_at = rng.below(wire.done_at);
            let (decoded, result, ending) = decode(new(), &chunked(&mut rng, &wire.bytes[..cut_at]));
            let context = || format!("{} cut at {cut_at}", context());
            assert_eq!(result, Ok(()), "{}", context());
            assert!(text.starts_with(&spelled(&decoded)), "{}", context());
            assert!(!decoded.contains(&Piece::Done), "{}", context());
            assert_eq!(ending, Ending::Cut, "{}", context());

            let (decoded, _, ending) = decode(new(), &chunked(&mut rng, &wire.bytes[..wire.done_at]));
            assert_eq!((decoded.last(), ending), (Some(&Piece::Done), Ending::Complete), "{}", context());
        }
    }

    #[test]
    fn generated_groq_replies_split_anywhere_decode_to_their_text_and_one_done() {
        check_generated_replies(0x0d1a_0001, GroqDecoder::new, groq_wire);
    }

    #[test]
    fn generated_ollama_replies_split_anywhere_decode_to_their_text_and_one_done() {
        check_generated_replies(0x0d1a_0002, OllamaDecoder::new, ollama_wire);
    }
}
