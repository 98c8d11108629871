//! Helpers for the end-to-end tests: start the fake Ollama and the real proxy binary on loopback,
//! and speak raw HTTP/1.1 to them so no client library can normalise a path or hide a byte.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keys the tests configure; long enough to pass validation.
pub const KEY_A: &str = "test-key-alpha-0123456789";
/// A second accepted key.
pub const KEY_B: &str = "test-key-bravo-9876543210";

/// A child process killed when dropped, with its output collected.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    pub output: Arc<Mutex<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Everything the process printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM failed");
    }

    /// Waits for exit up to `limit`, returning the exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Starts the fake Ollama with `args`.
pub fn fake(args: &[&str]) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fake-ollama"));
    command.args(args);
    spawn(command, "listening on ")
}

/// Starts the proxy in front of `upstream` with the two test keys and `env` on top.
pub fn proxy(upstream: &str, env: &[(&str, &str)]) -> Running {
    let mut command = proxy_command();
    command
        .env("OLLAMA_UPSTREAM", upstream)
        .env("PROXY_API_KEYS", format!("{KEY_A},{KEY_B}"))
        .env("PORT", "0")
        .env("PROXY_BIND", "127.0.0.1");
    for (k, v) in env {
        command.env(k, v);
    }
    spawn(command, "\"listening\"")
}

/// The proxy binary with a clean environment (only PATH kept).
pub fn proxy_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ollama-proxy"));
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("RUST_LOG", "info");
    command
}

/// Spawns `command`, collects its output, and waits for the line containing `ready` (with an address).
pub fn spawn(mut command: Command, ready: &str) -> Running {
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = command.spawn().expect("the binary starts");
    let output = Arc::new(Mutex::new(String::new()));
    let (sender, receiver) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    for (stream, sender) in
        [(Box::new(stdout) as Box<dyn Read + Send>, sender.clone()), (Box::new(stderr), sender)]
    {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut o) = output.lock() {
                    o.push_str(&line);
                    o.push('\n');
                }
                let _ = sender.send(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut running = Running { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), output };
    while Instant::now() < deadline {
        let Ok(line) = receiver.recv_timeout(Duration::from_millis(100)) else {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("process exited with {status} before it was ready:\n{}", running.output());
            }
            continue;
        };
        if line.contains(ready) {
            running.addr = find_addr(&line).expect("the ready line names an address");
            return running;
        }
    }
    panic!("process not ready in time:\n{}", running.output());
}

fn find_addr(line: &str) -> Option<SocketAddr> {
    line.split(|c: char| c == '"' || c.is_whitespace()).find_map(|word| word.parse().ok())
}

/// An address nothing listens on.
pub fn closed_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    /// Value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(raw, "{k}: {v}\r\n");
    }
    if !body.is_empty() || method == "POST" {
        let _ = write!(raw, "Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    stream.write_all(raw.as_bytes()).expect("write");
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse(&String::from_utf8_lossy(&bytes))
}

/// GET with the first test key.
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[("Authorization", &bearer(KEY_A))], "")
}

/// POST JSON with the first test key.
pub fn post(addr: SocketAddr, path: &str, body: &str) -> Reply {
    request(addr, "POST", path, &[("Authorization", &bearer(KEY_A))], body)
}

/// `Bearer KEY`.
pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Parses a full HTTP/1.1 response, decoding a chunked body.
pub fn parse(text: &str) -> Reply {
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_owned() };
    Reply { status, head: head.to_owned(), body }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

/// Sends a request and records when each piece of the answer arrived (ms since sending).
pub fn timed_stream(addr: SocketAddr, path: &str, body: &str) -> Vec<(u128, String)> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\nAuthorization: Bearer {KEY_A}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let started = Instant::now();
    stream.write_all(raw.as_bytes()).expect("write");
    let mut pieces = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                pieces.push((started.elapsed().as_millis(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        }
    }
    pieces
}

/// Sends `raw` on an open (keep-alive) connection and reads one response with a `Content-Length`.
pub fn exchange(stream: &mut TcpStream, raw: &[u8]) -> std::io::Result<Reply> {
    stream.write_all(raw)?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut reply = parse(&head);
    let length = reply.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    reply.body = String::from_utf8_lossy(&body).into_owned();
    Ok(reply)
}

