//! A runtime under test as a child process: started in its own process group with its output in
//! a log file, waited for until `GET /health` answers, and stopped with its whole group when
//! dropped (SIGTERM, then SIGKILL after 5 s), its run directory removed.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A running runtime; stopped when dropped.
pub struct Running {
    child: Child,
    dir: PathBuf,
}

impl Running {
    /// Spawns `command` (logging to `dir/log_name`) and waits until `{base}/health` answers.
    pub fn start(mut command: Command, dir: PathBuf, log_name: &str, base: &str) -> Running {
        let log_path = dir.join(log_name);
        let log = fs::File::create(&log_path).expect("create log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            // wrangler starts workerd as a child: a group of its own lets Drop stop them all.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        let running = Running { child, dir };
        wait_ready(base, &log_path);
        running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-s", "TERM", "--", &group]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
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
    panic!("{base} did not answer within 60 s:\n{}", fs::read_to_string(log).unwrap_or_default());
}
