//! Runs the real Spin component under `spin-host` (wasmtime with Spin's `sqlite` and `variables`
//! interfaces), one instance per test with its own database file migrated from `d1-migrations/`,
//! configured with `SPIN_VARIABLE_*` as Spin's environment provider would be.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::Edge;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the component and (once per version of its sources, cached) the host, once per test binary.
fn built() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(root().join("spin-host/build.sh"))
            .status()
            .expect("run spin-host/build.sh");
        assert!(status.success(), "building the Spin component or spin-host failed");
        root().join("target/spin")
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A `spin-host` process, stopped (SIGTERM, then SIGKILL) when dropped.
struct SpinHost {
    child: Child,
    dir: PathBuf,
}

impl Drop for SpinHost {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Starts the component with `vars` as `SPIN_VARIABLE_*` (no others) and waits until it answers.
pub fn start(vars: &[(&str, String)]) -> Edge {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let out = built();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = root().join(format!("target/e2e/spin-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create run directory");
    let log_path = dir.join("spin-host.log");
    let log = fs::File::create(&log_path).expect("create log");
    let port = free_port();

    let mut command = Command::new(out.join("spin-host"));
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--sqlite")
        .arg(dir.join("ouija.db"))
        .arg("--migrations")
        .arg(root().join("d1-migrations"))
        .arg(out.join("ouija_edge.wasm"));
    // A developer's own SPIN_VARIABLE_* must not leak real keys or upstreams into a test.
    for (key, _) in std::env::vars() {
        if key.starts_with("SPIN_VARIABLE_") {
            command.env_remove(key);
        }
    }
    for (name, value) in vars {
        command.env(format!("SPIN_VARIABLE_{name}"), value);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .expect("start spin-host");
    let guard = SpinHost { child, dir };
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &log_path);
    Edge { base, _guard: Box::new(guard) }
}

fn wait_ready(base: &str, log: &Path) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if agent.get(format!("{base}/health")).call().is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("spin-host did not answer within 60 s:\n{}", fs::read_to_string(log).unwrap_or_default());
}
