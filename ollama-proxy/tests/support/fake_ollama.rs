//! A fake Ollama for tests and benchmarks: the real wire formats, answered from memory.
//!
//! Speaks `/api/version`, `/api/tags`, `/api/ps`, `/api/show`, `/api/chat`, `/api/generate`
//! (NDJSON when streaming), `/api/embed`, `/api/embeddings`, `/v1/models`, `/v1/chat/completions`
//! (SSE when streaming) and `/api/pull`, so a leak through the proxy would be answered and seen.
//! Faults for every request (`--fault`) or one request (`x-fake-fault` header): `hang` (never
//! answers), `error` (500), `busy` (Ollama's 503 when its queue is full), `break` (a stream's
//! first line, then the connection cut), `drip` (headers at once, then one chunk per
//! `--drip-ms`), `flood` (256 MiB of NDJSON as fast as the reader takes it). Faults apply to
//! every route, except the probes' (`/api/version`, `/api/tags`, `/api/ps`) with `--probes-ok`.
//! `--also-models` adds models to `/api/tags`; `--loaded` lists models in `/api/ps`.
//! `--chunk-delay-ms` spaces streamed chunks so streaming is observable.
//! Test helpers on the fake itself: `GET /__fake/seen` lists the paths it received from clients
//! (through the proxy), `GET /__fake/probes` those of the proxy's health probes (sent with a
//! `User-Agent` ending in `(probe)`),
//! `GET /v1/fake/echo` returns the request's path and headers (reachable through the proxy),
//! `GET /__fake/connections` counts accepted connections; `x-fake-close: 1` answers with
//! `Connection: close`.
//! Prints `listening on ADDR` as its first line of stdout.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The one model this Ollama has.
    #[arg(long, default_value = "qwen2.5:0.5b")]
    model: String,
    /// Ollama version to report.
    #[arg(long, default_value = "0.12.6")]
    version: String,
    /// Pause between streamed chunks, in ms.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Content chunks in a streamed answer (before the final `done` chunk).
    #[arg(long, default_value_t = 5)]
    chunks: usize,
    /// Fault for every request: none, hang, error, drip.
    #[arg(long, default_value = "none")]
    fault: String,
    /// Pause between chunks under the `drip` fault, in ms.
    #[arg(long, default_value_t = 1000)]
    drip_ms: u64,
    /// More models this Ollama has, comma-separated.
    #[arg(long, default_value = "")]
    also_models: String,
    /// Models loaded now (`/api/ps`), comma-separated.
    #[arg(long, default_value = "")]
    loaded: String,
    /// Answer the probe routes (`/api/version`, `/api/tags`, `/api/ps`) normally despite `--fault`.
    #[arg(long)]
    probes_ok: bool,
}

struct Fake {
    args: Args,
    seen: Mutex<Vec<String>>,
    probes: Mutex<Vec<String>>,
    connections: std::sync::atomic::AtomicUsize,
}

type FakeBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let fake = Arc::new(Fake {
        args,
        seen: Mutex::new(Vec::new()),
        probes: Mutex::new(Vec::new()),
        connections: std::sync::atomic::AtomicUsize::new(0),
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let fake = fake.clone();
        fake.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let fake = fake.clone();
                async move {
                    let close = request.headers().contains_key("x-fake-close");
                    let mut response = fake.answer(request).await;
                    if close {
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

impl Fake {
    async fn answer(&self, request: Request<Incoming>) -> Response<FakeBody> {
        let path = request.uri().path().to_owned();
        let probe =
            request.headers().get(header::USER_AGENT).is_some_and(|ua| ua.as_bytes().ends_with(b"(probe)"));
        if !path.starts_with("/__fake/") {
            let list = if probe { &self.probes } else { &self.seen };
            list.lock().map(|mut seen| seen.push(path.clone())).ok();
        }
        let fault = self.fault(&request, &path);
        let delay = request
            .headers()
            .get("x-fake-delay-ms")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(self.args.chunk_delay_ms);
        if let Some(answer) = faulted(&fault).await {
            return answer;
        }
        let delay = if fault == "drip" { self.args.drip_ms } else { delay };
        let echo = echo(&request);
        let method = request.method().clone();
        let body =
            request.into_body().collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
        let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let model = self.args.model.as_str();
        let asked = input.get("model").and_then(Value::as_str).unwrap_or(model).to_owned();
        let stream = input.get("stream").and_then(Value::as_bool);
        let now = rfc3339();
        match (method.as_str(), path.as_str()) {
            ("GET", "/__fake/connections") => json_response(
                StatusCode::OK,
                &json!({"connections": self.connections.load(std::sync::atomic::Ordering::Relaxed)}),
            ),
            ("GET", "/__fake/seen") => {
                let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
                json_response(StatusCode::OK, &json!(seen))
            }
            ("GET", "/__fake/probes") => {
                let probes = self.probes.lock().map(|s| s.clone()).unwrap_or_default();
                json_response(StatusCode::OK, &json!(probes))
            }
            (method, "/v1/fake/echo") => echo_response(echo, method, body.len()),
            ("GET" | "HEAD", "/") => text_response("Ollama is running"),
            ("GET", "/api/version") => json_response(StatusCode::OK, &json!({"version": self.args.version})),
            ("GET", "/api/tags") => {
                let models: Vec<Value> = self.models().map(model_entry).collect();
                json_response(StatusCode::OK, &json!({ "models": models }))
            }
            ("GET", "/api/ps") => {
                let loaded: Vec<Value> = list(&self.args.loaded).map(model_entry).collect();
                json_response(StatusCode::OK, &json!({ "models": loaded }))
            }
            ("GET", "/v1/models") => json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": [{"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "library"}]}),
            ),
            _ if !self.models().any(|m| latest(m) == latest(&asked)) && path != "/api/pull" => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("model \"{asked}\" not found, try pulling it first")}),
            ),
            ("POST", "/api/show") => json_response(StatusCode::OK, &show(model)),
            ("POST", "/api/embed") => json_response(
                StatusCode::OK,
                &json!({"model": model, "embeddings": [[0.01, -0.02, 0.03]], "total_duration": 1000, "load_duration": 100, "prompt_eval_count": 2}),
            ),
            ("POST", "/api/embeddings") => {
                json_response(StatusCode::OK, &json!({"embedding": [0.01, -0.02, 0.03]}))
            }
            ("POST", "/api/chat") => {
                let words = self.words();
                let chunks = words.iter().map(|w| {
                    json!({"model": model, "created_at": now, "message": {"role": "assistant", "content": w}, "done": false})
                });
                let last = {
                    let mut last = final_stats(
                        json!({"model": model, "created_at": now, "message": {"role": "assistant", "content": if stream == Some(false) { words.concat() } else { String::new() }}}),
                    );
                    last["done"] = json!(true);
                    last
                };
                ndjson_or_json(stream != Some(false), &chunks.collect::<Vec<_>>(), &last, delay)
            }
            ("POST", "/api/generate") => {
                let words = self.words();
                let chunks = words
                    .iter()
                    .map(|w| json!({"model": model, "created_at": now, "response": w, "done": false}));
                let mut last = final_stats(
                    json!({"model": model, "created_at": now, "response": if stream == Some(false) { words.concat() } else { String::new() }, "context": [1, 2, 3]}),
                );
                last["done"] = json!(true);
                ndjson_or_json(stream != Some(false), &chunks.collect::<Vec<_>>(), &last, delay)
            }
            ("POST", "/v1/chat/completions") => self.openai_chat(model, stream == Some(true), delay),
            ("POST", "/api/pull") => json_response(StatusCode::OK, &json!({"status": "success"})),
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "404 page not found"})),
        }
    }

    /// The fault for this request: its `x-fake-fault`, else `--fault` (never on the helper
    /// routes, nor on the probe routes with `--probes-ok`).
    fn fault(&self, request: &Request<Incoming>, path: &str) -> String {
        let probe_route = matches!(path, "/api/version" | "/api/tags" | "/api/ps");
        let helper = path.starts_with("/__fake/");
        let default_fault =
            if helper || (probe_route && self.args.probes_ok) { "none" } else { self.args.fault.as_str() };
        request
            .headers()
            .get("x-fake-fault")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(default_fault)
            .to_owned()
    }

    /// Every model this Ollama has.
    fn models(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.args.model.as_str()).chain(list(&self.args.also_models))
    }

    fn words(&self) -> Vec<String> {
        let base = ["The ", "spirits ", "say ", "yes", "."];
        (0..self.args.chunks).map(|i| base[i % base.len()].to_owned()).collect()
    }

    fn openai_chat(&self, model: &str, stream: bool, delay: u64) -> Response<FakeBody> {
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let words = self.words();
        if !stream {
            return json_response(
                StatusCode::OK,
                &json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": created, "model": model,
                    "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": words.concat()}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": words.len(), "total_tokens": 10 + words.len()}
                }),
            );
        }
        let mut events: Vec<Bytes> = words
            .iter()
            .map(|w| {
                let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": w}, "finish_reason": null}]});
                Bytes::from(format!("data: {chunk}\n\n"))
            })
            .collect();
        let stop = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": "stop"}]});
        events.push(Bytes::from(format!("data: {stop}\n\n")));
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        streamed("text/event-stream", events, delay)
    }
}

fn final_stats(mut value: Value) -> Value {
    value["done_reason"] = json!("stop");
    value["total_duration"] = json!(5_000_000);
    value["load_duration"] = json!(1_000_000);
    value["prompt_eval_count"] = json!(10);
    value["prompt_eval_duration"] = json!(1_000_000);
    value["eval_count"] = json!(5);
    value["eval_duration"] = json!(3_000_000);
    value
}

