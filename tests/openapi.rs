//! The committed `OpenAPI` document (`public/api/openapi.json`, served as a static file) is the one
//! the code's types generate. Regenerate with `make openapi` (`OUIJA_BLESS=1` on this test).
#![cfg(feature = "openapi")]

use std::path::Path;

#[test]
fn committed_openapi_document_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("public/api/openapi.json");
    let generated = ouija_edge::core::openapi::json();
    if std::env::var_os("OUIJA_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("public/api")).expect("create public/api");
        std::fs::write(&path, &generated).expect("write public/api/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "public/api/openapi.json is not what the code generates: run `make openapi` and commit it"
    );
}
