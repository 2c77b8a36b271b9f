//! The embedded stores as the node builds them from its config.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use civkit_framework::registry::ComponentConfig;
use civkit_framework::BuildContext;
use civkit_node::components;
use figment::value::{Dict, Value};
use nostr::Keys;

fn build(ty: &str, data_dir: &std::path::Path) -> civkit_framework::Result<()> {
    let mut table = Dict::new();
    table.insert("type".into(), Value::from(ty));
    let ctx = BuildContext::new(data_dir, "persister", Keys::generate());
    components::registry()
        .build_persister(&ComponentConfig::new("persister", table), &ctx)
        .map(drop)
}

/// A node upgraded from the sled default must not start on an empty LMDB
/// store and look as if it had lost every event.
#[test]
fn the_lmdb_default_refuses_a_data_dir_that_holds_a_sled_store() {
    let dir = tempfile::tempdir().unwrap();
    drop(civkit_sled::SledPersister::open(&dir.path().join("events.sled")).unwrap());
    let err = build("lmdb", dir.path()).unwrap_err().to_string();
    assert!(err.contains("type = \"sled\""), "{err}");
    assert!(!dir.path().join("events.lmdb").exists(), "nothing created");
    build("sled", dir.path()).unwrap();

    let fresh = tempfile::tempdir().unwrap();
    build("lmdb", fresh.path()).unwrap();
    assert!(fresh.path().join("events.lmdb").exists());
}
