//! The paper's Fig. 1: Mary (a maker) sends an order as an onion message
//! through Alice and Bob (plain LDK onion-message forwarders) to Billy (the
//! board). A websocket subscriber on Billy sees it; Mary gets Billy's `OK`
//! over her blinded reply path.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use civkit_node::{components, Config, Daemon};
use civkit_onion::client::OnionNode;
use common::order;
use lightning::bitcoin::secp256k1::PublicKey;
use lightning::onion_message::messenger::Destination;
use nostr::{Filter, JsonUtil, Keys, Kind};
use nostr_sdk::Client;
use serde_json::{json, Value};

async fn billy(
    dir: &std::path::Path,
    onion_extra: &str,
) -> (Daemon, String, PublicKey, SocketAddr) {
    billy_with(dir, "", onion_extra).await
}

/// Billy's board, with extra lines for its bolt8 and onion tables.
async fn billy_with(
    dir: &std::path::Path,
    ln_extra: &str,
    onion_extra: &str,
) -> (Daemon, String, PublicKey, SocketAddr) {
    let cfg = format!(
        "[node]\ndata_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:0\"\n\
         [services.board]\ntype = \"market-board\"\n\
         [transports.onion]\ntype = \"onion-messages\"\nvia = \"ln\"\n{onion_extra}\n\
         [transports.ln]\ntype = \"bolt8\"\nlisten = \"127.0.0.1:0\"\n{ln_extra}",
        dir.display()
    );
    let d = Daemon::start(&Config::from_toml(&cfg).unwrap(), &components::registry())
        .await
        .unwrap();
    let ws = d.endpoint("relay").unwrap();
    let ln = d.endpoint("ln").unwrap();
    let (id, addr) = civkit_bolt8::parse_address(ln.trim_start_matches("ln://")).unwrap();
    (d, ws, id, addr)
}

/// The next message over the sender's reply path, as JSON.
async fn answer(mary: &mut OnionNode) -> Value {
    let text = mary
        .reply(Duration::from_secs(15))
        .await
        .expect("no OK over the reply path");
    serde_json::from_str(&text).unwrap()
}

