//! The tests' fake Groq or Ollama as a standalone server, for benchmarks and for trying the board
//! against a "working" LLM offline: `cargo run --example fake_upstream -- groq [latency_ms] [answer]`.
//! Prints its base URL, then serves until killed.

#[allow(dead_code)]
#[path = "../tests/support/fakes.rs"]
mod fakes;

use std::time::Duration;

use fakes::{Fake, Kind, Mode};

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = match args.next().as_deref() {
        Some("groq") => Kind::Groq,
        Some("ollama") => Kind::Ollama,
        _ => {
            eprintln!("usage: fake_upstream groq|ollama [latency_ms] [answer]");
            std::process::exit(2);
        }
    };
    let latency_ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let answer = args.next().unwrap_or_else(|| "The spirits say yes.".to_owned());
    let fake = Fake::start(kind, Mode::Answer(answer));
    fake.set_latency(Duration::from_millis(latency_ms));
    println!("{}", fake.base_url());
    loop {
        std::thread::park();
    }
}
