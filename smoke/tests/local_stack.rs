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
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const KEY: &str = "smoke-test-key-0123456789abcdef";
const WRONG_KEY: &str = "not-the-key-0123456789abcdef";

/// Every variable the Worker reads: all are set, so a developer's `.dev.vars` never leaks in.
const EDGE_VARS: &[&str] = &[
    "GROQ_API_KEY",
    "GROQ_MODEL",
    "GROQ_BASE_URL",
    "GROQ_TIMEOUT_MS",
    "GROQ_RPM",
    "OLLAMA_URL",
    "OLLAMA_MODEL",
    "OLLAMA_PROXY_TOKEN",
    "OLLAMA_TIMEOUT_MS",
    "ASK_BUDGET_MS",
    "ENVIRONMENT",
    "CORS_ORIGINS",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("smoke/ sits in the repository").to_path_buf()
}

fn required(path: PathBuf) -> PathBuf {
    assert!(path.exists(), "{} is missing: run `make test-smoke`, which builds it first", path.display());
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A child process (and its process group), stopped when dropped.
struct Running {
    child: Child,
    cleanup: Option<PathBuf>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-s", "TERM", "--", &group]).stderr(Stdio::null()).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
        if let Some(dir) = &self.cleanup {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn spawn(command: &mut Command, cleanup: Option<PathBuf>) -> Running {
    let child = command.process_group(0).spawn().unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    Running { child, cleanup }
}

fn wait_for(url: &str, what: &str, log: Option<&Path>) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if ureq_like_get(url) {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let log = log.and_then(|p| fs::read_to_string(p).ok()).unwrap_or_default();
    panic!("{what} did not answer {url} within 60 s\n{log}");
}

/// Any HTTP response at all (a 503 from an unmigrated database counts: the server is up).
fn ureq_like_get(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let (authority, path) =
        rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let Ok(mut stream) = std::net::TcpStream::connect(authority) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    if std::io::Write::write_all(&mut stream, request.as_bytes()).is_err() {
        return false;
    }
    let mut first = String::new();
    BufReader::new(stream).read_line(&mut first).is_ok() && first.starts_with("HTTP/1.1 ")
}

/// The proxy crate's fake Ollama and the real proxy in front of it.
struct ProxyStack {
    url: String,
    _fake: Running,
    _proxy: Running,
}

fn start_proxy() -> ProxyStack {
    let bin = root().join("ollama-proxy/target/debug");
    let mut fake = spawn(
        Command::new(required(bin.join("fake-ollama")))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
        None,
    );
    let mut line = String::new();
    BufReader::new(fake.child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("fake's first line");
    let fake_addr = line.trim().strip_prefix("listening on ").expect("`listening on ADDR`").to_owned();
    let port = free_port();
    let proxy = spawn(
        Command::new(required(bin.join("ollama-proxy")))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("OLLAMA_UPSTREAM", format!("http://{fake_addr}"))
            .env("OLLAMA_MODEL", "qwen2.5:0.5b")
            .env("PROXY_API_KEYS", KEY)
            .env("PROXY_BIND", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        None,
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{url}/livez"), "ollama-proxy", None);
    ProxyStack { url, _fake: fake, _proxy: proxy }
}

fn wrangler(args: &[&str]) -> Command {
    let mut command = Command::new(required(root().join("node_modules/.bin/wrangler")));
    command
        .args(args)
        .current_dir(root())
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("OUIJA_SKIP_BUILD", "1")
        .env("CI", "true")
        .env("NO_COLOR", "1");
    command
}

/// `wrangler dev` on a free port with its own database directory, migrated or left empty.
fn start_edge(name: &str, migrated: bool, vars: &[(&str, String)]) -> (String, Running) {
    required(root().join("build/index.js"));
    let dir = root().join(format!("target/smoke-e2e/{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the database directory");
    if migrated {
        let output: Output = wrangler(&["d1", "migrations", "apply", "DB", "--local", "--persist-to"])
            .arg(&dir)
            .output()
            .expect("run wrangler d1 migrations apply");
        assert!(output.status.success(), "migrations failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let log_path = dir.join("wrangler.log");
    let log = fs::File::create(&log_path).expect("create the log");
    let port = free_port();
    let mut command = wrangler(&["dev", "--ip", "127.0.0.1", "--show-interactive-dev-session=false"]);
    command
        .args(["--port", &port.to_string(), "--inspector-port", &free_port().to_string()])
        .arg("--persist-to")
        .arg(&dir);
    for name in EDGE_VARS {
        let value = vars.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str());
        command.arg("--var").arg(format!("{name}:{value}"));
    }
    command.stdin(Stdio::null()).stdout(log.try_clone().expect("clone the log handle")).stderr(log);
    let running = spawn(&mut command, Some(dir));
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{base}/health"), "wrangler dev", Some(&log_path));
    (base, running)
}

/// The Spin component under the project's `wasmtime` host, with its own migrated `SQLite` file.
fn start_spin() -> (String, Running) {
    let spin = root().join("target/spin");
    let dir = root().join(format!("target/smoke-e2e/spin-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the database directory");
    let port = free_port();
    let running = spawn(
        Command::new(required(spin.join("spin-host")))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--sqlite")
            .arg(dir.join("db.sqlite"))
            .arg("--migrations")
            .arg(root().join("d1-migrations"))
            .arg(required(spin.join("ouija_edge.wasm")))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        Some(dir),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{base}/health"), "spin-host", None);
    (base, running)
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
