//! The runtimes under test as child processes, shared by the edge's end-to-end tests
//! (`tests/support/`) and the smoke program's (`smoke/tests/`): `wrangler dev` with a local D1,
//! spin-host with a migrated `SQLite` file or a key-value store, each in its own process group with
//! its output in a log, waited for until it answers, and stopped with its whole group when dropped.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
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
    /// Spawns `command(port)` on a free loopback port with its output in `dir/log_name`, waits until
    /// `ready_path` on it gives any HTTP response (a 503 from an unmigrated database counts: the
    /// server is up) and returns its base URL. The port is found free, released, then bound by the
    /// child, so another process may take it in between: when the child stops or reports the
    /// address in use before it answers, it is started again on another port (three tries, the
    /// same `dir`; kept after a failed start, for its log).
    #[must_use]
    pub fn start(
        mut command: impl FnMut(u16) -> Command,
        dir: PathBuf,
        log_name: &str,
        ready_path: &str,
    ) -> (String, Running) {
        let log_path = dir.join(log_name);
        for attempt in 1..=3 {
            let port = free_port();
            let mut cmd = command(port);
            let log = fs::File::create(&log_path).expect("create log");
            cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("clone log handle")).stderr(log);
            let mut running = Running::spawn(cmd, None);
            let base = format!("http://127.0.0.1:{port}");
            match wait_until_ready(&format!("{base}{ready_path}"), &log_path, &mut running.child) {
                Ready::Answered => {
                    running.dir = Some(dir);
                    return (base, running);
                }
                Ready::Stopped if attempt < 3 => {}
                Ready::Stopped | Ready::TimedOut => panic!(
                    "{base}{ready_path} did not answer (try {attempt}):\n{}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                ),
            }
        }
        unreachable!("the last try returns or panics")
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
    let ready = poll_ready(url, || false);
    assert!(
        matches!(ready, Ready::Answered),
        "{url} did not answer within 60 s:\n{}",
        fs::read_to_string(log).unwrap_or_default()
    );
}

/// How a start went: see [`Running::start`].
enum Ready {
    Answered,
    /// The child stopped, or its log says its address is in use (workerd, spin-host and the proxy
    /// all say "Address already in use").
    Stopped,
    TimedOut,
}

/// Waits up to 60 s until `url` gives any HTTP response, or until `child` stops or reports its
/// address in use in `log`.
fn wait_until_ready(url: &str, log: &Path, child: &mut Child) -> Ready {
    poll_ready(url, || {
        fs::read_to_string(log).is_ok_and(|text| text.contains("Address already in use"))
            || !matches!(child.try_wait(), Ok(None))
    })
}

fn poll_ready(url: &str, mut stopped: impl FnMut() -> bool) -> Ready {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if agent.get(url).call().is_ok() {
            return Ready::Answered;
        }
        if stopped() {
            return Ready::Stopped;
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ready::TimedOut
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

/// The tests' wrangler configuration (`target/e2e/wrangler.toml`, written once per test process by
/// `scripts/wrangler-test-config.sh`): `wrangler.toml` without its custom build, whose watcher makes
/// wrangler 4.86 start workerd twice and sometimes fail on a port the first start still holds.
fn test_config() -> &'static Path {
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let path = repo_root().join("target/e2e/wrangler.toml");
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/wrangler-test-config.sh"))
            .arg(&path)
            .status()
            .expect("run scripts/wrangler-test-config.sh");
        assert!(status.success(), "writing the tests' wrangler.toml failed");
        path
    })
}

/// Starts the built Worker under `wrangler dev` with its D1 in `dir` and returns its base URL.
/// Every name in `variables` is passed (unset ones empty), so a developer's `.dev.vars` never leaks
/// real keys or upstreams into a test; the configuration is [`test_config`]'s (no build, no
/// watcher: the Worker in `build/` is served as it is).
#[must_use]
pub fn start_wrangler_dev(dir: PathBuf, variables: &[&str], vars: &[(&str, String)]) -> (String, Running) {
    let persist = dir.clone();
    let command = |port: u16| {
        let mut command = wrangler(&["dev", "--ip", "127.0.0.1", "--show-interactive-dev-session=false"]);
        command
            .arg("--config")
            .arg(test_config())
            .args(["--port", &port.to_string(), "--inspector-port", &free_port().to_string()])
            .arg("--persist-to")
            .arg(&persist);
        for name in variables {
            let value = vars.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str());
            command.arg("--var").arg(format!("{name}:{value}"));
        }
        command
    };
    Running::start(command, dir, "wrangler.log", "/health")
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
    let files = dir.clone();
    let command = |port: u16| {
        let mut command = Command::new(out.join("spin-host"));
        command.arg("--listen").arg(format!("127.0.0.1:{port}"));
        match store {
            SpinStore::Sqlite => command
                .arg("--sqlite")
                .arg(files.join("ouija.db"))
                .arg("--migrations")
                .arg(repo_root().join("d1-migrations")),
            SpinStore::KeyValue => command.arg("--key-value").arg(files.join("ouija-kv.db")),
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
        command
    };
    Running::start(command, dir, "spin-host.log", "/health")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(name: &str) -> PathBuf {
        let dir = repo_root().join(format!("target/e2e/harness-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create run directory");
        dir
    }

    /// A server that answers on its port (Python's, on this machine for the browser tests' venv).
    fn http_server(port: u16) -> Command {
        let mut command = Command::new("python3");
        command.args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()]);
        command
    }

    #[test]
    fn a_child_whose_port_was_taken_is_started_again_on_another() {
        let dir = run_dir("port-taken");
        let mut ports = Vec::new();
        let (base, running) = Running::start(
            |port| {
                ports.push(port);
                if ports.len() == 1 {
                    let mut command = Command::new("sh");
                    command.args(["-c", "echo 'bind: Address already in use'; sleep 30"]);
                    command
                } else {
                    http_server(port)
                }
            },
            dir.clone(),
            "server.log",
            "/",
        );
        assert_eq!(ports.len(), 2, "started twice: {ports:?}");
        assert_eq!(base, format!("http://127.0.0.1:{}", ports[1]));
        drop(running);
        assert!(!dir.exists(), "the run directory is removed when the server stops");
    }

    #[test]
    fn a_child_that_stops_at_once_is_tried_three_times_then_reported_with_its_log() {
        let dir = run_dir("stops");
        let mut tries = 0;
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Running::start(
                |_| {
                    tries += 1;
                    let mut command = Command::new("sh");
                    command.args(["-c", "echo 'no database here'; exit 3"]);
                    command
                },
                dir.clone(),
                "server.log",
                "/",
            )
            .0
        }));
        let message = *failed.expect_err("never answered").downcast::<String>().expect("a message");
        assert_eq!(tries, 3);
        assert!(message.contains("no database here") && message.contains("try 3"), "{message}");
        assert!(dir.join("server.log").exists(), "the log is kept");
        let _ = fs::remove_dir_all(&dir);
    }
}
