//! The tests' fake Groq or Ollama as a standalone server, for benchmarks, the soak and for trying
//! the board against a "working" LLM offline:
//! `cargo run --example fake_upstream -- groq|ollama [latency_ms] [answer] [--port N] [--mode-file PATH] [--ok-upstream HOST:PORT] [--stream-gap MS]`.
//! Asked with `stream: true`, it streams the answer word by word, `--stream-gap` ms apart (0 by default).
//! Prints its base URL, then serves until killed.
//!
//! With `--mode-file`, the fake sits behind a small TCP relay on `--port` (any free port when 0 or
//! absent) and re-reads the file every 100 ms, so a soak can flip it between faults while the edge
//! and the proxy keep the same URL. The file holds one word: `ok`, `429[:retry_after_s]`, a status
//! such as `500`, `hang`, `junk`, `garbage`, `drip`, `toolarge`, or `refused` (the relay stops
//! listening and cuts its open connections; any other mode listens again on the same port).
//! `--ok-upstream` sends connections made in `ok` mode to another server instead (the proxy's
//! `fake-ollama`, which streams NDJSON in chunks); open connections are cut when that choice changes,
//! so a pooled connection never keeps the previous mode.

#[allow(dead_code)]
#[path = "../tests/support/fakes.rs"]
mod fakes;

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use fakes::{Fake, Kind, Mode, Streaming};

struct Options {
    kind: Kind,
    latency_ms: u64,
    answer: String,
    port: u16,
    mode_file: Option<PathBuf>,
    ok_upstream: Option<SocketAddr>,
    stream_gap_ms: u64,
}

fn main() {
    let options = parse_args().unwrap_or_else(|problem| {
        eprintln!("{problem}\nusage: fake_upstream groq|ollama [latency_ms] [answer] [--port N] [--mode-file PATH] [--ok-upstream HOST:PORT] [--stream-gap MS]");
        std::process::exit(2);
    });
    let fake = Fake::start(options.kind, Mode::Answer(options.answer.clone()));
    fake.set_latency(Duration::from_millis(options.latency_ms));
    fake.set_streaming(Streaming::Whole, Duration::from_millis(options.stream_gap_ms));
    let Some(mode_file) = options.mode_file.clone() else {
        println!("{}", fake.base_url());
        loop {
            thread::park();
        }
    };
    let fake_addr: SocketAddr = fake
        .base_url()
        .trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|authority| authority.parse().ok())
        .expect("the fake's base URL starts with http://IP:PORT");
    let listener = bind(options.port).unwrap_or_else(|e| {
        eprintln!("cannot listen on 127.0.0.1:{}: {e}", options.port);
        std::process::exit(1);
    });
    let port = listener.local_addr().expect("a bound listener has an address").port();
    let path = match options.kind {
        Kind::Groq => "/openai/v1",
        Kind::Ollama => "",
    };
    println!("http://127.0.0.1:{port}{path}");
    Relay { fake, fake_addr, options, open: Arc::default() }.run(listener, port, &mode_file);
}

fn parse_args() -> Result<Options, String> {
    let mut positional = Vec::new();
    let (mut port, mut mode_file, mut ok_upstream, mut stream_gap_ms) = (0, None, None, 0);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = value()?.parse().map_err(|_| "--port takes a number")?,
            "--mode-file" => mode_file = Some(PathBuf::from(value()?)),
            "--stream-gap" => {
                stream_gap_ms = value()?.parse().map_err(|_| "--stream-gap takes milliseconds")?;
            }
            "--ok-upstream" => {
                ok_upstream = Some(value()?.parse().map_err(|_| "--ok-upstream takes HOST:PORT")?);
            }
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    let kind = match positional.next().as_deref() {
        Some("groq") => Kind::Groq,
        Some("ollama") => Kind::Ollama,
        _ => return Err("the first argument is groq or ollama".to_owned()),
    };
    let latency_ms = positional.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let answer = positional.next().unwrap_or_else(|| "The spirits say yes.".to_owned());
    Ok(Options { kind, latency_ms, answer, port, mode_file, ok_upstream, stream_gap_ms })
}

/// What the mode file asks for.
#[derive(Debug, Clone, PartialEq)]
enum Wanted {
    /// The fake answers in this mode (`Answer` is `ok`).
    Serve(Mode),
    /// Nobody listens: connections are refused.
    Refused,
}

