//! Fake Groq and Ollama servers on 127.0.0.1 that speak the real wire formats (`OpenAI` chat
//! completions with Groq's rate-limit headers and error JSON; Ollama's `/api/chat` and
//! `/api/tags`), with faults a test can switch on: 429, request too large, 5xx, garbage, junk,
//! hangs and slow drips. Each fake counts the calls it gets.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tiny_http::{Header, Request, Response, Server};

/// How a fake answers chat requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// 200 with this answer.
    Answer(String),
    /// 429 with `retry-after` (seconds) and Groq's rate-limit error JSON.
    RateLimited(u32),
    /// 429 whose message says the request is too large (not a rate limit).
    TooLarge,
    /// This status with a short error body.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with well-formed JSON whose answer is junk.
    Junk,
    /// Accepts the request and never answers (for 60 s).
    Hang,
    /// Sends headers, then one byte of body every 300 ms (for 60 s).
    SlowDrip,
}

/// Which wire format a fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// OpenAI-compatible, under `/openai/v1`.
    Groq,
    /// Ollama's native API.
    Ollama,
}

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method and path, e.g. `POST /api/chat`.
    pub route: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body as JSON (`Null` when not JSON).
    pub body: Value,
}

/// How a fake streams an answer when asked with `stream: true` (Groq: SSE chunks and `[DONE]`;
/// Ollama: NDJSON lines and `done: true`), one word per chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streaming {
    /// Every word, then the end marker.
    Whole,
    /// This many words, then the connection ends without the end marker.
    CutAfter(usize),
    /// This many words, then silence (for 60 s) without ending.
    StallAfter(usize),
}

#[derive(Debug)]
struct State {
    mode: Mode,
    streaming: Streaming,
    /// Between two chunks of a streamed answer.
    stream_gap: Duration,
    /// When the last streamed answer was all sent (its end marker or cut).
    stream_finished: Option<Instant>,
    /// Streamed answers whose reader went away before they were all sent.
    streams_cancelled: u32,
    /// Like Groq's free tier: at most this many chat calls per minute, then 429.
    per_minute: Option<u32>,
    window_start: Option<Instant>,
    window_calls: u32,
    /// Added before every chat reply, like a real model's think time.
    latency: Duration,
    chat_calls: u32,
    rate_limits_served: u32,
    seen: Vec<Seen>,
}

/// A running fake upstream; stops accepting when dropped.
pub struct Fake {
    kind: Kind,
    port: u16,
    server: Arc<Server>,
    state: Arc<Mutex<State>>,
}

impl Fake {
    /// Starts a fake of `kind` in `mode` on an ephemeral loopback port.
    pub fn start(kind: Kind, mode: Mode) -> Fake {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind a loopback port"));
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let state = Arc::new(Mutex::new(State {
            mode,
            streaming: Streaming::Whole,
            stream_gap: Duration::ZERO,
            stream_finished: None,
            streams_cancelled: 0,
            per_minute: None,
            window_start: None,
            window_calls: 0,
            latency: Duration::ZERO,
            chat_calls: 0,
            rate_limits_served: 0,
            seen: Vec::new(),
        }));
        let (accepting, shared) = (Arc::clone(&server), Arc::clone(&state));
        thread::spawn(move || {
            for request in accepting.incoming_requests() {
                let shared = Arc::clone(&shared);
                thread::spawn(move || serve(kind, &shared, request));
            }
        });
        Fake { kind, port, server, state }
    }

