//! The notary service against a stand-in Mainstay: rounds, attestation,
//! proof documents; an outage that never blocks ingestion; a proof that does
//! not verify; a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::sync::Arc;
use std::time::Duration;

use civkit_framework::testing::{TestNode, WireClient};
use civkit_framework::Persister;
use civkit_mainstay::client::Mainstay;
use civkit_mainstay::stand_in::{self, StandIn};
use civkit_mainstay::{verify_document, ChainConfig, MainstayConfig, Notary};
use nostr::{EventBuilder, Keys};
use serde_json::{json, Value};

fn notary(url: &str) -> Notary {
    notary_of(url, vec![1])
}

/// The stand-in's Esplora endpoints as the chain source, one confirmation.
fn chain_of(url: &str) -> ChainConfig {
    ChainConfig {
        url: url.into(),
        staychain_start: stand_in::STAYCHAIN_START.into(),
        min_confirmations: 1,
        ..ChainConfig::default()
    }
}

fn notary_of(url: &str, kinds: Vec<u16>) -> Notary {
    notary_with(url, kinds, chain_of(url))
}

fn notary_with(url: &str, kinds: Vec<u16>, chain: ChainConfig) -> Notary {
    let source = civkit_mainstay::chain_source(&chain, std::path::Path::new("."), "chain").unwrap();
    let cfg = MainstayConfig {
        url: url.into(),
        position: 3,
        kinds,
        chain,
        round_secs: 1,
        poll_secs: 1,
        max_backoff_secs: 2,
        ..MainstayConfig::default()
    };
    let api = Mainstay {
        url: url.into(),
        position: 3,
        token: "test-token".into(),
    };
    Notary::new(cfg, api, source)
}

fn node(url: &str, persister: Option<Arc<dyn Persister>>) -> TestNode {
    let mut b = TestNode::builder().service("notary", Arc::new(notary(url)));
    if let Some(p) = persister {
        b = b.persister(p);
    }
    b.build()
}

async fn status(tn: &TestNode) -> Value {
    tn.node
        .service_admin("notary", "status", Value::Null)
        .await
        .unwrap()
}

