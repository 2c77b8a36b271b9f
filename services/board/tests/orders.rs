//! Orders through a board: format, policy, lifecycle, expiry, announcement.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::time::Duration;

use civkit_board::BoardConfig;
use civkit_framework::testing::conformance::events::event;
use civkit_framework::testing::WireClient;
use common::{board, order};
use nostr::{Filter, Keys, Kind};

#[tokio::test]
async fn every_malformed_tag_is_rejected_with_its_name() {
    let tn = board(BoardConfig::default());
    let mut c = tn.client().await;
    let k = Keys::generate();
    let now = tn.node.now().as_secs();
    let past = (now - 10).to_string();
    let past_tag: [&str; 2] = ["expires_at", &past];
    let cases: Vec<(Vec<&[&str]>, &str)> = vec![
        (vec![&["d"]], "d"),
        (vec![&["k"]], "k"),
        (vec![&["k", "hold"]], "k"),
        (vec![&["f"]], "f"),
        (vec![&["f", "XYZ"]], "f"),
        (vec![&["s"]], "s"),
        (vec![&["s", "open"]], "s"),
        (vec![&["amt"]], "amt"),
        (vec![&["amt", "1.5"]], "amt"),
        (vec![&["fa"]], "fa"),
        (vec![&["fa", "0"]], "fa"),
        (vec![&["fa", "500", "100"]], "fa"),
        (vec![&["fa", "1", "2", "3"]], "fa"),
        (vec![&["pm"]], "pm"),
        (vec![&["pm", ""]], "pm"),
        (vec![&["premium"]], "premium"),
        (vec![&["premium", "lots"]], "premium"),
        (vec![&["network"]], "network"),
        (vec![&["network", "moon"]], "network"),
        (vec![&["layer"]], "layer"),
        (vec![&["layer", "carrier-pigeon"]], "layer"),
        (vec![&["expires_at"]], "expires_at"),
        (vec![&past_tag], "expires_at"),
        (vec![&["expiration"]], "expiration"),
        (vec![&["y"]], "y"),
        (vec![&["z"]], "z"),
        (vec![&["z", "rating"]], "z"),
        (vec![&["source", "ftp://x"]], "source"),
        (vec![&["rating", "five stars"]], "rating"),
        (vec![&["g", "abc!"]], "g"),
        (vec![&["bond", "-1"]], "bond"),
        (vec![&["bolt12", "lno1notanoffer"]], "bolt12"),
    ];
    for (i, (change, tag)) in cases.iter().enumerate() {
        let e = order(&k, now, &format!("bad-{i}"), change);
        let (ok, msg) = c.publish(&e).await;
        assert!(!ok, "case {i} ({tag}) accepted");
        assert!(
            msg.starts_with(&format!("invalid: tag `{tag}`")),
            "case {i}: {msg}"
        );
    }
    // expiration before expires_at
    let e = order(&k, now, "exp", &[&["expiration", &(now + 10).to_string()]]);
    assert!(c
        .publish(&e)
        .await
        .1
        .starts_with("invalid: tag `expiration`"));
    // Optional tags in the right format are accepted.
    let fine = order(
        &k,
        now,
        "fine",
        &[
            &["source", "https://example.com/o/1"],
            &["rating", r#"{"total_reviews":1,"total_rating":3.0}"#],
            &["name", "Satoshi"],
            &["g", "s09wh"],
            &["bond", "0"],
            &["fa", "100", "500"],
        ],
    );
    assert_eq!(c.publish(&fine).await, (true, String::new()));
    assert!(c
        .req("s", vec![Filter::new().kind(Kind::from(38383))])
        .await
        .iter()
        .all(|e| e.id == fine.id));
}

#[tokio::test]
async fn orders_outside_policy_are_restricted_with_the_rule() {
    let cfg = BoardConfig {
        currencies: vec!["NGN".into(), "USD".into()],
        networks: vec!["mainnet".into()],
        layers: vec!["lightning".into()],
        min_sats: 1000,
        max_sats: 1_000_000,
        max_order_lifetime_secs: 7200,
        max_open_orders_per_author: 2,
        require_bolt12: false,
        stake: Default::default(),
    };
    let tn = board(cfg.clone());
    let mut c = tn.client().await;
    let k = Keys::generate();
    let now = tn.node.now().as_secs();
    let far = (now + 10_000).to_string();
    let far_exp = (now + 20_000).to_string();
    let (far_tag, far_exp_tag): ([&str; 2], [&str; 2]) =
        (["expires_at", &far], ["expiration", &far_exp]);
    let cases: Vec<(Vec<&[&str]>, &str)> = vec![
        (vec![&["f", "EUR"]], "currency EUR"),
        (vec![&["network", "testnet"]], "network testnet"),
        (vec![&["layer", "onchain"]], "layer onchain"),
        (vec![&["amt", "10"]], "below the minimum"),
        (vec![&["amt", "2000000"]], "above the maximum"),
        (vec![&far_tag, &far_exp_tag], "lifetime"),
    ];
    for (change, rule) in cases {
        let (ok, msg) = c.publish(&order(&k, now, "p", &change)).await;
        assert!(
            !ok && msg.starts_with("restricted:") && msg.contains(rule),
            "{rule}: {msg}"
        );
    }
    assert!(c.publish(&order(&k, now, "one", &[])).await.0);
    assert!(c.publish(&order(&k, now, "two", &[])).await.0);
    let (ok, msg) = c.publish(&order(&k, now, "three", &[])).await;
    assert!(!ok && msg.contains("at most 2 open orders"), "{msg}");
    // Updating an open order does not count as a new one.
    assert!(
        c.publish(&order(&k, now + 1, "two", &[&["premium", "2"]]))
            .await
            .0
    );
    let strict = board(BoardConfig {
        require_bolt12: true,
        ..BoardConfig::default()
    });
    let mut c2 = strict.client().await;
    let (ok, msg) = c2.publish(&order(&k, now, "x", &[])).await;
    assert!(
        !ok && msg.starts_with("restricted:") && msg.contains("bolt12"),
        "{msg}"
    );
}

#[tokio::test]
async fn only_the_author_updates_or_deletes_an_order() {
    let tn = board(BoardConfig::default());
    let mut c = tn.client().await;
    let (maker, thief) = (Keys::generate(), Keys::generate());
    let now = tn.node.now().as_secs();
    let original = order(&maker, now, "order-1", &[]);
    assert!(c.publish(&original).await.0);

    let hijack = order(&thief, now + 1, "order-1", &[&["premium", "50"]]);
    let (ok, msg) = c.publish(&hijack).await;
    assert!(!ok && msg.starts_with("blocked:"), "{msg}");
    let addr = format!("38383:{}:order-1", maker.public_key().to_hex());
    let del_a = event(&thief, 5, now + 1, "", &[&["a", &addr]]);
    let del_e = event(&thief, 5, now + 1, "", &[&["e", &original.id.to_hex()]]);
    for d in [del_a, del_e] {
        let (ok, msg) = c.publish(&d).await;
        assert!(!ok && msg.starts_with("blocked:"), "{msg}");
    }
    let f = Filter::new().kind(Kind::from(38383));
    assert_eq!(
        c.req("a", vec![f.clone()]).await,
        vec![original.clone()],
        "nothing changed"
    );

    let update = order(&maker, now + 2, "order-1", &[&["s", "in-progress"]]);
    assert!(c.publish(&update).await.0);
    assert_eq!(c.req("b", vec![f.clone()]).await, vec![update]);
    let mine = event(&maker, 5, now + 3, "", &[&["a", &addr]]);
    assert!(c.publish(&mine).await.0);
    assert!(c.req("c", vec![f]).await.is_empty());
}

#[tokio::test]
async fn expired_pending_orders_are_hidden_then_swept() {
    let tn = board(BoardConfig::default());
    let mut maker = tn.client().await;
    let k = Keys::generate();
    let now = tn.node.now().as_secs();
    let e = order(
        &k,
        now,
        "short",
        &[
            &["expires_at", &(now + 60).to_string()],
            &["expiration", &(now + 120).to_string()],
        ],
    );
    assert!(maker.publish(&e).await.0);
    let done = order(
        &k,
        now,
        "done",
        &[
            &["s", "success"],
            &["expires_at", &(now + 60).to_string()],
            &["expiration", &(now + 120).to_string()],
        ],
    );
    assert!(maker.publish(&done).await.0);
    let f = Filter::new().kind(Kind::from(38383));
    let mut taker = tn.client().await;
    assert_eq!(
        taker.req("a", vec![f.clone()]).await.len(),
        2,
        "offline maker's orders reach a later taker"
    );
    tn.clock.advance(61);
    let later = taker.req("b", vec![f.clone()]).await;
    assert_eq!(
        later.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![done.id],
        "pending past expires_at hidden"
    );
    tn.clock.advance(60);
    // The node's own sweeper may have run already; either way both are gone.
    let p = tn.node.persister();
    p.remove_expired(tn.node.now()).await.unwrap();
    let left = p.count(&[f], tn.node.now()).await.unwrap();
    assert_eq!(left, 0, "the sweep removes both");
    assert!(!p.event_exists(&e.id).await.unwrap() && !p.event_exists(&done.id).await.unwrap());
}

#[tokio::test]
async fn live_orders_reach_subscribers_at_once() {
    let tn = board(BoardConfig::default());
    let mut taker = tn.client().await;
    let mut maker = tn.client().await;
    let f = Filter::new()
        .kind(Kind::from(38383))
        .custom_tag(nostr::SingleLetterTag::lowercase(nostr::Alphabet::F), "NGN");
    assert!(taker.req("ngn", vec![f]).await.is_empty());
    let k = Keys::generate();
    let now = tn.node.now().as_secs();
    let usd = order(&k, now, "usd", &[&["f", "USD"]]);
    let ngn = order(&k, now, "ngn", &[]);
    assert!(maker.publish(&usd).await.0);
    assert!(maker.publish(&ngn).await.0);
    assert_eq!(
        taker.next_event("ngn", Duration::from_secs(5)).await,
        Some(ngn)
    );
}

#[tokio::test]
async fn policy_is_announced_in_nip11_and_a_signed_replaceable_event() {
    let hub_node = board(BoardConfig {
        currencies: vec!["NGN".into()],
        ..BoardConfig::default()
    });
    let tn = &hub_node;
    tn.node.set_endpoint("relay", "ws://127.0.0.1:7777");
    let doc = tn.node.service_nip11();
    assert_eq!(doc["civkit_board"]["currencies"][0], "NGN");
    assert_eq!(doc["civkit_board"]["policy_kind"], 10383);
    assert!(tn.node.supported_nips().contains(&69));
    let mut c = tn.client().await;
    let f = Filter::new()
        .kind(Kind::from(10383))
        .author(tn.node.keys().public_key());
    let mut found = Vec::new();
    // A fresh subscription id each time: a live event for an earlier
    // subscription of the same id may arrive before the next one's EOSE.
    for i in 0..100 {
        found = c.req(&format!("p{i}"), vec![f.clone()]).await;
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found.len(), 1, "policy event published by the board key");
    let policy: serde_json::Value = serde_json::from_str(&found[0].content).unwrap();
    assert_eq!(policy["currencies"][0], "NGN");
    assert_eq!(policy["endpoints"]["websocket"][0], "ws://127.0.0.1:7777");
    assert!(found[0]
        .tags
        .iter()
        .any(|t| t.as_slice() == ["r", "ws://127.0.0.1:7777"]));
}
