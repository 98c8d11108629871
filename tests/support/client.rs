//! A small HTTP client for the edge that checks every reply for leaked secrets.

use std::time::{Duration, Instant};

use serde_json::Value;

/// Secret values the tests configure; none may ever appear in a reply.
pub const GROQ_KEY: &str = "gsk_test_SECRET_groq_key_0123456789";
/// The ollama-proxy token the tests configure.
pub const PROXY_TOKEN: &str = "tok_test_SECRET_proxy_token_98765";

/// One reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
    /// Time from sending to the whole body.
    pub elapsed: Duration,
}

impl Reply {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Talks to one edge instance.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// The client address this client claims, if any (see [`Client::as_asker`]).
    address: Option<String>,
}

impl Client {
    /// A client for the edge at `base` (e.g. `http://127.0.0.1:8787`).
    pub fn new(base: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client { base: base.trim_end_matches('/').to_owned(), agent, address: None }
    }

    /// A client that asks as the client at `address`: it sends the header each runtime takes the
    /// client address from. `wrangler dev` keeps a `CF-Connecting-IP` the client sends (it sets its
    /// own only when none is sent; Cloudflare itself always replaces it), and spin-host passes
    /// `spin-client-addr` through (Spin sets it from the connection).
    pub fn as_asker(base: &str, address: &str) -> Client {
        Client { address: Some(address.to_owned()), ..Client::new(base) }
    }

    /// `request` with the headers each runtime takes the client address from, when this client
    /// claims one.
    fn as_asker_header(&self, request: http::request::Builder) -> http::request::Builder {
        match &self.address {
            Some(address) => request
                .header("cf-connecting-ip", address)
                .header("spin-client-addr", format!("{address}:40000")),
            None => request,
        }
    }

    /// The edge's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], Vec::new())
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send("POST", path, &[("content-type", "application/json")], body.to_string().into_bytes())
    }

    /// Asks a question on `/api/ouija`.
    pub fn ask(&self, question: &str) -> Reply {
        self.post_json("/api/ouija", &serde_json::json!({ "question": question }))
    }

    /// Any request; asserts that no configured secret appears in the reply.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut request = http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request = self.as_asker_header(request);
        let request = request.body(body).expect("a valid test request");
        let started = Instant::now();
        let mut response = self.agent.run(request).unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let reply = Reply {
            status: response.status().as_u16(),
            headers: response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body,
            elapsed: started.elapsed(),
        };
        assert_no_secrets(&reply);
        reply
    }
}

/// One server-sent event of a streamed answer, and when it arrived.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// `token` or `done`.
    pub name: String,
    /// Its data, as JSON.
    pub data: Value,
    /// When it was read.
    pub at: Instant,
}

/// A streamed answer as the client read it.
#[derive(Debug)]
pub struct Streamed {
    /// HTTP status.
    pub status: u16,
    /// The `content-type` header.
    pub content_type: String,
    /// The events read, in order (none when the reply was not a stream).
    pub events: Vec<SseEvent>,
    /// The body, when the reply was not a stream.
    pub body: String,
    /// When the request was sent.
    pub started: Instant,
}

impl Streamed {
    /// The `token` events' text, joined.
    pub fn tokens(&self) -> String {
        let texts = self.events.iter().filter(|e| e.name == "token");
        texts.map(|e| e.data["text"].as_str().unwrap_or_default()).collect()
    }

    /// The `done` event's data; panics when there is none or it is not last.
    pub fn done(&self) -> &Value {
        let last = self.events.last().unwrap_or_else(|| panic!("no events: {self:?}"));
        assert_eq!(last.name, "done", "the last event is done: {self:?}");
        assert_eq!(self.events.iter().filter(|e| e.name == "done").count(), 1, "one done: {self:?}");
        &last.data
    }
}

impl Client {
    /// Asks `question` with `Accept: text/event-stream` and reads the events as they come; with
    /// `leave_after` tokens read, hangs up there, as a browser tab closed mid-answer.
    pub fn ask_streaming(&self, question: &str, leave_after: Option<usize>) -> Streamed {
        use std::io::BufRead;
        let body = serde_json::json!({ "question": question, "language": "en" }).to_string();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("{}/api/ouija", self.base))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream");
        request = self.as_asker_header(request);
        let request = request.body(body.into_bytes()).expect("a valid test request");
        let started = Instant::now();
        let mut response = self.agent.run(request).unwrap_or_else(|e| panic!("streamed ask failed: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut streamed =
            Streamed { status, content_type, events: Vec::new(), body: String::new(), started };
        if !streamed.content_type.starts_with("text/event-stream") {
            streamed.body = response.body_mut().read_to_string().unwrap_or_default();
            return streamed;
        }
        let mut reader = std::io::BufReader::new(response.body_mut().as_reader());
        let (mut name, mut data) = (String::new(), String::new());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let text = line.trim_end_matches(['\r', '\n']);
            if let Some(value) = text.strip_prefix("event:") {
                value.trim().clone_into(&mut name);
            } else if let Some(value) = text.strip_prefix("data:") {
                data.push_str(value.trim_start());
            } else if text.is_empty() && !data.is_empty() {
                let data_json =
                    serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data ({e}): {data}"));
                streamed.events.push(SseEvent {
                    name: std::mem::take(&mut name),
                    data: data_json,
                    at: Instant::now(),
                });
                data.clear();
                let tokens = streamed.events.iter().filter(|e| e.name == "token").count();
                if leave_after.is_some_and(|n| tokens >= n) {
                    break;
                }
            }
            line.clear();
        }
        assert_no_secrets(&Reply {
            status,
            headers: Vec::new(),
            body: format!("{:?}", streamed.events),
            elapsed: Duration::ZERO,
        });
        streamed
    }
}

/// POSTs `body` to `base` + `path` with `Transfer-Encoding: chunked` (no declared length), over a
/// raw connection, and returns the status code.
pub fn post_chunked(base: &str, path: &str, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the edge");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("set a read timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send headers");
    for chunk in body.chunks(4096) {
        // The edge may answer 413 before reading everything: a failed write is fine.
        if stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
            || stream.write_all(chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert_no_secrets(&Reply {
        status: 0,
        headers: Vec::new(),
        body: reply.clone(),
        elapsed: Duration::ZERO,
    });
    reply.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// Fails when a configured secret appears anywhere in `reply`.
pub fn assert_no_secrets(reply: &Reply) {
    for secret in [GROQ_KEY, PROXY_TOKEN] {
        assert!(!reply.body.contains(secret), "secret leaked in body: {}", reply.body);
        assert!(
            !reply.headers.iter().any(|(_, v)| v.contains(secret)),
            "secret leaked in headers: {:?}",
            reply.headers
        );
    }
}
