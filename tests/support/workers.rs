//! Runs the real Worker under `wrangler dev` (workerd + a local D1, migrated and seeded), one
//! instance per test with its own copy of the database, configured with `--var`.

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

fn work_dir() -> PathBuf {
    root().join("target/e2e")
}

fn wrangler(args: &[&str]) -> Command {
    let mut command = Command::new(root().join("node_modules/.bin/wrangler"));
    command
        .args(args)
        .current_dir(root())
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("OUIJA_SKIP_BUILD", "1")
        .env("NO_COLOR", "1");
    command
}

/// Builds the Worker and migrates a template database once per test binary.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let status = Command::new("bash")
            .arg(root().join("scripts/build-worker.sh"))
            .env_remove("OUIJA_SKIP_BUILD")
            .status()
            .expect("run scripts/build-worker.sh");
        assert!(status.success(), "building the Worker failed");
        let dir = work_dir().join(format!("d1-template-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let output = wrangler(&["d1", "migrations", "apply", "DB", "--local", "--persist-to"])
            .arg(&dir)
            .output()
            .expect("run wrangler d1 migrations apply");
        assert!(output.status.success(), "migrations failed: {}", String::from_utf8_lossy(&output.stderr));
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
    let port = free_port();

    let mut command = wrangler(&["dev", "--ip", "127.0.0.1", "--show-interactive-dev-session=false"]);
    command
        .args(["--port", &port.to_string(), "--inspector-port", &free_port().to_string()])
        .arg("--persist-to")
        .arg(&dir);
    // Every variable is set (unset ones empty), so a developer's `.dev.vars` never leaks real keys
    // (or real upstreams) into a test.
    for name in ouija_edge::core::config::VARIABLES {
        let value = vars.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str());
        command.arg("--var").arg(format!("{name}:{value}"));
    }
    let base = format!("http://127.0.0.1:{port}");
    let guard = Running::start(command, dir, "wrangler.log", &base);
    Edge { base, _guard: Box::new(guard) }
}
