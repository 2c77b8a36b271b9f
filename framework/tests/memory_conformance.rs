//! The memory persister and memory transport pass the shared conformance suites.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::sync::Arc;

use civkit_framework::testing::MemoryPersister;
use civkit_framework::Persister;

mod persister {
    use super::*;
    civkit_framework::persister_conformance!(|| async {
        (Arc::new(MemoryPersister::new()) as Arc<dyn Persister>, ())
    });
}

mod transport {
    civkit_framework::transport_conformance!(|node: civkit_framework::Node, _sd| async move {
        let hub = civkit_framework::testing::MemoryHub::new();
        let t = Box::new(hub.transport("memory"));
        let sd = _sd;
        tokio::spawn(civkit_framework::Transport::run(t, node, sd));
        hub
    });
}
