//! The websocket transport passes the shared transport conformance suite.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

civkit_framework::transport_conformance!(|node, sd| async move {
    common::start(node, sd, civkit_nostr_ws::NostrWsConfig::default()).await
});
