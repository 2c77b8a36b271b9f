//! The session as the one door, from the side of a hostile remote party:
//! oversized client events, and a federated peer that answers an import
//! subscription with forged, replayed, stray, oversized, malformed and
//! flooding relay messages.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use civkit_framework::testing::conformance::events::event;
use civkit_framework::testing::{TestNode, WireClient};
use civkit_framework::wire::event_message;
use civkit_framework::{Imported, Origin, SessionLimits, Source};
use nostr::{EventBuilder, Filter, JsonUtil, Keys, Kind, Timestamp};

fn now() -> u64 {
    Timestamp::now().as_secs()
}

fn peer_limits() -> SessionLimits {
    SessionLimits {
        events_per_second: 1.0,
        event_burst: 5,
        max_event_bytes: 2_000,
        ..SessionLimits::default()
    }
}

async fn stored(tn: &TestNode, kind: u16) -> usize {
    let mut c = tn.client().await;
    c.req("n", vec![Filter::new().kind(Kind::from(kind))])
        .await
        .len()
}

#[tokio::test]
async fn a_peer_cannot_push_what_it_was_not_asked_for() {
    let tn = TestNode::new();
    let origin = Origin::new(
        "ln",
        Source::LightningPeer {
            node_id: "02aa".into(),
        },
    );
    let (mut s, _out) = tn.node.open_session(origin, peer_limits());
    let req = s.import_request("imp", vec![Filter::new().kind(Kind::from(38383))]);
    assert!(req.starts_with("[\"REQ\",\"imp\""), "{req}");
    let k = Keys::generate();
    let t = now();
    let dropped = |i: Imported| matches!(i, Imported::Dropped(_));

    // Refused before the rate is charged: not an event, outside the filter, or on
    // a subscription this node never opened. The burst of five covers the rest.
    let garbage = [
        "",
        "[",
        "{}",
        "[\"EVENT\",\"imp\",{}]",
        "[\"EVENT\",\"imp\",\"x\"]",
    ];
    for g in garbage {
        assert!(dropped(s.handle_relay_text(g).await), "{g}");
    }
    let note = event(&k, 1, t, "outside the filter", &[]);
    let r = s
        .handle_relay_text(&event_message("imp", &note.as_json()))
        .await;
    assert!(
        matches!(&r, Imported::Dropped(m) if m.starts_with("blocked:")),
        "{r:?}"
    );
    let order = event(&k, 38383, t, "", &[&["d", "stray"]]);
    let r = s
        .handle_relay_text(&event_message("other", &order.as_json()))
        .await;
    assert!(
        matches!(&r, Imported::Dropped(m) if m.starts_with("invalid:")),
        "{r:?}"
    );

    // Forged: a valid event with its content changed keeps its id and signature.
    let mut forged: serde_json::Value = serde_json::from_str(&order.as_json()).unwrap();
    forged["content"] = "changed".into();
    let r = s
        .handle_relay_text(&event_message("imp", &forged.to_string()))
        .await;
    assert!(
        matches!(&r, Imported::Dropped(m) if m.starts_with("invalid:")),
        "{r:?}"
    );

    // Oversized, inside the filter.
    let big = event(&k, 38383, t, &"x".repeat(3_000), &[&["d", "big"]]);
    let r = s
        .handle_relay_text(&event_message("imp", &big.as_json()))
        .await;
    assert!(
        matches!(&r, Imported::Dropped(m) if m.contains("bytes")),
        "{r:?}"
    );

    // Too old or too far in the future.
    let future = event(&k, 38383, t + 3_600, "", &[&["d", "future"]]);
    let r = s
        .handle_relay_text(&event_message("imp", &future.as_json()))
        .await;
    assert!(
        matches!(&r, Imported::Dropped(m) if m.contains("future")),
        "{r:?}"
    );

    // A good one, then its replay, then a flood above the rate.
    let good = event(&k, 38383, t, "", &[&["d", "good"]]);
    let text = event_message("imp", &good.as_json());
    assert_eq!(s.handle_relay_text(&text).await, Imported::Stored(good.id));
    assert_eq!(
        s.handle_relay_text(&text).await,
        Imported::Duplicate(good.id)
    );
    let mut flood_stored = 0;
    for i in 0..20 {
        let e = event(&k, 38383, t, "", &[&["d", &format!("f{i}")]]);
        match s
            .handle_relay_text(&event_message("imp", &e.as_json()))
            .await
        {
            Imported::Stored(_) => flood_stored += 1,
            Imported::Dropped(m) => assert!(m.starts_with("rate-limited:"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(flood_stored <= 1, "the burst was spent: {flood_stored}");
    assert_eq!(stored(&tn, 1).await, 0);
    assert_eq!(stored(&tn, 38383).await, 1 + flood_stored);

    // EOSE and NOTICE are handed back for the transport to log.
    let eose = s.handle_relay_text("[\"EOSE\",\"imp\"]").await;
    assert!(matches!(eose, Imported::Other(_)), "{eose:?}");
}

#[tokio::test]
async fn a_client_event_over_max_event_bytes_is_refused() {
    let tn = TestNode::builder()
        .limits(SessionLimits {
            max_event_bytes: 1_000,
            ..SessionLimits::default()
        })
        .build();
    let mut c = tn.client().await;
    let k = Keys::generate();
    let big = EventBuilder::text_note("y".repeat(2_000))
        .sign_with_keys(&k)
        .unwrap();
    let (ok, msg) = c.publish(&big).await;
    assert!(!ok && msg.starts_with("invalid: event of"), "{msg}");
    let small = EventBuilder::text_note("fits").sign_with_keys(&k).unwrap();
    assert_eq!(c.publish(&small).await, (true, String::new()));
    assert_eq!(stored(&tn, 1).await, 1);
}
