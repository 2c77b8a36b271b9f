//! Web-of-Stakes costs, printed (run in release: `bash bench/stake.sh`).
//!
//! 1. Certificates verified per second, channel and UTXO, against a local
//!    Esplora (the stand-in chain over HTTP on loopback), one at a time and
//!    8 at once. The same run measures BIP-340 event verifications per
//!    second as the yardstick: a certificate costs that many events.
//! 2. A board's admission cost per order when the tier comes from a remote
//!    rank service (a second node, over websocket) and is cached: staked
//!    orders into a board with `min_tier = 1`, against the same orders
//!    into a board without tier rules, in the same run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark, not a service

use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Amount, Network, OutPoint, TxOut, Txid};
use civkit_board::{Board, BoardConfig};
use civkit_chain::{stand_in, Esplora};
use civkit_framework::testing::{TestNode, WireClient};
use civkit_framework::Transport;
use civkit_rank::bip322::{self, KeyScript};
use civkit_rank::certificate::{utxo_certificate, ChannelVerifier};
use civkit_rank::certificate::{StakeVerifier, UtxoCertificate, UtxoVerifier, VerifyContext};
use civkit_rank::testing::{open_channel, Channel};
use civkit_rank::tier::{stake_tag, Attestation, ATTESTATION_KIND};
use nostr::{EventBuilder, Keys, Kind, Tag, Timestamp};

