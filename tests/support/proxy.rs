//! Runs the real ollama-proxy binary in front of a fake Ollama, one instance per test, with one
//! bearer key, its log in its own run directory.
//!
//! The binary is ollama-proxy's debug build, the one `make test` builds for the proxy's own tests
//! and the smoke tests. The edge's tests run first, so it is built here, once per test binary: when
//! it is up to date that is a no-op.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use ouija_harness::{Running, repo_root};

use super::client::Client;

/// Builds ollama-proxy's debug binary in its own workspace (its lock file and target dir).
fn built() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = repo_root().join("ollama-proxy");
        let status = Command::new("cargo")
            .args(["build", "--locked", "--quiet", "--bin", "ollama-proxy"])
            .current_dir(&workspace)
            .status()
            .expect("run cargo build for ollama-proxy");
        assert!(status.success(), "building ollama-proxy failed");
        workspace.join("target/debug/ollama-proxy")
    })
}

/// A running ollama-proxy; stopped when dropped, its run directory (with its log) removed.
pub struct OllamaProxy {
    /// e.g. `http://127.0.0.1:41234`: what the edge's `OLLAMA_URL` points at.
    pub url: String,
    key: String,
    _running: Running,
}

impl OllamaProxy {
    /// Starts the proxy in front of the Ollama at `upstream`, accepting only `key`, on a free
    /// loopback port, and waits until it is live. Only these settings are passed (the environment
    /// is cleared), so a developer's own never reach it.
    pub fn start(upstream: &str, key: &str) -> OllamaProxy {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = repo_root().join(format!("target/e2e/ollama-proxy-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create run directory");
        let command = |port: u16| {
            let mut command = Command::new(built());
            command
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("OLLAMA_UPSTREAM", upstream)
                .env("PROXY_API_KEYS", key)
                .env("PROXY_BIND", "127.0.0.1")
                .env("PORT", port.to_string())
                .env("RUST_LOG", "info");
            command
        };
        let (url, running) = Running::start(command, dir, "ollama-proxy.log", "/livez");
        OllamaProxy { url, key: key.to_owned(), _running: running }
    }

    /// `GET /metrics` with the key: the proxy's own counters, as Prometheus text.
    pub fn metrics(&self) -> String {
        let bearer = format!("Bearer {}", self.key);
        let reply = Client::new(&self.url).send("GET", "/metrics", &[("authorization", &bearer)], Vec::new());
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }
}
