//! Shared end-to-end test support: fake upstreams, the real ollama-proxy, a leak-checking client,
//! the runtimes, and the one table of scenarios every runtime must pass.
#![allow(dead_code)]

pub mod client;
pub mod fakes;
pub mod proxy;
pub mod scenarios;
pub mod spin;
pub mod workers;

use std::path::PathBuf;

use ouija_harness::Running;

/// A running edge instance; stopped when dropped, its run directory (database included) removed.
pub struct Edge {
    /// e.g. `http://127.0.0.1:41234`.
    pub base: String,
    /// Keeps the runtime alive.
    pub runtime: Running,
    /// The run directory: the runtime's database and log.
    pub dir: PathBuf,
    /// Starts the same runtime in a prepared run directory.
    pub start_in: StartIn,
    /// Whether the dashboard's totals stay exact under concurrent asks: so on SQL; on the
    /// key-value store two racing writes of a totals shard can lose a count (DEPLOY.md).
    pub exact_totals: bool,
}

impl Edge {
    /// Stops this runtime and starts it again on the same database with `vars`, as a restart or
    /// a new deployment would: whatever lived only in the old process is gone.
    #[must_use]
    pub fn restart(mut self, vars: &[(&str, String)]) -> Edge {
        self.runtime.keep_dir();
        let (dir, start_in) = (self.dir.clone(), self.start_in);
        drop(self);
        start_in(dir, vars)
    }
}

/// Starts an edge instance with the given variables.
pub type Start = fn(&[(&str, String)]) -> Edge;

/// Starts an edge instance in a run directory already prepared (by an earlier run).
pub type StartIn = fn(PathBuf, &[(&str, String)]) -> Edge;