/// The paths the fake Ollama has received so far.
pub fn seen(ollama: &Running) -> Vec<String> {
    let seen = request(ollama.addr, "GET", "/__fake/seen", &[], "").json();
    serde_json::from_value(seen).unwrap_or_default()
}

/// The paths the proxy's health probes asked the fake Ollama for so far.
pub fn probes(ollama: &Running) -> Vec<String> {
    let probes = request(ollama.addr, "GET", "/__fake/probes", &[], "").json();
    serde_json::from_value(probes).unwrap_or_default()
}

/// The value of the un-labelled or labelled sample `name` in the proxy's `/metrics` (0 if absent).
pub fn metric(proxy: &Running, name: &str) -> u64 {
    let text = get(proxy.addr, "/metrics").body;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

/// What a scripted upstream does for one request.
pub enum Step {
    /// Writes these bytes, as they are.
    Write(Vec<u8>),
    /// Waits this long.
    Wait(Duration),
    /// Closes the connection.
    Close,
}

/// How a [`Scripted`] upstream answers a request: its target and its place on its connection in,
/// the steps out.
pub type Script = fn(&str, usize) -> Vec<Step>;

/// A raw HTTP/1.1 upstream on loopback: on each connection it reads request after request (head
/// and `Content-Length` body) and answers each with the steps its script gives for the request's
/// target and its place on the connection (0 for the first). The bytes are sent exactly as
/// scripted, so a test can send what no real server would.
pub struct Scripted {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Scripted {
    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The targets of the requests it has read so far, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|seen| seen.clone()).unwrap_or_default()
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Starts a [`Scripted`] upstream.
pub fn scripted(script: Script) -> Scripted {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let upstream = Scripted { addr, seen: seen.clone(), connections: connections.clone() };
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = seen.clone();
            std::thread::spawn(move || serve_script(stream, script, &seen));
        }
    });
    upstream
}

/// A request's target and `Content-Length` (0 when absent), its head read off `reader`; `None`
/// once the connection ends first.
fn read_request_head(reader: &mut impl BufRead) -> Option<(String, usize)> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let target = line.split(' ').nth(1).unwrap_or_default().to_owned();
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some((target, length));
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
}

fn serve_script(mut stream: TcpStream, script: Script, seen: &Mutex<Vec<String>>) {
    let Ok(clone) = stream.try_clone() else { return };
    let mut reader = BufReader::new(clone);
    for nth in 0.. {
        let Some((target, length)) = read_request_head(&mut reader) else { return };
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(mut seen) = seen.lock() {
            seen.push(target.clone());
        }
        for step in script(&target, nth) {
            match step {
                Step::Write(bytes) => {
                    if stream.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Step::Wait(pause) => std::thread::sleep(pause),
                Step::Close => return,
            }
        }
    }
}

/// What an [`early_answer_upstream`] does after answering a big request.
#[derive(Clone, Copy, Debug)]
pub enum AfterAnswer {
    /// Closes the connection with most of the body unread (the kernel sends a reset).
    Close,
    /// Keeps the connection open without reading any further (and without saying it will close).
    Hold,
}

/// The answer to a big request, before its body was read.
pub const EARLY_ANSWER: &str = "{\"error\":\"invalid character\"}";

/// An upstream that answers probes and small requests (200, kept alive), and a request whose body
/// is over 1 MiB after reading its head and a few KB of the body: a 400 (with `Connection: close`
/// only when it then closes), then [`AfterAnswer`]. Its address, and how many big requests it saw.
pub fn early_answer_upstream(after: AfterAnswer) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    early_answer_on(after, None)
}

/// The same over TLS for `localhost`, with a fresh self-signed certificate; also the
/// certificate's PEM.
pub fn early_answer_tls_upstream(
    after: AfterAnswer,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server config");
    let (addr, big) = early_answer_on(after, Some(Arc::new(config)));
    (addr, big, certified.cert.pem())
}

