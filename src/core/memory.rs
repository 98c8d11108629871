//! An in-memory [`Platform`](super::seam::Platform) for native tests: real SQLite (in memory,
//! initialised from `d1-migrations/`), scripted upstreams and a fake clock.
