//! Web-of-Stakes with the real binaries: civkitd runs a board with a tier
//! rule, a rank service and a credentials service (against the stand-in
//! chain); civkit-sample proves a channel with a funding key from a file,
//! shows the tier, publishes staked orders over websocket and as onion
//! messages, lists by tier, and discovers the board's policies over BOLT8.
//! The channel closes, and the next staked order is refused on both paths.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::time::Duration;

use civkit_onion::client::OnionNode;
use common::{relay_url, start, status, write_config};

async fn sample(args: &[&str]) -> (bool, String) {
    common::sample_async(args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maker_proves_a_channel_and_trades_by_tier_until_it_closes() {
    let (chain, url) = civkit_chain::stand_in::start().await;
    chain.mine_empty(2);
    let channel = civkit_rank::testing::open_channel(&chain, 1, 2_500_000);
    // A P2WPKH output of the maker's, too.
    let utxo_key = bitcoin::secp256k1::SecretKey::from_slice(&[77; 32]).unwrap();
    let funding = civkit_chain::stand_in::spending(
        bitcoin::OutPoint::null(),
        vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(50_000),
            script_pubkey: civkit_rank::bip322::output_script(
                civkit_rank::bip322::KeyScript::P2wpkh,
                &utxo_key,
            ),
        }],
    );
    chain.mine(vec![funding.clone()]);
    chain.mine_empty(150);

    let dir = tempfile::tempdir().unwrap();
    let local = Some("127.0.0.1:0".parse().unwrap());
    let bob = OnionNode::start(vec![], local).await.unwrap();
    write_config(
        dir.path(),
        &format!(
            "[services.board]\ntype = \"market-board\"\norder = 10\n\
             [services.board.stake]\nmin_tier_by_currency = {{ NGN = 2 }}\n\
             [services.rank]\ntype = \"rank\"\norder = 20\nnetwork = \"regtest\"\npoll_secs = 1\n\
             [services.rank.chain]\nbackend = \"esplora\"\nurl = \"{url}\"\n\
             [services.credentials]\ntype = \"credentials\"\norder = 30\nkinds = [1]\n\
             [services.credentials.payment]\nbackend = \"free\"\n\
             [transports.onion]\ntype = \"onion-messages\"\nvia = \"ln\"\n\
             [transports.ln]\ntype = \"bolt8\"\nlisten = \"127.0.0.1:0\"\n\
             [transports.ln.gossip]\npoll_secs = 1\n\
             [transports.ln.gossip.chain]\nbackend = \"esplora\"\nurl = \"{url}\"\n\
             [[transports.ln.peers]]\naddress = \"{}@{}\"\n",
            bob.node_id,
            bob.addr.unwrap()
        ),
    );
    let _board = start(dir.path());
    let ws = relay_url(dir.path());
    let alice = OnionNode::start(vec![], local).await.unwrap();
    alice.connect(bob.node_id, bob.addr.unwrap()).await.unwrap();
    let mut onion_ready = false;
    for _ in 0..100 {
        if status(dir.path())["endpoints"]["onion"].is_string() {
            onion_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(onion_ready, "the board announces a blinded path");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entry = format!("{}@{}", alice.node_id, alice.addr.unwrap());

    // The maker's funding key, in a file only they can read.
    let key_file = dir.path().join("funding.wif");
    let wif = bitcoin::PrivateKey::new(channel.keys[2], bitcoin::Network::Regtest).to_wif();
    civkit_framework::keyfile::write_secret(&key_file, &wif).unwrap();
    let home = dir.path().join("maker").display().to_string();
    let ann = channel.announcement_hex();
    // `stake prove` with `what`, signed by the key in `key`, for the maker.
    let prove = |what: &[&str], key: &std::path::Path| {
        let mut args: Vec<String> = ["--home", &home, "--board", &ws, "stake", "prove"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(what.iter().map(|s| s.to_string()));
        args.extend([
            "--key".into(),
            key.display().to_string(),
            "--expiry-height".into(),
            "10000".into(),
        ]);
        async move { common::sample_async(&args).await }
    };
    let (ok, out) = prove(&["--channel", &ann, "--side", "1"], &key_file).await;
    assert!(
        ok && out.contains("certificate counted") && out.contains("tier 2 "),
        "{out}"
    );
    // The UTXO, proven with a BIP-322 proof of funds signed here.
    let utxo_file = dir.path().join("utxo.wif");
    let wif = bitcoin::PrivateKey::new(utxo_key, bitcoin::Network::Regtest).to_wif();
    civkit_framework::keyfile::write_secret(&utxo_file, &wif).unwrap();
    let utxo = format!("{}:0:50000", funding.compute_txid());
    let (ok, out) = prove(&["--utxo", &utxo], &utxo_file).await;
    assert!(
        ok && out.contains("in 2 output(s)") && out.contains("tier 2 "),
        "{out}"
    );
    // A value the chain does not show is refused.
    let inflated = format!("{}:0:5000000", funding.compute_txid());
    let (ok, out) = prove(&["--utxo", &inflated], &utxo_file).await;
    assert!(!ok && out.contains("invalid:"), "{out}");
    let stake_key_file = std::path::Path::new(&home).join("stake.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&stake_key_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let order = |id: &'static str, staked: bool, onion: bool| {
        let (home, ws, entry) = (home.clone(), ws.clone(), entry.clone());
        async move {
            let mut args = vec![
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
                "sepa",
                "--id",
                id,
                "--ephemeral-key",
            ];
            if staked {
                args.push("--stake");
            }
            if onion {
                args.extend(["--via-onion", &entry]);
            }
            sample(&args).await
        }
    };
    let (ok, out) = order("ws-staked", true, false).await;
    assert!(ok && out.contains("accepted in"), "{out}");
    let (ok, out) = order("onion-staked", true, true).await;
    assert!(ok && out.contains("accepted in"), "{out}");
    let (ok, out) = order("ws-bare", false, false).await;
    assert!(
        !ok && out.contains("restricted: tier 2 needed for NGN sell orders; found tier 0"),
        "{out}"
    );
    let (ok, out) = order("onion-bare", false, true).await;
    assert!(!ok && out.contains("restricted: tier 2 needed"), "{out}");

    // Orders by tier.
    let (ok, out) = sample(&["--board", &ws, "orders", "list", "--min-tier", "2"]).await;
    assert!(
        ok && out.contains("ws-staked") && out.contains("onion-staked"),
        "{out}"
    );
    let (_, out) = sample(&["--board", &ws, "orders", "list", "--min-tier", "3"]).await;
    assert!(out.contains("0 order(s)"), "{out}");

    // The board's policies, from BOLT8 gossip.
    let ln = status(dir.path())["endpoints"]["ln"]
        .as_str()
        .unwrap()
        .trim_start_matches("ln://")
        .to_string();
    let (ok, out) = sample(&["boards", "discover", "--via", &ln, "--wait", "3"]).await;
    assert!(
        ok && out.contains("credential_policy") && out.contains("service_policy: kinds [1]"),
        "{out}"
    );

    // The channel closes: at the next block the tier drops, on both paths.
    channel.close(&chain);
    let mut dropped = false;
    for _ in 0..100 {
        let (_, out) = sample(&["--home", &home, "--board", &ws, "stake", "show"]).await;
        if out.contains("tier 0 ") {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(dropped, "the closed channel was not pruned");
    let (ok, out) = order("ws-after", true, false).await;
    assert!(!ok && out.contains("found tier 0"), "{out}");
    let (ok, out) = order("onion-after", true, true).await;
    assert!(!ok && out.contains("found tier 0"), "{out}");
}