fn ndjson_or_json(stream: bool, chunks: &[Value], last: &Value, delay: u64) -> Response<FakeBody> {
    if !stream {
        return json_response(StatusCode::OK, last);
    }
    let lines = chunks.iter().chain(std::iter::once(last)).map(|v| Bytes::from(format!("{v}\n"))).collect();
    streamed("application/x-ndjson", lines, delay)
}

/// Sends `chunks` one by one, `delay_ms` apart (no pause before the first).
fn streamed(content_type: &'static str, chunks: Vec<Bytes>, delay_ms: u64) -> Response<FakeBody> {
    let body = if delay_ms == 0 {
        ChunksBody(ChunkSource::Ready(chunks.into())).boxed()
    } else {
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            for (i, chunk) in chunks.into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                if sender.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        ChunksBody(ChunkSource::Channel(receiver)).boxed()
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

/// `name` and `name:latest` are the same model.
fn latest(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
}

/// The answer of a fault that answers on its own (`hang` never does).
async fn faulted(fault: &str) -> Option<Response<FakeBody>> {
    match fault {
        "hang" => std::future::pending().await,
        "error" => {
            Some(json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": "fake internal error"})))
        }
        "busy" => Some(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "server busy, please try again.  maximum pending requests exceeded"}),
        )),
        "break" => Some(broken_stream()),
        "flood" => Some(flood()),
        _ => None,
    }
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|m| !m.is_empty())
}

/// The `break` fault: a stream whose first line is sent, then the connection is cut (it promised
/// more bytes than it sends, so hyper aborts the connection at the end of the body).
fn broken_stream() -> Response<FakeBody> {
    let first = Bytes::from_static(b"{\"model\":\"m\",\"response\":\"The \",\"done\":false}\n");
    // The line goes out (and is flushed) first; then the body ends short of its promised length
    // and hyper cuts the connection.
    let (sender, receiver) = mpsc::channel(1);
    tokio::spawn(async move {
        if sender.send(first).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut response = Response::new(ChunksBody(ChunkSource::Channel(receiver)).boxed());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/x-ndjson"));
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("100000"));
    response
}

/// Bytes the `flood` fault sends.
const FLOOD_BYTES: usize = 256 << 20;

/// `/v1/fake/echo`: the request's path, query and headers, its method and body length.
fn echo_response(mut echo: Value, method: &str, body_bytes: usize) -> Response<FakeBody> {
    echo["method"] = json!(method);
    echo["body_bytes"] = json!(body_bytes);
    json_response(StatusCode::OK, &echo)
}

/// The `flood` fault's answer.
fn flood() -> Response<FakeBody> {
    let mut response = Response::new(Flood(FLOOD_BYTES).boxed());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/x-ndjson"));
    response
}

/// An NDJSON body of `.0` more bytes, in 64 KiB frames, made as they are asked for.
struct Flood(usize);

impl Body for Flood {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        static LINES: [u8; 65536] = {
            let mut lines = [b'x'; 65536];
            let mut i = 63;
            while i < lines.len() {
                lines[i] = b'\n';
                i += 64;
            }
            lines
        };
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        let n = self.0.min(LINES.len());
        self.0 -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&LINES[..n])))))
    }
}

enum ChunkSource {
    Ready(std::collections::VecDeque<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

/// A body that yields each chunk as its own frame, so each is flushed on its own.
struct ChunksBody(ChunkSource);

impl Body for ChunksBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.0 {
            ChunkSource::Ready(chunks) => Poll::Ready(chunks.pop_front().map(|c| Ok(Frame::data(c)))),
            ChunkSource::Channel(receiver) => receiver.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c)))),
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<FakeBody> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

fn text_response(text: &'static str) -> Response<FakeBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn echo(request: &Request<Incoming>) -> Value {
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(String::from_utf8_lossy(v.as_bytes()))))
        .collect();
    json!({"path": request.uri().path(), "query": request.uri().query(), "headers": headers})
}

fn model_entry(model: &str) -> Value {
    json!({
        "name": model, "model": model, "modified_at": "2026-11-01T10:00:00.000000000Z", "size": 397_821_319,
        "digest": "a8b0c51577010a279d933d14c2a8ab4b268079d44c5c8830c0a93900f1827c67",
        "details": {"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
            "parameter_size": "494.03M", "quantization_level": "Q4_K_M"}
    })
}

fn show(model: &str) -> Value {
    json!({
        "modelfile": format!("FROM {model}\n"), "parameters": "stop \"<|im_end|>\"", "template": "{{ .Prompt }}",
        "details": {"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
            "parameter_size": "494.03M", "quantization_level": "Q4_K_M"},
        "model_info": {"general.architecture": "qwen2"}, "capabilities": ["completion"],
        "modified_at": "2026-11-01T10:00:00.000000000Z"
    })
}

fn rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    // Good enough for a fake: a fixed date with today's clock time keeps the format exact.
    let _ = days;
    format!("2026-11-25T{:02}:{:02}:{:02}.000000000Z", secs % 86_400 / 3600, secs % 3600 / 60, secs % 60)
}