fn local() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mary_alice_bob_billy() {
    let dir = tempfile::tempdir().unwrap();
    let (billy, ws, billy_id, billy_addr) = billy(dir.path(), "").await;
    let bob = OnionNode::start(vec![], local()).await.unwrap();
    bob.connect(billy_id, billy_addr).await.unwrap();
    let alice = OnionNode::start(vec![], local()).await.unwrap();
    alice.connect(bob.node_id, bob.addr.unwrap()).await.unwrap();
    // Mary knows the route Alice -> Bob -> Billy; she is connected to Alice only.
    let mut mary = OnionNode::start(vec![alice.node_id, bob.node_id], None)
        .await
        .unwrap();
    mary.connect(alice.node_id, alice.addr.unwrap())
        .await
        .unwrap();

    let taker = Client::new(Keys::generate());
    taker.add_relay(&ws).await.unwrap();
    taker.connect().await;
    let mut notes = taker.notifications();
    let sub = taker
        .subscribe(Filter::new().kind(Kind::from(38383)), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A fresh key for this order, so Mary's orders do not link to each other.
    let o = order(&Keys::generate(), "fig1", "EUR");
    let reply_path = mary.reply_path(&[bob.node_id, alice.node_id]).unwrap();
    mary.send(
        Destination::Node(billy_id),
        json!(["EVENT", o]).to_string(),
        Some(reply_path),
    )
    .unwrap();

    let ok = answer(&mut mary).await;
    assert_eq!(
        ok,
        json!(["OK", o.id.to_hex(), true, ""]),
        "the board's answer came back over the reply path"
    );
    let seen = common::wait_for_event(&mut notes, &sub.val, o.id, Duration::from_secs(10))
        .await
        .expect("the order did not reach the websocket subscriber");
    assert_eq!(seen.as_json(), o.as_json());

    let conns = billy.node.connections();
    assert!(
        conns.iter().all(|c| c.transport != "onion"),
        "no session of the anonymous sender stays open: {conns:?}"
    );
    let status = billy.node.control_statuses();
    assert!(status["onion"]["handled"].as_u64() >= Some(1), "{status:?}");
    assert!(status["onion"]["replies"].as_u64() >= Some(1), "{status:?}");
    taker.shutdown().await;
    billy.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_boards_blinded_path_and_without_a_reply_path() {
    let dir = tempfile::tempdir().unwrap();
    // Bob is a peer Billy's operator configured; Billy dials him.
    let bob = OnionNode::start(vec![], local()).await.unwrap();
    let ln_extra = format!(
        "[[transports.ln.peers]]\naddress = \"{}@{}\"\n",
        bob.node_id,
        bob.addr.unwrap()
    );
    let (billy, _ws, billy_id, billy_addr) = billy_with(dir.path(), &ln_extra, "").await;
    // The board publishes a blinded path whose introduction node is its peer Bob.
    let mut path_hex = String::new();
    for _ in 0..100 {
        if let Some(e) = billy.endpoint("onion") {
            let hex = e.trim_start_matches("onion://").to_string();
            let p = civkit_onion::parse_blinded_path(&hex).unwrap();
            if *p.introduction_node()
                == lightning::blinded_path::IntroductionNode::NodeId(bob.node_id)
            {
                path_hex = hex;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !path_hex.is_empty(),
        "the board's blinded path goes through its peer"
    );
    let path = civkit_onion::parse_blinded_path(&path_hex).unwrap();

    // Strangers who connect (onion-capable ones too) never become the
    // introduction node, and the published path does not change.
    let mut strangers = Vec::new();
    for _ in 0..6 {
        let s = OnionNode::start(vec![], None).await.unwrap();
        s.connect(billy_id, billy_addr).await.unwrap();
        strangers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    strangers.truncate(2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        billy.endpoint("onion").unwrap(),
        format!("onion://{path_hex}"),
        "the path stays put while strangers come and go"
    );

    // Mary is connected to Bob only and never learns Billy's node id.
    let mut mary = OnionNode::start(vec![], None).await.unwrap();
    mary.connect(bob.node_id, bob.addr.unwrap()).await.unwrap();
    let o = order(&Keys::generate(), "blind", "EUR");
    let reply = mary.reply_path(&[bob.node_id]).unwrap();
    mary.send(
        Destination::BlindedPath(path.clone()),
        json!(["EVENT", o]).to_string(),
        Some(reply),
    )
    .unwrap();
    let ok: Value =
        serde_json::from_str(&mary.reply(Duration::from_secs(15)).await.expect("no OK")).unwrap();
    assert_eq!(ok[2], true, "{ok}");

    // Without a reply path the order is still processed, and nothing comes back.
    let quiet = order(&Keys::generate(), "quiet", "EUR");
    mary.send(
        Destination::BlindedPath(path),
        json!(["EVENT", quiet]).to_string(),
        None,
    )
    .unwrap();
    let mut stored = 0;
    for _ in 0..100 {
        stored = billy
            .node
            .persister()
            .count(&[Filter::new().id(quiet.id)], billy.node.now())
            .await
            .unwrap();
        if stored == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored, 1);
    assert!(
        mary.reply(Duration::from_millis(500)).await.is_none(),
        "nothing leaks back"
    );
    billy.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_and_malformed_payloads_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "messages_per_sec_per_peer = 2.0\nburst = 3\nmax_message_bytes = 2000\n\
                 messages_per_sec_total = 4.0\nburst_total = 8\n";
    let (billy, _ws, billy_id, billy_addr) = billy(dir.path(), extra).await;
    let mut mary = OnionNode::start(vec![], None).await.unwrap();
    mary.connect(billy_id, billy_addr).await.unwrap();
    let reply = mary.reply_path(&[]).unwrap();
    for i in 0..20 {
        let e = order(&Keys::generate(), &format!("flood-{i}"), "EUR");
        mary.send(
            Destination::Node(billy_id),
            json!(["EVENT", e]).to_string(),
            Some(reply.clone()),
        )
        .unwrap();
    }
    // Fresh identities cost nothing: each sends within its own budget, and
    // the global one stops them together.
    for i in 0..6 {
        let sybil = OnionNode::start(vec![], None).await.unwrap();
        sybil.connect(billy_id, billy_addr).await.unwrap();
        for j in 0..3 {
            let e = order(&Keys::generate(), &format!("sybil-{i}-{j}"), "EUR");
            sybil
                .send(
                    Destination::Node(billy_id),
                    json!(["EVENT", e]).to_string(),
                    None,
                )
                .unwrap();
        }
    }
    let big = format!("[\"REQ\",\"x\",{{\"search\":\"{}\"}}]", "a".repeat(5000));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    mary.send(Destination::Node(billy_id), big, Some(reply.clone()))
        .unwrap();
    let mut status = Value::Null;
    for _ in 0..100 {
        status = billy.node.control_statuses()["onion"].clone();
        if status["dropped_malformed"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        status["dropped_over_budget"].as_u64() >= Some(10),
        "{status}"
    );
    assert!(
        status["dropped_over_global_budget"].as_u64() >= Some(5),
        "{status}"
    );
    assert!(status["dropped_malformed"].as_u64() >= Some(1), "{status}");
    // The board is fine and serves a well-behaved sender once the budget refills.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while mary.reply(Duration::from_millis(100)).await.is_some() {}
    let e = order(&Keys::generate(), "after", "EUR");
    mary.send(
        Destination::Node(billy_id),
        json!(["EVENT", e]).to_string(),
        Some(reply),
    )
    .unwrap();
    let ok: Value = serde_json::from_str(
        &mary
            .reply(Duration::from_secs(10))
            .await
            .expect("served again"),
    )
    .unwrap();
    assert_eq!(ok[1], e.id.to_hex());
    billy.shutdown().await.unwrap();
}

/// Two bolt8 transports, each with its own onion-message gateway, in one
/// node: each gateway rides on the identity it names, each answers onion
/// messages sent to that identity, and their controls and endpoints do not
/// overwrite each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bolt8_transports_each_with_an_onion_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[node]\ndata_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:0\"\n\
         [services.board]\ntype = \"market-board\"\n\
         [transports.ln1]\ntype = \"bolt8\"\nlisten = \"127.0.0.1:0\"\nkey_file = \"ln1.key\"\n\
         [transports.ln2]\ntype = \"bolt8\"\nlisten = \"127.0.0.1:0\"\nkey_file = \"ln2.key\"\n\
         [transports.onion1]\ntype = \"onion-messages\"\nvia = \"ln1\"\n\
         [transports.onion2]\ntype = \"onion-messages\"\nvia = \"ln2\"\n",
        dir.path().display()
    );
    let d = Daemon::start(&Config::from_toml(&cfg).unwrap(), &components::registry())
        .await
        .unwrap();
    let endpoints = d.node.endpoints();
    let ids: Vec<(PublicKey, SocketAddr)> = ["ln1", "ln2"]
        .iter()
        .map(|n| civkit_bolt8::parse_address(endpoints[*n].trim_start_matches("ln://")).unwrap())
        .collect();
    assert_ne!(ids[0].0, ids[1].0, "two identities");
    assert_ne!(endpoints["onion1"], endpoints["onion2"], "{endpoints:?}");
    for (i, (id, addr)) in ids.iter().enumerate() {
        let mut mary = OnionNode::start(vec![], None).await.unwrap();
        mary.connect(*id, *addr).await.unwrap();
        let o = order(&Keys::generate(), &format!("pair{i}"), "EUR");
        mary.send(
            Destination::Node(*id),
            json!(["EVENT", o]).to_string(),
            Some(mary.reply_path(&[]).unwrap()),
        )
        .unwrap();
        let ok = answer(&mut mary).await;
        assert_eq!(ok, json!(["OK", o.id.to_hex(), true, ""]), "gateway {i}");
    }
    let status = d.node.control_statuses();
    for (onion, ln) in [("onion1", "ln1"), ("onion2", "ln2")] {
        assert_eq!(
            status[onion]["handled"], 1,
            "{onion} handled its own: {status:?}"
        );
        assert_eq!(status[ln]["kind"], "bolt8", "{status:?}");
    }
    d.shutdown().await.unwrap();
}

/// A gateway must ride on an existing bolt8 transport, and one bolt8
/// transport carries one gateway; both are config errors before anything listens.
#[tokio::test]
async fn onion_gateways_must_name_their_own_bolt8_transport() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[node]\ndata_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:0\"\n\
         [transports.ln]\ntype = \"bolt8\"\nlisten = \"127.0.0.1:0\"\n",
        dir.path().display()
    );
    let err = |extra: &str| {
        let cfg = Config::from_toml(&format!("{base}{extra}")).unwrap();
        async move {
            Daemon::start(&cfg, &components::registry())
                .await
                .map(drop)
                .unwrap_err()
                .to_string()
        }
    };
    let e = err("[transports.o]\ntype = \"onion-messages\"\nvia = \"nope\"\n").await;
    assert!(
        e.contains("transports.o.via") && e.contains("no bolt8 transport named `nope`"),
        "{e}"
    );
    let e = err("[transports.o]\ntype = \"onion-messages\"\nvia = \"relay\"\n").await;
    assert!(e.contains("`relay` is a nostr-ws transport"), "{e}");
    let e = err("[transports.o1]\ntype = \"onion-messages\"\nvia = \"ln\"\n\
         [transports.o2]\ntype = \"onion-messages\"\nvia = \"ln\"\n")
    .await;
    assert!(e.contains("two onion-message transports"), "{e}");
}

/// One onion message causes at most `max_replies_per_message` replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_onion_message_causes_a_bounded_number_of_replies() {
    let dir = tempfile::tempdir().unwrap();
    let (billy, ws, billy_id, billy_addr) =
        billy(dir.path(), "max_replies_per_message = 5\n").await;
    let maker = Client::new(Keys::generate());
    maker.add_relay(&ws).await.unwrap();
    maker.connect().await;
    for i in 0..12 {
        let o = order(&Keys::generate(), &format!("many-{i}"), "EUR");
        assert!(maker.send_event(&o).await.unwrap().failed.is_empty());
    }
    let mut mary = OnionNode::start(vec![], None).await.unwrap();
    mary.connect(billy_id, billy_addr).await.unwrap();
    let reply = mary.reply_path(&[]).unwrap();
    let req = json!(["REQ", "all", {"kinds": [38383], "limit": 20}]).to_string();
    mary.send(Destination::Node(billy_id), req, Some(reply))
        .unwrap();
    let mut got = 0;
    while mary.reply(Duration::from_secs(3)).await.is_some() {
        got += 1;
    }
    assert_eq!(got, 5, "12 events and EOSE, cut to 5");
    let status = billy.node.control_statuses()["onion"].clone();
    assert_eq!(status["replies_dropped"].as_u64(), Some(8), "{status}");
    maker.shutdown().await;
    billy.shutdown().await.unwrap();
}
