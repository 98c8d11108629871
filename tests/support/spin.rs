//! Runs the real Spin component under `spin-host` (wasmtime with Spin's `sqlite` and `variables`
//! interfaces), one instance per test with its own database file migrated from `d1-migrations/`,
//! configured with `SPIN_VARIABLE_*` as Spin's environment provider would be.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use ouija_harness::{SpinStore, repo_root, start_spin_host_with};

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

/// A fresh run directory.
fn run_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = repo_root().join(format!("target/e2e/spin-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create run directory");
    dir
}

/// Starts the component on Spin's `SQLite` with `vars` as `SPIN_VARIABLE_*` (no others) and waits
/// until it answers.
pub fn start(vars: &[(&str, String)]) -> Edge {
    start_in(run_dir(), vars)
}

/// Starts the component on the `SQLite` file already in `dir` (migrations it has seen are skipped).
pub fn start_in(dir: PathBuf, vars: &[(&str, String)]) -> Edge {
    let (base, guard) = start_spin_host_with(built(), dir.clone(), vars, SpinStore::Sqlite);
    Edge { base, runtime: guard, dir, start_in, exact_totals: true }
}

/// Starts the component on Spin's key-value store (`STORE=key_value`; spin-host grants no
/// `SQLite`, and refuses keys and values over the hosted stores' limits).
pub fn start_key_value(vars: &[(&str, String)]) -> Edge {
    start_in_key_value(run_dir(), vars)
}

/// Starts the component on the key-value store already in `dir`.
pub fn start_in_key_value(dir: PathBuf, vars: &[(&str, String)]) -> Edge {
    let mut vars = vars.to_vec();
    vars.push(("STORE", "key_value".to_owned()));
    let (base, guard) = start_spin_host_with(built(), dir.clone(), &vars, SpinStore::KeyValue);
    Edge { base, runtime: guard, dir, start_in: start_in_key_value, exact_totals: false }
}
