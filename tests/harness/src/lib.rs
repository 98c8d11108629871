//! The runtimes under test as child processes, shared by the edge's end-to-end tests
//! (`tests/support/`) and the smoke program's (`smoke/tests/`): `wrangler dev` with a local D1,
//! spin-host with a migrated `SQLite` file or a key-value store, each in its own process group with
//! its output in a log, waited for until it answers, and stopped with its whole group when dropped.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The repository's root (this crate lives in `tests/harness/`).
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root exists")
}

/// A free loopback port.
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A running child process; stopped with its process group when dropped (SIGTERM, then SIGKILL
/// after 5 s), its run directory removed.
pub struct Running {
    child: Child,
    dir: Option<PathBuf>,
}

impl Running {
    /// Spawns `command` with its output in `dir/log_name` and waits until `ready_url` gives any
    /// HTTP response (a 503 from an unmigrated database counts: the server is up).
    #[must_use]
    pub fn start(mut command: Command, dir: PathBuf, log_name: &str, ready_url: &str) -> Running {
        let log_path = dir.join(log_name);
        let log = fs::File::create(&log_path).expect("create log");
        command.stdin(Stdio::null()).stdout(log.try_clone().expect("clone log handle")).stderr(log);
        let running = Running::spawn(command, Some(dir));
        wait_ready(ready_url, &log_path);
        running
    }

    /// Spawns `command` as it is set up (its own pipes), in a process group of its own: wrangler
    /// starts workerd as a child, and the group lets `Drop` stop them all.
    #[must_use]
    pub fn spawn(mut command: Command, dir: Option<PathBuf>) -> Running {
        let child = command.process_group(0).spawn().unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        Running { child, dir }
    }

    /// The child, for its pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Keeps the run directory when stopped, so another run can start on the same database.
    pub fn keep_dir(&mut self) {
        self.dir = None;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-s", "TERM", "--", &group]).stderr(Stdio::null()).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Waits up to 60 s until `url` gives any HTTP response; panics with the log otherwise.
pub fn wait_ready(url: &str, log: &Path) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if agent.get(url).call().is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{url} did not answer within 60 s:\n{}", fs::read_to_string(log).unwrap_or_default());
}

/// `wrangler` from `node_modules/`, offline and quiet, run from the repository root, never
/// rebuilding the Worker (tests build it once).
#[must_use]
pub fn wrangler(args: &[&str]) -> Command {
    let mut command = Command::new(repo_root().join("node_modules/.bin/wrangler"));
    command
        .args(args)
        .current_dir(repo_root())
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("OUIJA_SKIP_BUILD", "1")
        .env("CI", "true")
        .env("NO_COLOR", "1");
    command
}

/// Applies `d1-migrations/` to a local D1 kept in `dir`.
pub fn migrate_d1(dir: &Path) {
    let output = wrangler(&["d1", "migrations", "apply", "DB", "--local", "--persist-to"])
        .arg(dir)
        .output()
        .expect("run wrangler d1 migrations apply");
    assert!(output.status.success(), "migrations failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Starts the built Worker under `wrangler dev` with its D1 in `dir` and returns its base URL.
/// Every name in `variables` is passed (unset ones empty), so a developer's `.dev.vars` never leaks
/// real keys or upstreams into a test.
#[must_use]
pub fn start_wrangler_dev(dir: PathBuf, variables: &[&str], vars: &[(&str, String)]) -> (String, Running) {
    let port = free_port();
    let mut command = wrangler(&["dev", "--ip", "127.0.0.1", "--show-interactive-dev-session=false"]);
    command
        .args(["--port", &port.to_string(), "--inspector-port", &free_port().to_string()])
        .arg("--persist-to")
        .arg(&dir);
    for name in variables {
        let value = vars.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str());
        command.arg("--var").arg(format!("{name}:{value}"));
    }
    let base = format!("http://127.0.0.1:{port}");
    let running = Running::start(command, dir, "wrangler.log", &format!("{base}/health"));
    (base, running)
}

/// Which of Spin's stores spin-host grants the component; the other one is `access-denied`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpinStore {
    /// Spin's `sqlite` database `default`: `dir/ouija.db`, migrated from `d1-migrations/`.
    Sqlite,
    /// Spin's `key-value` store `default`: `dir/ouija-kv.db`, with the hosted store's limits.
    KeyValue,
}

/// Starts the Spin component built into `out` (`target/spin/`) under spin-host with its `SQLite`
/// file in `dir` ([`SpinStore::Sqlite`]); see [`start_spin_host_with`].
#[must_use]
pub fn start_spin_host(out: &Path, dir: PathBuf, vars: &[(&str, String)]) -> (String, Running) {
    start_spin_host_with(out, dir, vars, SpinStore::Sqlite)
}

/// Starts the Spin component built into `out` (`target/spin/`) under spin-host, granted `store`
/// (its file in `dir`) and `vars` as `SPIN_VARIABLE_*` (a developer's own are removed), and
/// returns its base URL.
#[must_use]
pub fn start_spin_host_with(
    out: &Path,
    dir: PathBuf,
    vars: &[(&str, String)],
    store: SpinStore,
) -> (String, Running) {
    let port = free_port();
    let mut command = Command::new(out.join("spin-host"));
    command.arg("--listen").arg(format!("127.0.0.1:{port}"));
    match store {
        SpinStore::Sqlite => command
            .arg("--sqlite")
            .arg(dir.join("ouija.db"))
            .arg("--migrations")
            .arg(repo_root().join("d1-migrations")),
        SpinStore::KeyValue => command.arg("--key-value").arg(dir.join("ouija-kv.db")),
    };
    command.arg(out.join("ouija_edge.wasm"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SPIN_VARIABLE_") {
            command.env_remove(key);
        }
    }
    for (name, value) in vars {
        command.env(format!("SPIN_VARIABLE_{name}"), value);
    }
    let base = format!("http://127.0.0.1:{port}");
    let running = Running::start(command, dir, "spin-host.log", &format!("{base}/health"));
    (base, running)
}
