//! End-to-end: the real Worker under `wrangler dev` (workerd, local D1 migrated and seeded)
//! against fake Groq and Ollama servers on 127.0.0.1.

mod support;

edge_scenarios!(support::workers::start);
