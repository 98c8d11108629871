//! End-to-end: the real Spin component under `spin-host` (wasmtime, Spin's `sqlite` on a file migrated
//! and seeded from `d1-migrations/`, Spin variables) against fake Groq and Ollama on 127.0.0.1.

mod support;

edge_scenarios!(support::spin::start);

/// The variable `store` selects the Spin component's store; any other value is a 500 naming
/// STORE (never its value), as every misconfiguration is.
#[test]
fn a_store_variable_of_another_value_is_a_500_naming_store() {
    let edge = support::spin::start(&[("STORE", "postgres-please".to_owned())]);
    let reply = support::client::Client::new(&edge.base).ask("Will it rain?");
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert!(reply.body.contains("STORE") && !reply.body.contains("postgres-please"), "{}", reply.body);
}
