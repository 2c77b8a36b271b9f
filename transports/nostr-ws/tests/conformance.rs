//! The websocket transport passes the shared transport conformance suite.

mod common;

civkit_framework::transport_conformance!(|node, sd| async move {
    common::start(node, sd, civkit_nostr_ws::NostrWsConfig::default()).await
});
