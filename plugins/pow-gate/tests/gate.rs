//! The gate, plugged into a test node, through the memory transport.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::sync::Arc;

use civkit_framework::testing::{TestNode, WireClient};
use civkit_plugin_pow::{leading_zero_bits, PowConfig, PowGate};
use nostr::{EventBuilder, Filter, Keys, Kind, Tag};

fn node(min_difficulty: u8, kinds: Vec<u16>) -> TestNode {
    let gate = PowGate::new(PowConfig {
        min_difficulty,
        kinds,
    });
    TestNode::builder().service("pow", Arc::new(gate)).build()
}

#[tokio::test]
async fn events_without_enough_work_are_refused_with_pow_prefix() {
    let tn = node(8, vec![]);
    let mut c = tn.client().await;
    let k = Keys::generate();
    // Find an event that has less than 12 bits by construction (no mining).
    let lazy = loop {
        let e = EventBuilder::text_note("no work")
            .sign_with_keys(&k)
            .unwrap();
        if leading_zero_bits(e.id.as_bytes()) < 8 {
            break e;
        }
    };
    let (ok, msg) = c.publish(&lazy).await;
    assert!(!ok);
    assert!(msg.starts_with("pow: difficulty"), "{msg}");

    let mined = EventBuilder::text_note("worked")
        .pow(8)
        .sign_with_keys(&k)
        .unwrap();
    assert!(leading_zero_bits(mined.id.as_bytes()) >= 8);
    assert_eq!(c.publish(&mined).await, (true, String::new()));
    assert_eq!(
        c.req("s", vec![Filter::new().author(k.public_key())]).await,
        vec![mined]
    );
}

#[tokio::test]
async fn a_lower_committed_target_is_refused_even_if_lucky() {
    let tn = node(4, vec![]);
    let mut c = tn.client().await;
    let k = Keys::generate();
    // Grind a nonce whose commitment says 2 until the id happens to have 4
    // bits: the id qualifies, the commitment does not.
    let e = (0u64..)
        .map(|n| {
            EventBuilder::new(Kind::TextNote, "lucky")
                .tag(Tag::parse(["nonce", &n.to_string(), "2"]).unwrap())
                .sign_with_keys(&k)
                .unwrap()
        })
        .find(|e| leading_zero_bits(e.id.as_bytes()) >= 4)
        .unwrap();
    let (ok, msg) = c.publish(&e).await;
    assert!(!ok && msg.starts_with("pow: committed target 2"), "{msg}");
}

#[tokio::test]
async fn only_configured_kinds_are_gated_and_nip11_announces_it() {
    let tn = node(16, vec![7]);
    let mut c = tn.client().await;
    let k = Keys::generate();
    let note = EventBuilder::text_note("kind 1 is free")
        .sign_with_keys(&k)
        .unwrap();
    assert!(c.publish(&note).await.0);
    let reaction = EventBuilder::new(Kind::from(7), "+")
        .sign_with_keys(&k)
        .unwrap();
    if leading_zero_bits(reaction.id.as_bytes()) < 16 {
        assert!(!c.publish(&reaction).await.0);
    }
    assert!(tn.node.supported_nips().contains(&13));
    assert_eq!(tn.node.service_limitations()["min_pow_difficulty"], 16);
}
