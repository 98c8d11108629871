//! The smoke program against real local stacks: `wrangler dev` (workerd + a local D1) configured
//! to ask Ollama through the real ollama-proxy binary, in front of the proxy crate's fake Ollama.
//! It must pass there and against the Spin component under spin-host, and fail with the right
//! message when the database was never migrated or the proxy key is wrong.
//!
//! Needs the built Worker (`build/`), wrangler (`node_modules/`), ollama-proxy's debug binaries
//! and the Spin component with its host (`target/spin/`): `make test-smoke` builds them first.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ouija_edge::core::config::VARIABLES;
use ouija_harness::{
    Running, free_port, migrate_d1, repo_root, start_spin_host, start_wrangler_dev, wait_ready,
};

const KEY: &str = "smoke-test-key-0123456789abcdef";
const WRONG_KEY: &str = "not-the-key-0123456789abcdef";

fn required(path: PathBuf) -> PathBuf {
    assert!(path.exists(), "{} is missing: run `make test-smoke`, which builds it first", path.display());
    path
}

/// The proxy crate's fake Ollama and the real proxy in front of it.
struct ProxyStack {
    url: String,
    _fake: Running,
    _proxy: Running,
}

fn start_proxy() -> ProxyStack {
    let bin = repo_root().join("ollama-proxy/target/debug");
    let mut fake = Command::new(required(bin.join("fake-ollama")));
    fake.args(["--listen", "127.0.0.1:0"]).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut fake = Running::spawn(fake, None);
    let mut line = String::new();
    BufReader::new(fake.child().stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("fake's first line");
    let fake_addr = line.trim().strip_prefix("listening on ").expect("`listening on ADDR`").to_owned();
    let port = free_port();
    let mut proxy = Command::new(required(bin.join("ollama-proxy")));
    proxy
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OLLAMA_UPSTREAM", format!("http://{fake_addr}"))
        .env("OLLAMA_MODEL", "qwen2.5:0.5b")
        .env("PROXY_API_KEYS", KEY)
        .env("PROXY_BIND", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let proxy = Running::spawn(proxy, None);
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/livez"), Path::new("/dev/null"));
    ProxyStack { url, _fake: fake, _proxy: proxy }
}

/// `wrangler dev` on a free port with its own database directory, migrated or left empty.
fn start_edge(name: &str, migrated: bool, vars: &[(&str, String)]) -> (String, Running) {
    required(repo_root().join("build/index.js"));
    let dir = repo_root().join(format!("target/smoke-e2e/{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the database directory");
    if migrated {
        migrate_d1(&dir);
    }
    start_wrangler_dev(dir, VARIABLES, vars)
}

/// The Spin component under the project's `wasmtime` host, with its own migrated `SQLite` file.
fn start_spin() -> (String, Running) {
    let spin = repo_root().join("target/spin");
    required(spin.join("spin-host"));
    required(spin.join("ouija_edge.wasm"));
    let dir = repo_root().join(format!("target/smoke-e2e/spin-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the database directory");
    start_spin_host(&spin, dir, &[])
}

/// The edge asks Ollama through the proxy with the right key.
fn edge_vars(proxy: &ProxyStack) -> Vec<(&'static str, String)> {
    vec![
        ("OLLAMA_URL", proxy.url.clone()),
        ("OLLAMA_PROXY_TOKEN", KEY.to_owned()),
        ("OLLAMA_MODEL", "qwen2.5:0.5b".to_owned()),
        ("ENVIRONMENT", "smoke-test".to_owned()),
    ]
}

/// A finished smoke run: exit code, full output, and each check's line by name.
struct Run {
    code: Option<i32>,
    output: String,
    lines: BTreeMap<String, String>,
}

impl Run {
    fn line(&self, check: &str) -> &str {
        self.lines.get(check).unwrap_or_else(|| panic!("no line for {check}:\n{}", self.output))
    }

    fn assert_passed(&self, check: &str) {
        assert!(self.line(check).starts_with("PASS"), "{check} should pass:\n{}", self.output);
    }

    fn assert_failed_with(&self, check: &str, message: &str) {
        let line = self.line(check);
        assert!(
            line.starts_with("FAIL") && line.contains(message),
            "{check} should fail with {message:?}:\n{}",
            self.output
        );
    }
}

fn smoke(args: &[&str], proxy_key: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ouija-smoke"));
    command.args(args).env_remove("SMOKE_URL").env_remove("SMOKE_PROXY_URL").env_remove("SMOKE_PROXY_KEY");
    if let Some(key) = proxy_key {
        command.env("SMOKE_PROXY_KEY", key);
    }
    let output = command.output().expect("run ouija-smoke");
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let lines = text
        .lines()
        .filter(|l| ["PASS  ", "FAIL  ", "SKIP  "].iter().any(|p| l.starts_with(p)))
        .filter_map(|l| l.split_whitespace().nth(1).map(|name| (name.to_owned(), l.to_owned())))
        .collect();
    // Shown by `cargo test -- --nocapture`, and with any failure.
    println!("$ ouija-smoke {}\n{text}", args.join(" "));
    Run { code: output.status.code(), output: text, lines }
}

const PROXY_CHECKS: &[&str] = &["proxy-health", "proxy-auth-required", "proxy-tags", "proxy-pull-refused"];
const EDGE_CHECKS: &[&str] = &[
    "health",
    "ask",
    "ask-bad-input",
    "dashboard-json",
    "dashboard-page",
    "openapi",
    "docs-page",
    "board-page",
    "ask-p95",
];

#[test]
fn smoke_passes_against_the_local_edge_and_proxy() {
    let proxy = start_proxy();
    let (base, _edge) = start_edge("pass", true, &edge_vars(&proxy));
    let args = ["--url", &base, "--proxy-url", &proxy.url, "--asks", "20", "--expect-source", "ollama"];
    let run = smoke(&args, Some(KEY));
    for check in EDGE_CHECKS.iter().chain(PROXY_CHECKS) {
        run.assert_passed(check);
    }
    assert!(run.line("ask").contains("answered by ollama"), "{}", run.output);
    assert!(run.line("ask-p95").contains("20 asks"), "{}", run.output);
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert!(run.output.contains("smoke PASS: 13 passed, 0 failed, 0 skipped"), "{}", run.output);
}

#[test]
fn smoke_passes_against_the_local_spin_component() {
    let (base, _spin) = start_spin();
    let run = smoke(&["--url", &base, "--asks", "10", "--expect-source", "sqlite"], None);
    for check in EDGE_CHECKS {
        run.assert_passed(check);
    }
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert!(run.output.contains("smoke PASS: 9 passed, 0 failed, 4 skipped"), "{}", run.output);
}

#[test]
fn smoke_fails_on_a_wrong_proxy_key_and_says_so() {
    let proxy = start_proxy();
    let (base, _edge) = start_edge("wrong-key", true, &edge_vars(&proxy));
    let run = smoke(&["--url", &base, "--proxy-url", &proxy.url, "--asks", "4"], Some(WRONG_KEY));
    assert_eq!(run.code, Some(1), "{}", run.output);
    run.assert_passed("health");
    run.assert_passed("proxy-health");
    run.assert_passed("proxy-auth-required");
    run.assert_failed_with(
        "proxy-tags",
        "the proxy refused the key (401): PROXY_KEY must be one of the proxy's PROXY_API_KEYS",
    );
    run.assert_failed_with("proxy-pull-refused", "refused the key (401)");
    assert!(!run.output.contains(WRONG_KEY), "the key must never be printed:\n{}", run.output);
    assert!(run.output.contains("smoke FAIL:"), "{}", run.output);
}

#[test]
fn smoke_fails_when_the_database_was_never_migrated_and_says_so() {
    let (base, _edge) = start_edge("no-database", false, &[]);
    let run = smoke(&["--url", &base, "--asks", "2"], None);
    assert_eq!(run.code, Some(1), "{}", run.output);
    run.assert_failed_with("health", "HTTP 503 status critical");
    run.assert_failed_with("health", "migrations were not applied");
    run.assert_failed_with("ask", "HTTP 503");
    let skipped = run.line("proxy-tags");
    assert!(skipped.starts_with("SKIP") && skipped.ends_with("no proxy URL given (--proxy-url / PROXY_URL)"));
    assert!(run.output.lines().last().is_some_and(|l| l.starts_with("smoke FAIL:")), "{}", run.output);
}
