//! A board notarizes its orders through a stand-in Mainstay; civkit-sample
//! verify-history checks the published rounds and catches a board that
//! leaves an order out of its history.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::time::Duration;

use civkit_mainstay::stand_in;
use civkit_node::{components, Config, Daemon};
use common::sample_async;
use serde_json::Value;

async fn status(d: &Daemon) -> Value {
    d.node
        .service_admin("notary", "status", Value::Null)
        .await
        .unwrap()
}

async fn until(d: &Daemon, what: &str, ok: impl Fn(&Value) -> bool) {
    for _ in 0..150 {
        if ok(&status(d).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {}", status(d).await);
}

async fn order(home: &str, ws: &str, id: &str) -> String {
    let (ok, out) = common::sell_order(home, ws, id).await;
    assert!(ok, "{out}");
    out.split("(event ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string()
}

/// A board with a notary on a stand-in Mainstay; its data dir under `dir`.
async fn notarized_board(dir: &std::path::Path, url: &str) -> Daemon {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    civkit_framework::keyfile::write_secret(&data.join("mainstay.token"), "test-token").unwrap();
    let cfg = format!(
        "[node]\ndata_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:0\"\n\
         [services.board]\ntype = \"market-board\"\norder = 1\n\
         [services.notary]\ntype = \"mainstay\"\norder = 2\nurl = \"{url}\"\nposition = 3\nkinds = [38383, 5]\n\
         round_secs = 2\npoll_secs = 1\nmax_backoff_secs = 2\n\
         [services.notary.chain]\nurl = \"{url}\"\nstaychain_start = \"{start}\"\nmin_confirmations = 1\n",
        data.display(),
        start = stand_in::STAYCHAIN_START,
    );
    Daemon::start(&Config::from_toml(&cfg).unwrap(), &components::registry())
        .await
        .unwrap()
}

/// Wait until round `n` is closed and sent, have the stand-in attest it,
/// and wait until the notary stores the attestation.
async fn attest_round(d: &Daemon, mainstay: &stand_in::StandIn, n: u64) {
    until(d, &format!("round {n} sent"), |s| {
        s["last_round"] == n && s["last_round_unsent"] == false
    })
    .await;
    mainstay.attest();
    until(d, &format!("round {n} attested"), |s| {
        s["last_attested"]["round"] == n
    })
    .await;
}

/// A maker's home with a key, for civkit-sample.
async fn maker(dir: &std::path::Path) -> String {
    let home = dir.join("maker").display().to_string();
    assert!(sample_async(&["--home", &home, "keygen"]).await.0);
    home
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_history_catches_a_board_that_drops_an_order() {
    let (mainstay, url) = stand_in::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = notarized_board(dir.path(), &url).await;
    let ws = d.endpoint("relay").unwrap();
    let home = maker(dir.path()).await;

    let a = order(&home, &ws, "a").await;
    attest_round(&d, &mainstay, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, out) = sample_async(&["--board", &ws, "verify-history"]).await;
    assert!(
        ok && out.contains(&format!("{a} attested: round 0")) && out.contains("history verified"),
        "{out}"
    );

    // The board now leaves order b out of its history (its pending entry vanishes).
    let b = order(&home, &ws, "b").await;
    let b_bytes = hex::decode(&b).unwrap();
    let mut dropped = false;
    for _ in 0..100 {
        let pending = d
            .node
            .persister()
            .kv_scan("notary", b"pending:")
            .await
            .unwrap();
        if let Some((k, _)) = pending.iter().find(|(_, v)| *v == b_bytes) {
            d.node.persister().kv_delete("notary", k).await.unwrap();
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dropped, "order b was queued for notarization");
    let c = order(&home, &ws, "c").await;
    attest_round(&d, &mainstay, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, out) = sample_async(&[
        "--board",
        &ws,
        "verify-history",
        "--esplora",
        &url,
        "--staychain-start",
        stand_in::STAYCHAIN_START,
        "--min-confirmations",
        "1",
    ])
    .await;
    assert!(!ok, "a dropped order fails the check: {out}");
    assert!(
        out.contains("2 attestation transaction(s) verified on chain"),
        "{out}"
    );
    assert!(out.contains(&format!("{b} MISSING")), "{out}");
    assert!(out.contains(&format!("{c} attested: round 1")), "{out}");
    assert!(out.contains(&format!("{a} attested: round 0")), "{out}");

    let doc = d
        .node
        .service_admin("notary", "proof", serde_json::json!({ "event": c }))
        .await
        .unwrap();
    assert!(civkit_mainstay::verify_document(&doc).is_ok(), "{doc}");
    d.shutdown().await.unwrap();
}

/// An order the history holds and the board stops serving is reported as
/// withheld, unless its author deleted it (NIP-09) and the deletion is
/// notarized too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_history_catches_a_board_that_withholds_an_attested_order() {
    use nostr::JsonUtil;
    let (mainstay, url) = stand_in::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = notarized_board(dir.path(), &url).await;
    let ws = d.endpoint("relay").unwrap();
    let home = maker(dir.path()).await;
    let kept = order(&home, &ws, "kept").await;
    let hidden = order(&home, &ws, "hidden").await;
    let canceled = order(&home, &ws, "canceled").await;
    attest_round(&d, &mainstay, 0).await;

    // The taker kept what it saw.
    let ids: Vec<nostr::EventId> = [&kept, &hidden, &canceled]
        .iter()
        .map(|h| nostr::EventId::from_hex(h).unwrap())
        .collect();
    let events = d
        .node
        .persister()
        .query(&[nostr::Filter::new().ids(ids)], d.node.now())
        .await
        .unwrap();
    let seen = dir.path().join("seen.jsonl");
    std::fs::write(
        &seen,
        events
            .iter()
            .map(|e| e.as_json() + "\n")
            .collect::<String>(),
    )
    .unwrap();

    // The operator quietly deletes one; the maker cancels another (NIP-09).
    let hidden_id = nostr::EventId::from_hex(&hidden).unwrap();
    assert_eq!(
        d.node
            .persister()
            .delete_events(&[hidden_id])
            .await
            .unwrap(),
        1
    );
    let (ok, out) = sample_async(&[
        "--home", &home, "--board", &ws, "order", "cancel", "canceled",
    ])
    .await;
    assert!(ok, "{out}");
    until(&d, "the deletion is notarized", |s| s["last_round"] == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let seen = seen.display().to_string();
    let (ok, out) = sample_async(&["--board", &ws, "verify-history", "--seen", &seen]).await;
    assert!(!ok, "a withheld order fails the check: {out}");
    assert!(
        out.contains(&format!("{hidden} WITHHELD: in round 0")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{canceled} in round 0, deleted by its author")),
        "{out}"
    );
    assert!(out.contains(&format!("{kept} attested: round 0")), "{out}");
    assert!(
        out.contains("Mainstay's latest attestation of slot 3 is a published round"),
        "{out}"
    );

    // Round 1 is attested, then its published event is deleted through the
    // operator's store: Mainstay's slot shows the history is cut short.
    attest_round(&d, &mainstay, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let round_events = d
        .node
        .persister()
        .query(
            &[nostr::Filter::new()
                .kind(nostr::Kind::from(civkit_mainstay::history::ROUND_KIND))
                .identifier("1")],
            d.node.now(),
        )
        .await
        .unwrap();
    let ids: Vec<nostr::EventId> = round_events.iter().map(|e| e.id).collect();
    assert!(!ids.is_empty());
    d.node.persister().delete_events(&ids).await.unwrap();
    let (ok, out) = sample_async(&["--board", &ws, "verify-history"]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("in no round the board publishes"), "{out}");
    d.shutdown().await.unwrap();
}