/// Reads the mode file; a missing or unreadable file means `ok`, an unknown word is reported once.
fn read_mode(path: &Path, answer: &str) -> Wanted {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let word = text.split_whitespace().next().unwrap_or("ok");
    let (name, arg) = word.split_once(':').unwrap_or((word, ""));
    let mode = match name {
        "ok" => Mode::Answer(answer.to_owned()),
        "refused" => return Wanted::Refused,
        "429" => Mode::RateLimited(arg.parse().unwrap_or(5)),
        "hang" => Mode::Hang,
        "junk" => Mode::Junk,
        "garbage" => Mode::Garbage,
        "drip" => Mode::SlowDrip,
        "toolarge" => Mode::TooLarge,
        status => {
            let Ok(code) = status.parse() else {
                eprintln!("unknown mode {word:?}; serving ok");
                return Wanted::Serve(Mode::Answer(answer.to_owned()));
            };
            Mode::Status(code)
        }
    };
    Wanted::Serve(mode)
}

fn bind(port: u16) -> io::Result<TcpListener> {
    // The port may still be held for a moment after a `refused` spell; std sets SO_REUSEADDR.
    let started = Instant::now();
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => {
                listener.set_nonblocking(true)?;
                return Ok(listener);
            }
            Err(e) if started.elapsed() > Duration::from_secs(5) => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The relay in front of the fake: owns the public port, so it can stop listening and come back.
struct Relay {
    fake: Fake,
    fake_addr: SocketAddr,
    options: Options,
    /// Relayed connections by number: (client side, upstream side), to cut them on a mode change.
    open: Arc<Mutex<HashMap<u64, (TcpStream, TcpStream)>>>,
}

impl Relay {
    fn run(self, listener: TcpListener, port: u16, mode_file: &Path) -> ! {
        let mut listener = Some(listener);
        let mut wanted = Wanted::Serve(Mode::Answer(self.options.answer.clone()));
        let mut next_read = Instant::now();
        let mut next_id = 0u64;
        loop {
            if Instant::now() >= next_read {
                next_read = Instant::now() + Duration::from_millis(100);
                let now = read_mode(mode_file, &self.options.answer);
                if now != wanted {
                    listener = self.switch(&wanted, &now, listener, port);
                    wanted = now;
                }
            }
            let Some(accepting) = &listener else {
                thread::sleep(Duration::from_millis(20));
                continue;
            };
            match accepting.accept() {
                Ok((client, _)) => {
                    next_id += 1;
                    self.relay(next_id, client, &wanted);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
                Err(e) => eprintln!("accept: {e}"),
            }
        }
    }

    /// Applies a new mode; returns the listener to use from now on (none while refused).
    fn switch(
        &self,
        was: &Wanted,
        now: &Wanted,
        listener: Option<TcpListener>,
        port: u16,
    ) -> Option<TcpListener> {
        let is_ok = |w: &Wanted| matches!(w, Wanted::Serve(Mode::Answer(_)));
        let target_changes = self.options.ok_upstream.is_some() && is_ok(was) != is_ok(now);
        if target_changes || *now == Wanted::Refused || *was == Wanted::Refused {
            self.cut_open_connections();
        }
        match now {
            Wanted::Refused => None,
            Wanted::Serve(mode) => {
                self.fake.set_mode(mode.clone());
                listener.or_else(|| bind(port).map_err(|e| eprintln!("cannot listen again: {e}")).ok())
            }
        }
    }

    fn cut_open_connections(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(PoisonError::into_inner));
        for (client, upstream) in open.values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }

    /// Connects `client` to the fake (or the ok upstream) and copies bytes both ways on two threads.
    fn relay(&self, id: u64, client: TcpStream, wanted: &Wanted) {
        let target = match (wanted, self.options.ok_upstream) {
            (Wanted::Serve(Mode::Answer(_)), Some(ok)) => ok,
            _ => self.fake_addr,
        };
        let open = Arc::clone(&self.open);
        thread::spawn(move || {
            let _ = client.set_nonblocking(false);
            let Ok(upstream) = TcpStream::connect(target) else { return };
            let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
            let clones = (client.try_clone(), upstream.try_clone(), client.try_clone(), upstream.try_clone());
            let (Ok(client_in), Ok(upstream_out), Ok(client_keep), Ok(upstream_keep)) = clones else {
                return;
            };
            open.lock().unwrap_or_else(PoisonError::into_inner).insert(id, (client_keep, upstream_keep));
            let back = thread::spawn(move || pipe(upstream, client));
            pipe(client_in, upstream_out);
            let _ = back.join();
            open.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        });
    }
}

/// Copies `from` into `to` until end of stream or an error, then closes `to` for writing.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