/// The proxy's settings for an [`early_answer_upstream`]: an ejection would last a minute, and the
/// upstream timeout is short, so a write that waits for it fails the test in seconds.
pub const EARLY_ANSWER_ENV: [(&str, &str); 4] = [
    ("UPSTREAM_EJECT_MS", "60000"),
    ("UPSTREAM_EJECT_MAX_MS", "60000"),
    ("UPSTREAM_TIMEOUT_MS", "5000"),
    // One worker, one pool: the next request would find the cut-off connection if it went back.
    ("PROXY_WORKERS", "1"),
];

/// Sends a 5 MiB body through `proxy` to an [`early_answer_upstream`] labelled `upstream` in
/// `/metrics` that saw `big` requests: the client gets the 400 and its body at once, the upstream
/// saw the request once, the box is neither ejected nor counted as failed, and the next request
/// is served.
pub fn assert_early_answer_relayed(
    proxy: &Running,
    upstream: &str,
    big: &std::sync::atomic::AtomicUsize,
    after: AfterAnswer,
) {
    let huge = format!("{{\"model\":\"m\",\"prompt\":\"{}", "x".repeat(5 << 20));
    let started = Instant::now();
    let reply = post(proxy.addr, "/api/chat", &huge);
    assert_eq!((reply.status, reply.body.as_str()), (400, EARLY_ANSWER), "{after:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "{after:?}: {:?}", started.elapsed());
    assert_eq!(big.load(std::sync::atomic::Ordering::SeqCst), 1, "{after:?}: the request was sent once");
    let label = format!("{{upstream=\"{upstream}\"}}");
    assert_eq!(metric(proxy, &format!("ollama_proxy_upstream_up{label}")), 1, "{after:?}: not ejected");
    assert_eq!(metric(proxy, &format!("ollama_proxy_upstream_failures_total{label}")), 0, "{after:?}");
    let next = post(proxy.addr, "/api/chat", "{\"model\":\"m\"}");
    assert_eq!((next.status, next.body.as_str()), (200, "{\"done\":true}"), "{after:?}");
}

fn early_answer_on(
    after: AfterAnswer,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let big = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = big.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            // As Go's net/http: without it, the answer could wait behind an unacknowledged TLS
            // record (Nagle) and be thrown away by the reset.
            let _ = stream.set_nodelay(true);
            let (seen, tls) = (seen.clone(), tls.clone());
            std::thread::spawn(move || match tls {
                Some(config) => {
                    let Ok(session) = tokio_rustls::rustls::ServerConnection::new(config) else { return };
                    let stream = tokio_rustls::rustls::StreamOwned::new(session, stream);
                    serve_early(BufReader::new(stream), after, &seen);
                }
                None => serve_early(BufReader::new(stream), after, &seen),
            });
        }
    });
    (addr, big)
}

fn serve_early<S: Read + Write>(
    mut reader: BufReader<S>,
    after: AfterAnswer,
    big: &std::sync::atomic::AtomicUsize,
) {
    loop {
        let Some((target, length)) = read_request_head(&mut reader) else { return };
        if length > 1 << 20 {
            let mut some = [0u8; 4096];
            if reader.read_exact(&mut some).is_err() {
                return;
            }
            big.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Closing says so; holding does not, so only the proxy's own rule (a connection whose
            // request was cut off is not used again) keeps the next request off this connection.
            let close = if let AfterAnswer::Close = after { "Connection: close\r\n" } else { "" };
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n{close}Content-Length: {}\r\n\r\n{EARLY_ANSWER}",
                EARLY_ANSWER.len()
            );
            let stream = reader.get_mut();
            let _ = stream.write_all(answer.as_bytes()).and_then(|()| stream.flush());
            if let AfterAnswer::Hold = after {
                std::thread::sleep(Duration::from_secs(20));
            }
            return;
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let reply = match target.as_str() {
            "/api/version" => "{\"version\":\"0.5.0\"}",
            "/api/tags" | "/api/ps" => "{\"models\":[]}",
            _ => "{\"done\":true}",
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        let stream = reader.get_mut();
        if stream.write_all(answer.as_bytes()).and_then(|()| stream.flush()).is_err() {
            return;
        }
    }
}