    /// The base URL the edge is configured with (`GROQ_BASE_URL` or `OLLAMA_URL`).
    pub fn base_url(&self) -> String {
        match self.kind {
            Kind::Groq => format!("http://127.0.0.1:{}/openai/v1", self.port),
            Kind::Ollama => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// Switches how chat requests are answered.
    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    /// Allows at most `n` chat calls per minute, answering 429 beyond, as Groq's free tier does.
    pub fn limit_per_minute(&self, n: u32) {
        self.lock().per_minute = Some(n);
    }

    /// Waits this long before each chat reply.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// How streamed answers go, and the pause between their chunks.
    pub fn set_streaming(&self, streaming: Streaming, gap: Duration) {
        let mut s = self.lock();
        s.streaming = streaming;
        s.stream_gap = gap;
    }

    /// When the last streamed answer was all sent, if one was.
    pub fn stream_finished(&self) -> Option<Instant> {
        self.lock().stream_finished
    }

    /// [`Fake::stream_finished`], waited for up to 2 s: the fake notes the time after its last
    /// piece is sent, so a client that has read that piece can get here before the note is made.
    pub fn stream_finished_soon(&self) -> Option<Instant> {
        let started = Instant::now();
        loop {
            let finished = self.stream_finished();
            if finished.is_some() || started.elapsed() > Duration::from_secs(2) {
                return finished;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Streamed answers the edge let go of before they were all sent.
    pub fn streams_cancelled(&self) -> u32 {
        self.lock().streams_cancelled
    }

    /// Chat calls received (completions for Groq, `/api/chat` for Ollama).
    pub fn chat_calls(&self) -> u32 {
        self.lock().chat_calls
    }

    /// 429s this fake had to serve.
    pub fn rate_limits_served(&self) -> u32 {
        self.lock().rate_limits_served
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// A loopback URL where nothing listens: connections are refused.
pub fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn serve(kind: Kind, state: &Arc<Mutex<State>>, mut request: Request) {
    let mut raw = String::new();
    let _ = request.as_reader().read_to_string(&mut raw);
    let route = format!("{} {}", request.method(), request.url());
    let authorization =
        request.headers().iter().find(|h| h.field.equiv("authorization")).map(|h| h.value.to_string());
    let is_chat = matches!(route.as_str(), "POST /openai/v1/chat/completions" | "POST /api/chat");

    let (mode, latency) = {
        let mut s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let latency = if is_chat { s.latency } else { Duration::ZERO };
        s.seen.push(Seen {
            route: route.clone(),
            authorization,
            body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        });
        let mode = if is_chat {
            s.chat_calls += 1;
            minute_limited(&mut s).unwrap_or_else(|| s.mode.clone())
        } else {
            s.mode.clone()
        };
        (mode, latency)
    };
    thread::sleep(latency);
    if matches!(mode, Mode::RateLimited(_)) {
        state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).rate_limits_served += 1;
    }

    let _ = match (kind, route.as_str(), is_chat) {
        // Like a real upstream rejecting a key, the error echoes it: the edge must never relay it.
        (_, _, true) if matches!(mode, Mode::Status(401)) => respond_json(
            request,
            401,
            &json!({"error": {"message": format!("Invalid API Key: {}", authorization_of(state))}}),
            &[],
        ),
        (_, _, true) => {
            match (&mode, serde_json::from_str::<Value>(&raw).ok().and_then(|b| b["stream"].as_bool())) {
                (Mode::Answer(text), Some(true)) => stream_reply(kind, text, state, request),
                _ => chat_reply(kind, &mode, request),
            }
        }
        (Kind::Groq, "GET /openai/v1/models", _) | (Kind::Ollama, "GET /api/tags", _) => {
            listing(kind, &mode, request)
        }
        (Kind::Ollama, "GET /api/version", _) => {
            respond_json(request, 200, &json!({"version": "0.12.6"}), &[])
        }
        _ => respond_json(request, 404, &json!({"error": "not found"}), &[]),
    };
}

fn authorization_of(state: &Mutex<State>) -> String {
    let s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    s.seen.last().and_then(|seen| seen.authorization.clone()).unwrap_or_default()
}

/// A 429 when the per-minute allowance is spent, like Groq's free tier.
fn minute_limited(s: &mut State) -> Option<Mode> {
    let limit = s.per_minute?;
    let started = *s.window_start.get_or_insert_with(Instant::now);
    if started.elapsed() >= Duration::from_secs(60) {
        s.window_start = Some(Instant::now());
        s.window_calls = 0;
    }
    s.window_calls += 1;
    (s.window_calls > limit).then(|| {
        let left = 60u64.saturating_sub(started.elapsed().as_secs()).max(1);
        Mode::RateLimited(u32::try_from(left).unwrap_or(60))
    })
}

fn chat_reply(kind: Kind, mode: &Mode, request: Request) -> io::Result<()> {
    match mode {
        Mode::Answer(text) => {
            let headers = groq_limit_headers();
            let headers: &[(&str, &str)] = if kind == Kind::Groq { &headers } else { &[] };
            respond_json(request, 200, &chat_body(kind, text), headers)
        }
        Mode::Junk => respond_json(request, 200, &chat_body(kind, "   "), &[]),
        Mode::RateLimited(secs) => {
            let message = "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_fake` \
                           service tier `on_demand` on requests per minute (RPM): Limit 30, Used 30, Requested 1. \
                           Please try again in 2s.";
            let retry = secs.to_string();
            let body =
                json!({"error": {"message": message, "type": "requests", "code": "rate_limit_exceeded"}});
            respond_json(request, 429, &body, &[("retry-after", &retry)])
        }
        Mode::TooLarge => {
            let message = "Request too large for model `llama-3.1-8b-instant` in organization `org_fake` on \
                           tokens per minute (TPM): Limit 6000, Requested 9000, please reduce your message size";
            let body =
                json!({"error": {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}});
            respond_json(request, 429, &body, &[("retry-after", "7")])
        }
        Mode::Status(status) => {
            respond_json(request, *status, &json!({"error": {"message": "upstream failure"}}), &[])
        }
        Mode::Garbage => {
            request.respond(Response::from_string("<html>502 Bad Gateway</html>").with_status_code(200))
        }
        Mode::Hang => {
            thread::sleep(Duration::from_secs(60));
            Ok(())
        }
        Mode::SlowDrip => {
            let reader = Drip { remaining: 200 };
            let json_type = Header::from_bytes("content-type", "application/json").expect("valid header");
            request.respond(Response::new(200.into(), vec![json_type], reader, None, None))
        }
    }
}

/// The model listing used by health checks; hangs and faults apply to it as well.
fn listing(kind: Kind, mode: &Mode, request: Request) -> io::Result<()> {
    match mode {
        Mode::Hang => {
            thread::sleep(Duration::from_secs(60));
            Ok(())
        }
        Mode::Status(status) => respond_json(request, *status, &json!({"error": "down"}), &[]),
        _ if kind == Kind::Groq => respond_json(
            request,
            200,
            &json!({"object": "list", "data": [{"id": "llama-3.1-8b-instant", "object": "model", "owned_by": "Meta", "active": true, "context_window": 131_072}]}),
            &[],
        ),
        _ => respond_json(
            request,
            200,
            &json!({"models": [{"name": "qwen2.5:0.5b", "model": "qwen2.5:0.5b", "modified_at": "2026-11-01T10:00:00Z",
                    "size": 397_821_319, "digest": "a8b0c5157701", "details": {"format": "gguf", "family": "qwen2",
                    "parameter_size": "494.03M", "quantization_level": "Q4_K_M"}}]}),
            &[],
        ),
    }
}

fn chat_body(kind: Kind, text: &str) -> Value {
    match kind {
        Kind::Groq => json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_764_100_000,
            "model": "llama-3.1-8b-instant",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 60, "completion_tokens": 9, "total_tokens": 69},
            "system_fingerprint": "fp_fake", "x_groq": {"id": "req_fake"}
        }),
        Kind::Ollama => json!({
            "model": "qwen2.5:0.5b", "created_at": "2026-11-25T21:00:00.000000Z",
            "message": {"role": "assistant", "content": text},
            "done_reason": "stop", "done": true, "total_duration": 512_000_000, "load_duration": 1_000_000,
            "prompt_eval_count": 60, "prompt_eval_duration": 100_000_000, "eval_count": 9, "eval_duration": 400_000_000
        }),
    }
}

/// Groq's rate-limit headers: they count requests per *day*, so they say nothing of the minute.
fn groq_limit_headers() -> [(&'static str, &'static str); 6] {
    [
        ("x-ratelimit-limit-requests", "14400"),
        ("x-ratelimit-remaining-requests", "14399"),
        ("x-ratelimit-reset-requests", "6s"),
        ("x-ratelimit-limit-tokens", "6000"),
        ("x-ratelimit-remaining-tokens", "5931"),
        ("x-ratelimit-reset-tokens", "690ms"),
    ]
}

fn respond_json(request: Request, status: u16, body: &Value, headers: &[(&str, &str)]) -> io::Result<()> {
    let mut response = Response::from_string(body.to_string())
        .with_status_code(status)
        .with_header(Header::from_bytes("content-type", "application/json").expect("valid header"));
    for (name, value) in headers {
        response.add_header(Header::from_bytes(*name, *value).expect("valid header"));
    }
    request.respond(response)
}

/// Streams `text` one word per chunk, as the fake's [`Streaming`] says.
fn stream_reply(kind: Kind, text: &str, state: &Arc<Mutex<State>>, request: Request) -> io::Result<()> {
    let (streaming, gap) = {
        let s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (s.streaming, s.stream_gap)
    };
    let words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    let said = match streaming {
        Streaming::Whole => words.len(),
        Streaming::CutAfter(n) | Streaming::StallAfter(n) => n.min(words.len()),
    };
    let mut chunks: std::collections::VecDeque<Vec<u8>> =
        words[..said].iter().map(|word| stream_chunk(kind, word, false)).collect();
    if streaming == Streaming::Whole {
        chunks.push_back(stream_chunk(kind, "", true));
    }
    let content_type = if kind == Kind::Groq { "text/event-stream" } else { "application/x-ndjson" };
    // Written by hand on the connection, each chunk flushed as it is made: tiny_http's own chunked
    // writer would hold small chunks back until 8 KiB.
    let mut writer = request.into_writer();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut sent = writer.write_all(head.as_bytes()).and_then(|()| writer.flush());
    while let (Ok(()), Some(chunk)) = (&sent, chunks.pop_front()) {
        thread::sleep(gap);
        sent = writer
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|()| writer.write_all(&chunk))
            .and_then(|()| writer.write_all(b"\r\n"))
            .and_then(|()| writer.flush());
    }
    let mut s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if sent.is_err() {
        s.streams_cancelled += 1;
        return sent;
    }
    if matches!(streaming, Streaming::StallAfter(_)) {
        drop(s);
        thread::sleep(Duration::from_secs(60));
        return Ok(());
    }
    s.stream_finished = Some(Instant::now());
    drop(s);
    writer.write_all(b"0\r\n\r\n").and_then(|()| writer.flush())
}

/// One chunk of a streamed answer in `kind`'s wire format (the end marker when `last`).
fn stream_chunk(kind: Kind, word: &str, last: bool) -> Vec<u8> {
    match (kind, last) {
        (Kind::Groq, false) => {
            let chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_764_100_000,
                "model": "llama-3.1-8b-instant", "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": {"content": word}, "logprobs": null, "finish_reason": null}]});
            format!("data: {chunk}\n\n").into_bytes()
        }
        (Kind::Groq, true) => b"data: [DONE]\n\n".to_vec(),
        (Kind::Ollama, done) => {
            let line = json!({"model": "qwen2.5:0.5b", "created_at": "2026-11-25T21:00:00.000000Z",
                "message": {"role": "assistant", "content": word}, "done": done});
            format!("{line}\n").into_bytes()
        }
    }
}

/// A body that arrives one byte every 300 ms.
struct Drip {
    remaining: usize,
}

impl Read for Drip {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        thread::sleep(Duration::from_millis(300));
        self.remaining -= 1;
        buf[0] = b' ';
        Ok(1)
    }
}
