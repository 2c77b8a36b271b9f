//! civkit-sample sends an order anonymously: as an onion message through an
//! entry node (Alice) and a forwarder (Bob) to the board, with a fresh key.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::time::Duration;

use civkit_onion::client::OnionNode;
use common::{relay_url, start, status, write_config};
use lightning::blinded_path::IntroductionNode;

async fn sample(args: Vec<String>) -> (bool, String) {
    common::sample_async(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_create_via_onion_with_an_ephemeral_key() {
    let dir = tempfile::tempdir().unwrap();
    // Bob is a peer the board's operator configured: the board dials him and
    // uses him as the introduction node of its blinded path.
    let local = Some("127.0.0.1:0".parse().unwrap());
    let bob = OnionNode::start(vec![], local).await.unwrap();
    // A strfry-style policy plugin logs where each event came from.
    let plugin_log = dir.path().join("plugin.log");
    write_config(
        dir.path(),
        &format!(
            "[services.board]\ntype = \"market-board\"\norder = 1\n\
             [services.policy]\ntype = \"process-plugin\"\norder = 2\n\
             command = [\"python3\", \"{}/../plugins/process/tests/plugins/misbehave.py\", \"{}\"]\n\
             [transports.onion]\ntype = \"onion-messages\"\nvia = \"ln\"\n\
             [transports.ln]\ntype = \"bolt8\"\nlisten = \"127.0.0.1:0\"\n\
             [[transports.ln.peers]]\naddress = \"{}@{}\"\n",
            env!("CARGO_MANIFEST_DIR"),
            plugin_log.display(),
            bob.node_id,
            bob.addr.unwrap()
        ),
    );
    let _board = start(dir.path());
    let ws = relay_url(dir.path());
    let alice = OnionNode::start(vec![], local).await.unwrap();
    alice.connect(bob.node_id, bob.addr.unwrap()).await.unwrap();

    // Wait until the board announces a blinded path introduced by its peer Bob.
    let mut ok = false;
    for _ in 0..100 {
        if let Some(e) = status(dir.path())["endpoints"]["onion"].as_str() {
            let p = civkit_onion::parse_blinded_path(e.trim_start_matches("onion://")).unwrap();
            if *p.introduction_node() == IntroductionNode::NodeId(bob.node_id) {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the board's blinded path goes through Bob");
    tokio::time::sleep(Duration::from_millis(500)).await; // the policy event follows the endpoint

    let home = dir.path().join("maker").display().to_string();
    let (kg, out) = sample(vec!["--home".into(), home.clone(), "keygen".into()]).await;
    assert!(kg, "{out}");
    let saved_key = out
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("public key ")
        .to_string();
    let entry = format!("{}@{}", alice.node_id, alice.addr.unwrap());
    let (ok, out) = sample(
        [
            "--home",
            &home,
            "--board",
            &ws,
            "order",
            "create",
            "--side",
            "sell",
            "--currency",
            "NGN",
            "--fiat-amount",
            "50000",
            "--payment-method",
            "bank-transfer",
            "--id",
            "anon-1",
            "--via-onion",
            &entry,
            "--ephemeral-key",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(ok && out.contains("accepted in"), "{out}");
    let maker = out
        .split("maker ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(maker, saved_key, "signed with a fresh key");

    let (_, out) = sample(vec![
        "--board".into(),
        ws.clone(),
        "orders".into(),
        "list".into(),
    ])
    .await;
    assert!(out.contains("anon-1") && out.contains(&maker[..8]), "{out}");
    let components = status(dir.path())["components"]["onion"].clone();
    assert!(components["handled"].as_u64() >= Some(1), "{components}");
    // The plugin was asked about it as an onion-message event.
    let log = std::fs::read_to_string(&plugin_log).unwrap();
    assert!(log.lines().any(|l| l == "req Onion "), "{log}");
}
