//! Runs the real Worker under `wrangler dev` (workerd + a local D1, migrated and seeded), one
//! instance per test with its own copy of the database, configured with `--var`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use ouija_harness::{migrate_d1, repo_root, start_wrangler_dev};

use super::Edge;

fn work_dir() -> PathBuf {
    repo_root().join("target/e2e")
}

/// Builds the Worker and migrates a template database once per test binary.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/build-worker.sh"))
            .env_remove("OUIJA_SKIP_BUILD")
            .status()
            .expect("run scripts/build-worker.sh");
        assert!(status.success(), "building the Worker failed");
        let dir = work_dir().join(format!("d1-template-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        migrate_d1(&dir);
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create directory");
    for entry in fs::read_dir(from).expect("read template").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).expect("copy template file");
        }
    }
}

/// Starts the Worker with `vars` (unset ones are passed empty) and waits until it answers.
pub fn start(vars: &[(&str, String)]) -> Edge {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let template = template();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = work_dir().join(format!("run-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    copy_dir(template, &dir);
    start_in(dir, vars)
}

/// Starts the Worker on the local D1 already in `dir`.
pub fn start_in(dir: PathBuf, vars: &[(&str, String)]) -> Edge {
    let (base, guard) = start_wrangler_dev(dir.clone(), ouija_edge::core::config::VARIABLES, vars);
    Edge { base, runtime: guard, dir, start_in, exact_totals: true }
}