async fn until(tn: &TestNode, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..150 {
        let s = status(tn).await;
        if ok(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {}", status(tn).await);
}

async fn publish_notes(tn: &TestNode, n: usize) -> Vec<String> {
    let mut c = tn.client().await;
    let k = Keys::generate();
    let mut ids = Vec::new();
    for i in 0..n {
        let e = EventBuilder::text_note(format!("note {i}"))
            .sign_with_keys(&k)
            .unwrap();
        assert!(c.publish(&e).await.0, "ingestion never waits on Mainstay");
        ids.push(e.id.to_hex());
    }
    ids
}

async fn sent(mainstay: &StandIn) -> bool {
    mainstay.slots.lock().unwrap().contains_key(&3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_are_committed_attested_and_provable() {
    let (mainstay, url) = stand_in::start().await;
    let tn = node(&url, None);
    let ids = publish_notes(&tn, 5).await;
    until(&tn, "round closed and sent", |s| {
        s["last_round"] == 0 && s["last_round_unsent"] == false
    })
    .await;
    assert!(sent(&mainstay).await);
    mainstay.attest();
    let s = until(&tn, "attested", |s| !s["last_attested"].is_null()).await;
    assert_eq!(s["last_attested"]["round"], 0);
    for id in &ids {
        let doc = tn
            .node
            .service_admin("notary", "proof", json!({ "event": id }))
            .await
            .unwrap();
        let txid = verify_document(&doc).unwrap();
        let last = mainstay.last_txid.lock().unwrap().map(|t| t.to_string());
        assert_eq!(Some(txid), last, "{doc}");
        let mut forged = doc.clone();
        forged["rounds"][0]["events"][0] = json!("00".repeat(32));
        assert!(
            verify_document(&forged).is_err(),
            "a rewritten round is caught"
        );
    }
    // A later round chains to the first; its proof covers both once attested.
    let more = publish_notes(&tn, 2).await;
    until(&tn, "second round sent", |s| {
        s["last_round"] == 1 && s["last_round_unsent"] == false
    })
    .await;
    mainstay.attest();
    until(&tn, "second attested", |s| s["last_attested"]["round"] == 1).await;
    let doc = tn
        .node
        .service_admin("notary", "proof", json!({ "event": more[0] }))
        .await
        .unwrap();
    let txid = verify_document(&doc).unwrap();
    assert_eq!(
        Some(txid),
        mainstay.last_txid.lock().unwrap().map(|t| t.to_string())
    );
    let err = tn
        .node
        .service_admin("notary", "proof", json!({ "event": "ab".repeat(32) }))
        .await;
    assert!(err.is_err(), "an unknown event has no proof");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_queues_rounds_without_slowing_ingestion() {
    let (mainstay, url) = stand_in::start().await;
    *mainstay.down.lock().unwrap() = true;
    let tn = node(&url, None);
    publish_notes(&tn, 20).await;
    let s = until(&tn, "failing while down", |s| {
        s["send_failures"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(s["last_round_unsent"], true);
    let err = &s["errors"]["send"];
    assert!(err["error"].as_str().unwrap().contains("503"), "{s}");
    assert!(
        err["at"].as_u64().unwrap() > 0,
        "errors carry their time: {s}"
    );
    *mainstay.down.lock().unwrap() = false;
    let s = until(&tn, "sent after recovery", |s| {
        s["last_round_unsent"] == false
    })
    .await;
    assert!(s["errors"].get("send").is_none(), "cleared on success: {s}");
    mainstay.attest();
    until(&tn, "attested after recovery", |s| {
        !s["last_attested"].is_null()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_that_does_not_verify_is_reported_not_stored() {
    let (mainstay, url) = stand_in::start().await;
    let tn = node(&url, None);
    publish_notes(&tn, 3).await;
    until(&tn, "sent", |s| {
        s["last_round"] == 0 && s["last_round_unsent"] == false
    })
    .await;
    mainstay.attest();
    mainstay
        .proofs
        .lock()
        .unwrap()
        .get_mut(&3)
        .unwrap()
        .merkle_root = "11".repeat(32);
    let s = until(&tn, "bad proof counted", |s| {
        s["bad_proofs"].as_u64() >= Some(1)
    })
    .await;
    assert!(s["last_attested"].is_null(), "{s}");
    // Polled again and again, the same bad proof counts once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(&tn).await["bad_proofs"], 1);
}

/// A Mainstay that accepts connections and never answers: rounds keep
/// closing on their clock, and the requests fail on their own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_mainstay_does_not_stop_the_round_clock() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock); // read nothing, answer nothing
        }
    });
    let cfg = MainstayConfig {
        url: url.clone(),
        position: 3,
        kinds: vec![1],
        round_secs: 1,
        poll_secs: 1,
        max_backoff_secs: 1,
        request_timeout_secs: 1,
        ..MainstayConfig::default()
    };
    let api = Mainstay {
        url,
        position: 3,
        token: "test-token".into(),
    };
    let tn = TestNode::builder()
        .service("notary", Arc::new(Notary::new(cfg, api, None)))
        .build();
    let started = std::time::Instant::now();
    for round in 0..3u64 {
        publish_notes(&tn, 2).await;
        until(&tn, "a round closes while Mainstay hangs", |s| {
            s["last_round"].as_u64() >= Some(round)
        })
        .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    let s = status(&tn).await;
    assert!(
        s["errors"]["send"]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{s}"
    );
    assert_eq!(s["last_round_unsent"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_survive_a_restart_and_keep_chaining() {
    let (_mainstay, url) = stand_in::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let first;
    {
        let p: Arc<dyn Persister> = Arc::new(civkit_sled::LmdbPersister::open(&db).unwrap());
        let tn = node(&url, Some(p));
        publish_notes(&tn, 3).await;
        until(&tn, "round 0", |s| s["last_round"] == 0).await;
        first = tn
            .node
            .service_admin("notary", "rounds", Value::Null)
            .await
            .unwrap();
        tn.node.persister().flush().await.unwrap();
    }
    let p: Arc<dyn Persister> = Arc::new(
        civkit_sled::LmdbPersister::open_when_free(&db, Duration::from_secs(30))
            .await
            .unwrap(),
    );
    let tn = node(&url, Some(p));
    publish_notes(&tn, 2).await;
    until(&tn, "round 1 after restart", |s| s["last_round"] == 1).await;
    let all = tn
        .node
        .service_admin("notary", "rounds", Value::Null)
        .await
        .unwrap();
    let rounds: Vec<civkit_mainstay::rounds::Round> = serde_json::from_value(all).unwrap();
    assert_eq!(serde_json::to_value(&rounds[0]).unwrap(), first[0]);
    civkit_mainstay::rounds::verify_history(&rounds).unwrap();
    assert_eq!(
        rounds[1].events.len(),
        2,
        "no event of round 0 is counted again"
    );
}

/// An event recorded late (a pending entry numbered below the last round's
/// highest) still lands in the next round, and an event that a later
/// service refuses leaves nothing pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_refused_events_are_handled_by_the_round_clock() {
    let (_mainstay, url) = stand_in::start().await;
    let tn = TestNode::builder()
        .service("notary", Arc::new(notary_of(&url, vec![1, 7])))
        .service(
            "pow",
            Arc::new(civkit_plugin_pow::PowGate::new(
                civkit_plugin_pow::PowConfig {
                    min_difficulty: 30,
                    kinds: vec![7],
                },
            )),
        )
        .build();
    publish_notes(&tn, 3).await;
    until(&tn, "round 0", |s| s["last_round"] == 0).await;
    let late = hex::decode("ab".repeat(32)).unwrap();
    tn.node
        .persister()
        .kv_put(
            "notary",
            &[b"pending:".as_slice(), &1u64.to_be_bytes()].concat(),
            &late,
        )
        .await
        .unwrap();
    let s = until(&tn, "round 1", |s| s["last_round"] == 1).await;
    assert_eq!(s["pending_events"], 0, "{s}");
    let rounds = tn
        .node
        .service_admin("notary", "rounds", Value::Null)
        .await
        .unwrap();
    assert_eq!(rounds[1]["events"], json!(["ab".repeat(32)]), "{rounds}");

    // Kind 7 is notarized only if stored: the pow gate after the notary refuses it.
    let mut c = tn.client().await;
    let refused = EventBuilder::new(nostr::Kind::from(7), "+")
        .sign_with_keys(&Keys::generate())
        .unwrap();
    let (ok, msg) = c.publish(&refused).await;
    assert!(!ok && msg.starts_with("pow:"), "{msg}");
    let pending = tn
        .node
        .persister()
        .kv_scan("notary", b"pending:")
        .await
        .unwrap();
    assert!(
        pending.is_empty(),
        "a refused event is not pending: {pending:?}"
    );
}

/// A proof whose transaction pays the right tweaked key but is not on the
/// slot's staychain is not an attestation, and neither is one that is not
/// deep enough yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_attestations_on_the_staychain_and_deep_enough_count() {
    let (mainstay, url) = stand_in::start().await;
    let tn = TestNode::builder()
        .service(
            "notary",
            Arc::new(notary_with(
                &url,
                vec![1],
                ChainConfig {
                    min_confirmations: 2,
                    ..chain_of(&url)
                },
            )),
        )
        .build();
    publish_notes(&tn, 2).await;
    until(&tn, "sent", |s| {
        s["last_round"] == 0 && s["last_round_unsent"] == false
    })
    .await;
    mainstay.attest();
    // One confirmation of two: not attested yet, and no error either.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = status(&tn).await;
    assert!(s["last_attested"].is_null(), "{s}");
    assert!(s["errors"].get("poll").is_none(), "{s}");

    // A look-alike: same root, same tweaked key, spending something else.
    let good = mainstay.proofs.lock().unwrap().get(&3).unwrap().clone();
    let real: bitcoin::Transaction = bitcoin::consensus::encode::deserialize_hex(
        mainstay.txs.lock().unwrap().get(&good.txid).unwrap(),
    )
    .unwrap();
    let mut stray = real.clone();
    stray.input[0].previous_output.txid = "11".repeat(32).parse().unwrap();
    let stray_id = stray.compute_txid().to_string();
    mainstay.txs.lock().unwrap().insert(
        stray_id.clone(),
        bitcoin::consensus::encode::serialize_hex(&stray),
    );
    mainstay.heights.lock().unwrap().insert(stray_id.clone(), 1);
    mainstay.proofs.lock().unwrap().get_mut(&3).unwrap().txid = stray_id;
    *mainstay.extra_blocks.lock().unwrap() = 5;
    let s = until(&tn, "the look-alike is refused", |s| {
        s["errors"]["poll"]["error"].is_string()
    })
    .await;
    assert!(s["last_attested"].is_null(), "{s}");

    // The real one, deep enough now, counts.
    mainstay.proofs.lock().unwrap().insert(3, good);
    until(&tn, "attested on chain", |s| {
        s["last_attested"]["round"] == 0
    })
    .await;
}

/// bitcoind's RPC password file is a secret: refused when other users may
/// read it, taken at mode 0600.
#[test]
fn a_bitcoind_password_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpc.password");
    civkit_framework::keyfile::write_secret(&path, "hunter2").unwrap();
    let chain = ChainConfig {
        backend: "bitcoind".into(),
        url: "http://127.0.0.1:1".into(),
        user: "civkit".into(),
        password_file: "rpc.password".into(),
        staychain_start: stand_in::STAYCHAIN_START.into(),
        ..ChainConfig::default()
    };
    assert!(civkit_mainstay::chain_source(&chain, dir.path(), "chain").is_ok());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = civkit_mainstay::chain_source(&chain, dir.path(), "chain")
        .err()
        .expect("a group-readable password file was taken")
        .to_string();
    assert!(
        err.contains("chain.password_file") && err.contains("readable by other users"),
        "{err}"
    );
}
