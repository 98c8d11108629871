//! Shared end-to-end test support: fake upstreams, a leak-checking client, the runtimes, and the
//! one table of scenarios every runtime must pass.
#![allow(dead_code)]

pub mod client;
pub mod fakes;
pub mod scenarios;
pub mod spin;
pub mod workers;

/// A running edge instance; stopped when dropped.
pub struct Edge {
    /// e.g. `http://127.0.0.1:41234`.
    pub base: String,
    /// Keeps the runtime alive.
    pub _guard: Box<dyn std::any::Any>,
}

/// Starts an edge instance with the given variables.
pub type Start = fn(&[(&str, String)]) -> Edge;