const CERTS: usize = 200;
const ORDERS: usize = 2_000;

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (chain, url) = stand_in::start().await;
    chain.mine_empty(2);
    let rank = Keys::generate();
    let x = |k: &nostr::PublicKey| bitcoin::key::XOnlyPublicKey::from_slice(&k.to_bytes()).unwrap();

    // Channel certificates, one per channel; UTXO certificates of 2 outputs.
    let channels: Vec<_> = (0..CERTS)
        .map(|i| open_channel(&chain, (i % 250) as u8 + 1, 1_000_000 + i as u64))
        .collect();
    let mut utxos = Vec::new();
    for i in 0..CERTS {
        let key = bitcoin::secp256k1::SecretKey::from_slice(&[(i % 250) as u8 + 1; 32]).unwrap();
        let funds: Vec<_> = (0..2u32)
            .map(|j| {
                let out = TxOut {
                    value: Amount::from_sat(50_000 + u64::from(j)),
                    script_pubkey: bip322::output_script(KeyScript::P2wpkh, &key),
                };
                let tx = stand_in::spending(OutPoint::new(seed_txid(i, j), 0), vec![out.clone()]);
                chain.mine(vec![tx.clone()]);
                (OutPoint::new(tx.compute_txid(), 0), out, key)
            })
            .collect();
        utxos.push(funds);
    }
    chain.mine_empty(6);
    let source = Esplora { url };
    let cx = VerifyContext {
        rank_key: x(&rank.public_key()),
        network: Network::Regtest,
        chain: &source,
    };
    let stake = Keys::generate();
    let statement = Channel::statement(&stake, &rank.public_key(), 1_000_000);
    let channel_bodies: Vec<_> = channels
        .iter()
        .map(|c| {
            civkit_rank::certificate::channel_certificate(
                &c.announcement_hex(),
                1,
                &c.keys[2],
                &statement,
            )
        })
        .collect();
    let message = UtxoCertificate::message(&statement);
    let utxo_bodies: Vec<_> = utxos
        .iter()
        .map(|funds| {
            let (_, first, key) = &funds[0];
            let signature =
                bip322::sign_proof_of_funds(message.as_bytes(), (&first.script_pubkey, key), funds)
                    .unwrap();
            let address = bitcoin::Address::from_script(&first.script_pubkey, Network::Regtest)
                .unwrap()
                .to_string();
            utxo_certificate(&UtxoCertificate { address, signature })
        })
        .collect();

    // The yardstick: BIP-340 event verifications per second.
    let k = Keys::generate();
    let events: Vec<_> = (0..2_000)
        .map(|i| {
            EventBuilder::text_note(format!("n{i}"))
                .sign_with_keys(&k)
                .unwrap()
        })
        .collect();
    let t = Instant::now();
    for e in &events {
        e.verify().unwrap();
    }
    let events_per_sec = rate(events.len(), t.elapsed());
    println!("yardstick: {events_per_sec:.0} BIP-340 event verifications/s");

    for (name, verifier, bodies) in [
        (
            "channel",
            &ChannelVerifier as &dyn StakeVerifier,
            &channel_bodies,
        ),
        (
            "utxo (2 outputs)",
            &UtxoVerifier as &dyn StakeVerifier,
            &utxo_bodies,
        ),
    ] {
        let t = Instant::now();
        for b in bodies.iter() {
            verifier.verify(b, &statement, &cx).await.unwrap();
        }
        let one = rate(bodies.len(), t.elapsed());
        let t = Instant::now();
        for chunk in bodies.chunks(8) {
            let all = chunk.iter().map(|b| verifier.verify(b, &statement, &cx));
            for r in futures_util::future::join_all(all).await {
                r.unwrap();
            }
        }
        let eight = rate(bodies.len(), t.elapsed());
        println!(
            "{name} certificates: {one:.0}/s one at a time, {eight:.0}/s 8 at once; one certificate costs {:.1} event verifications",
            events_per_sec / one
        );
    }

    // Admission with a remote, cached tier.
    let remote = TestNode::new();
    let (trigger, shutdown) = civkit_framework::Shutdown::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Box::new(civkit_nostr_ws::NostrWs::with_listener(
            "relay",
            civkit_nostr_ws::NostrWsConfig::default(),
            listener,
        ))
        .run(remote.node.clone(), shutdown),
    );
    let stakes: Vec<Keys> = (0..20).map(|_| Keys::generate()).collect();
    let mut rc = remote.client().await;
    let now = Timestamp::now().as_secs();
    for s in &stakes {
        let a = Attestation {
            stake_key: x(&s.public_key()),
            tier: 2,
            score: 2_000_000,
            inputs: Default::default(),
            height: 100,
            expires_at: now + 3_600,
            outputs: vec![],
        };
        let e = EventBuilder::new(Kind::from(ATTESTATION_KIND), "")
            .tags(a.tags())
            .sign_with_keys(&rank)
            .unwrap();
        assert!(rc.publish(&e).await.0);
    }
    let mut ranked = BoardConfig::default();
    ranked.stake.rank_key = rank.public_key().to_hex();
    ranked.stake.rank_relay = format!("ws://{addr}");
    ranked.stake.cache_secs = 3_600;
    ranked.stake.min_tier = 1;
    ranked.max_open_orders_per_author = usize::MAX;
    let mut plain = ranked.clone();
    plain.stake = Default::default();
    let orders = |staked: bool| {
        (0..ORDERS)
            .map(|i| {
                let author = Keys::generate();
                let exp = (now + 3_600).to_string();
                let gone = (now + 7_200).to_string();
                let d = format!("o{i}");
                let mut tags: Vec<Tag> = [
                    vec!["d", d.as_str()],
                    vec!["k", "sell"],
                    vec!["f", "NGN"],
                    vec!["s", "pending"],
                    vec!["amt", "0"],
                    vec!["fa", "1000"],
                    vec!["pm", "sepa"],
                    vec!["premium", "0"],
                    vec!["network", "mainnet"],
                    vec!["layer", "lightning"],
                    vec!["expires_at", exp.as_str()],
                    vec!["expiration", gone.as_str()],
                    vec!["y", "civkit"],
                    vec!["z", "order"],
                ]
                .into_iter()
                .map(|t| Tag::parse(t).unwrap())
                .collect();
                let at = Timestamp::from_secs(now);
                if staked {
                    let s = &stakes[i % stakes.len()];
                    tags.push(stake_tag(
                        &s.secret_key().keypair(&Secp256k1::new()),
                        &author.public_key(),
                        at,
                        Kind::from(38383),
                        &tags,
                        "",
                    ));
                }
                EventBuilder::new(Kind::from(38383), "")
                    .tags(tags)
                    .custom_created_at(at)
                    .sign_with_keys(&author)
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let mut results = Vec::new();
    for round in 0..2 {
        for (name, cfg, staked) in [("plain", &plain, false), ("ranked", &ranked, true)] {
            let board = TestNode::builder()
                .service("board", Arc::new(Board::new(cfg.clone())))
                .build();
            let mut c = board.client().await;
            let evs = orders(staked);
            let t = Instant::now();
            for e in &evs {
                let (ok, msg) = c.publish(e).await;
                assert!(ok, "{msg}");
            }
            let per = t.elapsed().as_secs_f64() * 1e6 / evs.len() as f64;
            println!(
                "round {round}: {name} board: {per:.0} µs per order ({ORDERS} orders, one client)"
            );
            results.push((name, per));
        }
    }
    let avg = |n: &str| {
        let v: Vec<f64> = results
            .iter()
            .filter(|(x, _)| *x == n)
            .map(|(_, p)| *p)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    println!(
        "admission with a remote tier, cached: {:.0} µs per order vs {:.0} µs without tier rules ({:.2}x); {} stake keys, each fetched once",
        avg("ranked"),
        avg("plain"),
        avg("ranked") / avg("plain"),
        stakes.len()
    );
    drop(trigger);
}

/// A distinct made-up previous output for the `j`th output of UTXO certificate `i`.
fn seed_txid(i: usize, j: u32) -> Txid {
    use bitcoin::hashes::Hash;
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(i as u64).to_be_bytes());
    b[8..12].copy_from_slice(&j.to_be_bytes());
    b[31] = 0xbe;
    Txid::from_byte_array(b)
}
