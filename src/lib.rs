//! Ouija Virtual's edge module: ask the spirits, get an answer from Groq, Ollama or the canned
//! answers, never an error. One platform-neutral [`core`], one thin adapter per runtime.

pub mod core;

#[cfg(all(any(feature = "cloudflare", feature = "spin"), target_arch = "wasm32"))]
mod platform;
