//! Runs the real Spin component under `spin-host` (wasmtime with Spin's `sqlite` and `variables`
//! interfaces), one instance per test with its own database file migrated from `d1-migrations/`,
//! configured with `SPIN_VARIABLE_*` as Spin's environment provider would be.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use super::Edge;
use super::process::{Running, free_port};

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

/// Starts the component with `vars` as `SPIN_VARIABLE_*` (no others) and waits until it answers.
pub fn start(vars: &[(&str, String)]) -> Edge {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let out = built();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = root().join(format!("target/e2e/spin-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create run directory");
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
    let base = format!("http://127.0.0.1:{port}");
    let guard = Running::start(command, dir, "spin-host.log", &base);
    Edge { base, _guard: Box::new(guard) }
}
