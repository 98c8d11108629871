//! End-to-end: the real Spin component under `spin-host` (wasmtime, Spin's `sqlite` on a file migrated
//! and seeded from `d1-migrations/`, Spin variables) against fake Groq and Ollama on 127.0.0.1.

mod support;

edge_scenarios!(support::spin::start);
