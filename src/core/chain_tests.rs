//! The chain, end to end inside the core, on the in-memory platform.
