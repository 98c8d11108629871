//! End-to-end: the real Spin component on Spin's key-value store (`STORE=key_value`) under
//! `spin-host`, which grants it no `SQLite` and refuses keys and values over the hosted stores'
//! limits: the same scenarios as on `SQLite`.

mod support;

edge_scenarios!(support::spin::start_key_value);
