//! Core Lightning's Python protocol library (pyln-proto, from PyPI) as the
//! peer: Noise handshake, init, NIP-01 in custom messages, hostile input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::process::Command;
use std::time::Duration;

use civkit_bolt8::gossip::{Policy, SignedPolicy};
use civkit_bolt8::{Bolt8, Bolt8Config, GossipConfig, PeerConfig};
use civkit_framework::testing::conformance::events::event;
use civkit_framework::testing::{TestNode, WireClient};
use civkit_framework::Transport;
use nostr::{JsonUtil, Keys};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pyln_peer.py");

/// Install pyln-proto from PyPI if this machine does not have it yet.
fn ensure_pyln() {
    let have = Command::new("python3")
        .args(["-c", "import pyln.proto.wire"])
        .status();
    if have.is_ok_and(|s| s.success()) {
        return;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "pyln-proto"])
        .status()
        .expect("python3 -m pip");
    assert!(status.success(), "could not install pyln-proto from PyPI");
}

async fn pyln(node_id: &str, addr: &str, mode: &str, arg: Option<&str>) -> Value {
    pyln_as(None, node_id, addr, mode, arg).await
}

/// The pyln peer with the node key `secret` (hex), when given.
async fn pyln_as(
    secret: Option<&str>,
    node_id: &str,
    addr: &str,
    mode: &str,
    arg: Option<&str>,
) -> Value {
    let mut cmd = tokio::process::Command::new("python3");
    if let Some(s) = secret {
        cmd.env("PYLN_SECRET", s);
    }
    cmd.args([SCRIPT, node_id, addr, mode]);
    if let Some(a) = arg {
        cmd.arg(a);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("pyln peer timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pyln peer failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

/// A board that serves everything to peers it does not know (the pyln
/// peers here have random identities).
async fn board() -> (TestNode, String, String, tempfile::TempDir) {
    board_with(Bolt8Config {
        stranger_export: vec![serde_json::json!({})],
        ..Bolt8Config::default()
    })
    .await
}

/// A test node with the bolt8 transport on a free port.
async fn board_with(cfg: Bolt8Config) -> (TestNode, String, String, tempfile::TempDir) {
    board_on(TestNode::new(), cfg, None).await
}

/// The bolt8 transport on `tn`, with a chain source for the policy gossip.
async fn board_on(
    tn: TestNode,
    cfg: Bolt8Config,
    chain: Option<std::sync::Arc<dyn civkit_chain::ChainSource>>,
) -> (TestNode, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Bolt8Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..cfg
    };
    let mut t = Box::new(Bolt8::new("ln", &dir.path().join("ln.key"), cfg).unwrap());
    t.chain = chain;
    tokio::spawn(t.run(tn.node.clone(), tn.shutdown()));
    let endpoint = loop {
        if let Some(e) = tn.node.endpoints().get("ln") {
            break e.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (id, addr) = endpoint
        .trim_start_matches("ln://")
        .split_once('@')
        .unwrap();
    (tn, id.to_string(), addr.to_string(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyln_peer_handshakes_subscribes_and_publishes() {
    ensure_pyln();
    let (tn, id, addr, _dir) = board().await;
    let mut local = tn.client().await;
    let k = Keys::generate();
    let now = nostr::Timestamp::now().as_secs();
    let stored: Vec<_> = (0..3)
        .map(|i| event(&k, 1, now - i, "stored", &[]))
        .collect();
    for e in &stored {
        assert!(local.publish(e).await.0);
    }
    let filter = format!(
        r#"{{"kinds":[1],"authors":["{}"]}}"#,
        k.public_key().to_hex()
    );
    let got = pyln(&id, &addr, "req", Some(&filter)).await;
    assert_eq!(got["eose"], true, "{got}");
    let ids: Vec<String> = got["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = stored.iter().map(|e| e.id.to_hex()).collect();
    assert_eq!(ids, want, "matching EVENTs, newest first, then EOSE");

    let e = event(&k, 1, now, "from a Core Lightning peer", &[]);
    let got = pyln(&id, &addr, "publish", Some(&e.as_json())).await;
    assert_eq!(
        (got["ok"].as_bool(), got["message"].as_str()),
        (Some(true), Some("")),
        "{got}"
    );
    let back = local.req("s", vec![nostr::Filter::new().id(e.id)]).await;
    assert_eq!(back, vec![e], "stored through the same pipeline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_disconnected_and_others_carry_on() {
    ensure_pyln();
    let (tn, id, addr, _dir) = board().await;
    // A failed handshake: raw bytes instead of act one.
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    raw.write_all(&[0x42; 50]).await.unwrap();
    for mode in ["garbage", "oversized", "badutf8", "unknown-even"] {
        let got = pyln(&id, &addr, mode, None).await;
        assert_eq!(got["closed"], true, "{mode}: {got}");
    }
    let got = pyln(&id, &addr, "req", Some(r#"{"kinds":[1]}"#)).await;
    assert_eq!(
        got["eose"], true,
        "a well-behaved peer is still served: {got}"
    );
    let mut local = tn.client().await;
    let e = event(
        &Keys::generate(),
        1,
        nostr::Timestamp::now().as_secs(),
        "still up",
        &[],
    );
    assert!(
        local.publish(&e).await.0,
        "websocket-side clients are unaffected"
    );
    let list = tn.node.control("ln", "list", Value::Null).await.unwrap();
    assert_eq!(list["dropped"]["oversized"], 1, "{list}");
    assert_eq!(list["dropped"]["undecodable"], 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_opens_are_refused_cleanly() {
    ensure_pyln();
    let (_tn, id, addr, _dir) = board().await;
    let got = pyln(&id, &addr, "open-channel", None).await;
    let answer = &got["answer"];
    assert!(
        answer["type"] == 17 || answer["type"] == 1,
        "an error or warning comes back: {got}"
    );
    assert_eq!(
        answer["channel_id"], got["temp_id"],
        "naming the channel that was refused: {got}"
    );
    assert_eq!(
        got["still_served"], true,
        "no crash, the peer keeps its NIP-01 service: {got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_filters_limit_what_a_peer_receives() {
    ensure_pyln();
    let (tn, id, addr, _dir) = board_with(Bolt8Config {
        stranger_export: vec![serde_json::json!({ "kinds": [38383] })],
        ..Bolt8Config::default()
    })
    .await;
    let mut local = tn.client().await;
    let k = Keys::generate();
    let now = nostr::Timestamp::now().as_secs();
    let note = event(&k, 1, now, "private to this board", &[]);
    let listed = event(&k, 38383, now, "", &[&["d", "x"]]);
    assert!(local.publish(&note).await.0 && local.publish(&listed).await.0);
    let got = pyln(&id, &addr, "req", Some("{}")).await;
    let ids: Vec<&str> = got["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        ids,
        vec![listed.id.to_hex().as_str()],
        "only exported kinds reach the peer: {got}"
    );
}

/// A peer this board imports from turns hostile: it answers the import
/// subscription with events outside the import filter, on a subscription the
/// board never opened, and far above the session's rate. Only what the filter
/// allows, within the rate, is stored; the rest is dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_cannot_push_past_its_import_filter_or_rate() {
    use lightning::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
    ensure_pyln();
    let secret = SecretKey::from_slice(&[7u8; 32]).unwrap();
    let peer_id = PublicKey::from_secret_key(&Secp256k1::new(), &secret);
    let (tn, id, addr, _dir) = board_with(Bolt8Config {
        peers: vec![civkit_bolt8::PeerConfig {
            // Nothing listens there: the peer reaches us instead.
            address: format!("{peer_id}@127.0.0.1:9"),
            import: vec![serde_json::json!({ "kinds": [38383] })],
            export: Vec::new(),
        }],
        limits: civkit_framework::SessionLimits {
            events_per_second: 0.5,
            event_burst: 3,
            ..civkit_framework::SessionLimits::default()
        },
        ..Bolt8Config::default()
    })
    .await;
    let k = Keys::generate();
    let now = nostr::Timestamp::now().as_secs();
    let mut pushed: Vec<Value> = Vec::new();
    // Outside the import filter.
    for i in 0..3 {
        let note = event(&k, 1, now, &format!("not imported {i}"), &[]);
        pushed.push(serde_json::from_str(&note.as_json()).unwrap());
    }
    // On a subscription the board never asked for.
    let stray = event(&k, 38383, now, "", &[&["d", "stray"]]);
    pushed.push(serde_json::json!({ "sub": "not-ours", "event": serde_json::from_str::<Value>(&stray.as_json()).unwrap() }));
    // Inside the filter, but ten at once against a burst of three.
    for i in 0..10 {
        let order = event(&k, 38383, now, "", &[&["d", &format!("o{i}")]]);
        pushed.push(serde_json::from_str(&order.as_json()).unwrap());
    }
    let secret_hex = secret.display_secret().to_string();
    let pushed = Value::Array(pushed).to_string();
    let peer = tokio::spawn(async move {
        pyln_as(
            Some(&secret_hex),
            &id,
            &addr,
            "hostile-relay",
            Some(&pushed),
        )
        .await
    });
    // Read the counters while the peer is still connected (it holds on for 5 s).
    let mut counters = Value::Null;
    for _ in 0..200 {
        let list = tn.node.control("ln", "list", Value::Null).await.unwrap();
        let p = list["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node_id"] == peer_id.to_string() && p["connected"] == true)
            .cloned();
        if let Some(p) = p {
            let seen = p["events_imported"].as_u64().unwrap_or(0)
                + p["events_dropped"].as_u64().unwrap_or(0);
            if seen >= 14 {
                counters = p;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = peer.await.unwrap();
    assert_eq!(
        got["req"][1], "civkit-import",
        "the board subscribed: {got}"
    );
    assert_eq!(
        got["req"][2]["kinds"][0], 38383,
        "with its import filter: {got}"
    );

    let mut local = tn.client().await;
    let notes = local
        .req("n", vec![nostr::Filter::new().kind(nostr::Kind::TextNote)])
        .await;
    assert!(notes.is_empty(), "nothing outside the filter is stored");
    let orders = local
        .req(
            "o",
            vec![nostr::Filter::new().kind(nostr::Kind::Custom(38383))],
        )
        .await;
    assert!(
        !orders.iter().any(|e| e.id == stray.id),
        "nothing on a stray subscription is stored"
    );
    assert!(
        (3..=4).contains(&orders.len()),
        "the burst of three (and at most one refill) got in, not ten: {}",
        orders.len()
    );
    assert_eq!(counters["events_imported"], orders.len(), "{counters}");
    assert_eq!(
        counters["events_dropped"].as_u64().unwrap() + orders.len() as u64,
        14,
        "every other event was dropped and counted: {counters}"
    );
}

/// Peers the board does not know get nothing by default, and only
/// `max_inbound_peers` of them may be connected at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_get_nothing_and_are_capped() {
    ensure_pyln();
    let (tn, id, addr, _dir) = board_with(Bolt8Config {
        max_inbound_peers: 1,
        ..Bolt8Config::default()
    })
    .await;
    let mut local = tn.client().await;
    let k = Keys::generate();
    let now = nostr::Timestamp::now().as_secs();
    assert!(
        local
            .publish(&event(&k, 1, now, "for friends", &[]))
            .await
            .0
    );
    let got = pyln(&id, &addr, "req", Some("{}")).await;
    assert_eq!(got["eose"], true, "{got}");
    assert_eq!(got["events"], serde_json::json!([]), "{got}");

    // One stranger holds the only slot; the next is refused.
    let holder = {
        let (id, addr) = (id.clone(), addr.clone());
        tokio::spawn(async move { pyln(&id, &addr, "stall", Some("{}")).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = pyln(&id, &addr, "req", Some("{}")).await;
    assert_eq!(refused["eose"], false, "over the cap: {refused}");
    holder.await.unwrap();
    let again = pyln(&id, &addr, "req", Some("{}")).await;
    assert_eq!(again["eose"], true, "the slot is free again: {again}");
}

/// A peer that subscribes and stops reading is disconnected once what waits
/// for it passes `peer_outbox_bytes`; the board's memory stays bounded and
/// other peers keep their service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_disconnected() {
    ensure_pyln();
    let (tn, id, addr, _dir) = board_with(Bolt8Config {
        stranger_export: vec![serde_json::json!({})],
        peer_outbox_bytes: 200_000,
        ..Bolt8Config::default()
    })
    .await;
    let stalled = {
        let (id, addr) = (id.clone(), addr.clone());
        tokio::spawn(async move { pyln(&id, &addr, "stall", Some(r#"{"kinds":[1]}"#)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut local = tn.client().await;
    let k = Keys::generate();
    let now = nostr::Timestamp::now().as_secs();
    let big = "x".repeat(30_000);
    for i in 0..200 {
        assert!(local.publish(&event(&k, 1, now - i, &big, &[])).await.0);
    }
    let got = stalled.await.unwrap();
    assert_eq!(got["closed"], true, "the stalled peer was dropped: {got}");
    let honest = pyln(&id, &addr, "req", Some(r#"{"kinds":[1],"limit":2}"#)).await;
    assert_eq!(honest["eose"], true, "{honest}");
    assert_eq!(honest["events"].as_array().unwrap().len(), 2);
}

fn secret(b: u8) -> lightning::bitcoin::secp256k1::SecretKey {
    lightning::bitcoin::secp256k1::SecretKey::from_slice(&[b; 32]).unwrap()
}

/// A policy message as the pyln peer sends it.
fn wire(m: &SignedPolicy) -> Value {
    serde_json::json!({ "type": m.type_id(), "body": hex::encode(m.encode()) })
}

async fn gossip_counters(tn: &TestNode) -> Value {
    tn.node.control("ln", "list", Value::Null).await.unwrap()["gossip"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reach_an_independent_peer_through_a_relaying_board() {
    ensure_pyln();
    let (chain, url) = civkit_chain::stand_in::start().await;
    chain.mine_empty(10);
    let tip = chain.tip().unwrap();
    let source: std::sync::Arc<dyn civkit_chain::ChainSource> =
        std::sync::Arc::new(civkit_chain::Esplora { url });
    let gossip = GossipConfig {
        poll_secs: 1,
        ..GossipConfig::default()
    };

    // Board A sells credentials; board B federates with A and relays.
    let dir = tempfile::tempdir().unwrap();
    let free = civkit_credentials::payment::PaymentConfig {
        backend: "free".into(),
        ..Default::default()
    };
    let credentials = civkit_credentials::Credentials::new(
        civkit_credentials::CredentialsConfig {
            payment: free.clone(),
            ..Default::default()
        },
        [9; 32],
        civkit_credentials::payment::from_config(&free, dir.path(), "p").unwrap(),
    );
    let a = TestNode::builder()
        .service("credentials", std::sync::Arc::new(credentials))
        .build();
    let issuance = a.node.service_nip11()["civkit_credentials"]["pubkey"]
        .as_str()
        .unwrap()
        .to_string();
    let a_cfg = Bolt8Config {
        gossip: gossip.clone(),
        ..Bolt8Config::default()
    };
    let (_a, a_id, a_addr, _da) = board_on(a, a_cfg, Some(source.clone())).await;
    let b_cfg = Bolt8Config {
        peers: vec![PeerConfig {
            address: format!("{a_id}@{a_addr}"),
            ..PeerConfig::default()
        }],
        gossip,
        ..Bolt8Config::default()
    };
    let (b, b_id, b_addr, _db) = board_on(TestNode::new(), b_cfg, Some(source)).await;
    for _ in 0..100 {
        if gossip_counters(&b).await["accepted"].as_u64() >= Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // pyln-proto, asking with the feature bit, gets A's two policies from B.
    let got = pyln(&b_id, &b_addr, "gossip", Some(r#"{"wait": 3}"#)).await;
    let policies = got["policies"].as_array().unwrap();
    let from_a: Vec<&Value> = policies
        .iter()
        .filter(|p| p["node_id"] == a_id.as_str())
        .collect();
    let types: std::collections::BTreeSet<u64> =
        from_a.iter().map(|p| p["type"].as_u64().unwrap()).collect();
    assert_eq!(types, [37563, 37564].into(), "{got}");
    for p in &from_a {
        assert_eq!(p["valid"], true, "{p}");
        assert_eq!(p["trailing"], 0, "{p}");
        assert_eq!(p["expiration_height"], tip + 144, "{p}");
    }
    let credential = from_a.iter().find(|p| p["type"] == 37563).unwrap();
    assert_eq!(credential["issuance_pubkey"], issuance.as_str());
    assert_eq!(credential["asset_to_credential"], 1000);
    assert_eq!(credential["assetproof_features"], "02"); // Lightning payment
    assert_eq!(credential["credentials_features"], "02"); // blind DH
    let service = from_a.iter().find(|p| p["type"] == 37564).unwrap();
    assert_eq!(service["service_ids"], serde_json::json!([38383]));
    assert_eq!(service["credentials_to_service"], 1);
    assert_eq!(service["pubkeys"], serde_json::json!([issuance]));

    // Hostile gossip: a forged signature, an expired policy, and a flood.
    let service_of = |k: u8| Policy::Service {
        pubkeys: vec![secret(k).public_key(&lightning::bitcoin::secp256k1::Secp256k1::new())],
        service_ids: vec![38383],
        credentials_to_service: 1,
    };
    let tip32 = u32::try_from(tip).unwrap();
    let mut forged = SignedPolicy::sign(&secret(1), 100, service_of(1), tip32 + 50);
    forged.timestamp += 1;
    let expired = SignedPolicy::sign(&secret(2), 100, service_of(2), tip32);
    let mut send = vec![wire(&forged), wire(&expired)];
    send.extend((0..40).map(|i| {
        wire(&SignedPolicy::sign(
            &secret(3),
            200 + i,
            service_of(3),
            tip32 + 50,
        ))
    }));
    let hostile = serde_json::json!({ "send": send, "wait": 2 }).to_string();
    let got = pyln(&b_id, &b_addr, "gossip", Some(&hostile)).await;
    assert!(
        got["closed"].is_null(),
        "a bad signature is dropped, not a disconnect: {got}"
    );
    let counters = gossip_counters(&b).await;
    assert_eq!(counters["invalid"], 1, "{counters}");
    assert_eq!(counters["expired"], 1, "{counters}");
    assert_eq!(counters["rate_limited"], 12, "{counters}");

    // Another peer gets A's two and the flood's newest accepted one: nothing forged or expired.
    let got = pyln(&b_id, &b_addr, "gossip", Some(r#"{"wait": 3}"#)).await;
    let ids: std::collections::BTreeSet<(String, u64)> = got["policies"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|p| assert_eq!(p["valid"], true, "{p}"))
        .map(|p| {
            (
                p["node_id"].as_str().unwrap().to_string(),
                p["timestamp"].as_u64().unwrap(),
            )
        })
        .collect();
    let third = hex::encode(
        secret(3)
            .public_key(&lightning::bitcoin::secp256k1::Secp256k1::new())
            .serialize(),
    );
    assert!(ids.contains(&(third.clone(), 227)), "{ids:?}");
    assert!(
        ids.iter().all(|(n, _)| *n == a_id || *n == third),
        "{ids:?}"
    );
}
