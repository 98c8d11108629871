//! Runs the real Spin component under `spin-host` (wasmtime with Spin's `sqlite` and `variables`
//! interfaces), one instance per test with its own database file migrated from `d1-migrations/`,
//! configured with `SPIN_VARIABLE_*` as Spin's environment provider would be.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use ouija_harness::{repo_root, start_spin_host};

use super::Edge;

/// Builds the component and (once per version of its sources, cached) the host, once per test binary.
fn built() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("spin-host/build.sh"))
            .status()
            .expect("run spin-host/build.sh");
        assert!(status.success(), "building the Spin component or spin-host failed");
        repo_root().join("target/spin")
    })
}

/// Starts the component with `vars` as `SPIN_VARIABLE_*` (no others) and waits until it answers.
pub fn start(vars: &[(&str, String)]) -> Edge {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = repo_root().join(format!("target/e2e/spin-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create run directory");
    start_in(dir, vars)
}

/// Starts the component on the `SQLite` file already in `dir` (migrations it has seen are skipped).
pub fn start_in(dir: PathBuf, vars: &[(&str, String)]) -> Edge {
    let (base, guard) = start_spin_host(built(), dir.clone(), vars);
    Edge { base, runtime: guard, dir, start_in }
}
