//! Binds the host to the WIT shipped inside the `spin-sdk` crate the edge module is built with
//! (no hand-copied WIT): finds that crate with `cargo metadata` and writes the `bindgen!` call,
//! with the absolute path of its `wit/` directory, into `OUT_DIR/spin_world.rs`.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("spin-host lives inside the workspace").join("Cargo.toml");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--all-features", "--manifest-path"])
        .arg(&workspace)
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let spin_sdk = metadata["packages"]
        .as_array()
        .and_then(|packages| packages.iter().find(|p| p["name"] == "spin-sdk"))
        .expect("spin-sdk is a dependency of the workspace (feature `spin`)");
    let sdk_manifest = PathBuf::from(spin_sdk["manifest_path"].as_str().expect("a manifest path"));
    let wit = sdk_manifest.parent().expect("a crate directory").join("wit");
    assert!(wit.is_dir(), "no WIT directory at {}", wit.display());

    let bindings = format!(
        r#"wasmtime::component::bindgen!({{
    path: {wit:?},
    inline: "
        package ouija:spin-host;
        world spin-imports {{
            import spin:sqlite/sqlite@3.1.0;
            import spin:key-value/key-value@3.0.0;
            import spin:variables/variables@3.0.0;
        }}
    ",
    world: "ouija:spin-host/spin-imports",
    imports: {{
        "spin:sqlite/sqlite.[static]connection.open-async": store | trappable,
        "spin:sqlite/sqlite.[method]connection.execute-async": store | trappable,
        "spin:sqlite/sqlite.[method]connection.last-insert-rowid-async": store | trappable,
        "spin:sqlite/sqlite.[method]connection.changes-async": store | trappable,
        "spin:key-value/key-value.[static]store.open": store | trappable,
        "spin:key-value/key-value.[method]store.get": store | trappable,
        "spin:key-value/key-value.[method]store.set": store | trappable,
        "spin:key-value/key-value.[method]store.delete": store | trappable,
        "spin:key-value/key-value.[method]store.exists": store | trappable,
        "spin:key-value/key-value.[method]store.get-keys": store | trappable,
        "spin:variables/variables.get": store | trappable,
        default: trappable,
    }},
    with: {{
        "spin:sqlite/sqlite.connection": crate::sqlite::Connection,
        "spin:key-value/key-value.store": crate::key_value::Store,
    }},
    require_store_data_send: true,
}});
"#,
        wit = wit.display().to_string(),
    );
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("spin_world.rs");
    fs::write(out, bindings).expect("write spin_world.rs");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../Cargo.lock");
}
