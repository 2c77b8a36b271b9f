//! Orders carrying the BOLT12 specification's test offers: an order is
//! accepted exactly when its offer is valid per the vectors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use civkit_board::BoardConfig;
use civkit_framework::testing::WireClient;
use common::{board, order};
use lightning::bitcoin::constants::ChainHash;
use lightning::bitcoin::Network;
use lightning::offers::offer::{Amount, Offer};
use nostr::Keys;
use serde_json::Value;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/bolt12/"
);

fn vectors(file: &str, string_key: &str) -> Vec<(String, bool, String)> {
    let text =
        std::fs::read_to_string(format!("{FIXTURES}{file}")).expect("fixture (../shared/fixtures)");
    let v: Vec<Value> = serde_json::from_str(&text).unwrap();
    v.iter()
        .map(|x| {
            let what = x
                .get("description")
                .or(x.get("comment"))
                .and_then(Value::as_str)
                .unwrap_or("");
            (
                x[string_key].as_str().unwrap().to_string(),
                x["valid"].as_bool().unwrap(),
                what.to_string(),
            )
        })
        .collect()
}

/// Order tags that agree with a parseable offer (network, amount, currency).
fn agreeing_tags(offer: &str) -> Vec<Vec<String>> {
    let Ok(o) = offer.parse::<Offer>() else {
        return Vec::new();
    };
    let mut tags = Vec::new();
    let chains = o.chains();
    let network = if chains.contains(&ChainHash::using_genesis_block(Network::Bitcoin)) {
        "mainnet"
    } else if chains.contains(&ChainHash::using_genesis_block(Network::Testnet)) {
        "testnet"
    } else {
        "signet"
    };
    tags.push(vec!["network".to_string(), network.to_string()]);
    match o.amount() {
        Some(Amount::Bitcoin { amount_msats }) => {
            tags.push(vec!["amt".into(), (amount_msats / 1000).to_string()])
        }
        Some(Amount::Currency {
            iso4217_code,
            amount,
        }) => {
            tags.push(vec!["f".into(), iso4217_code.as_str().to_string()]);
            tags.push(vec!["fa".into(), (amount as f64 / 100.0).to_string()]);
        }
        None => {}
    }
    tags
}

async fn walk(file: &str, key: &str) -> usize {
    let tn = board(BoardConfig {
        networks: vec!["mainnet".into(), "testnet".into(), "signet".into()],
        ..BoardConfig::default()
    });
    let mut c = tn.client().await;
    let now = tn.node.now().as_secs();
    let all = vectors(file, key);
    for (i, (offer, valid, what)) in all.iter().enumerate() {
        // A maker per vector, so the open-orders cap does not interfere.
        let k = Keys::generate();
        let extra = agreeing_tags(offer);
        let mut change: Vec<Vec<&str>> = extra
            .iter()
            .map(|t| t.iter().map(String::as_str).collect())
            .collect();
        change.push(vec!["bolt12", offer.as_str()]);
        let refs: Vec<&[&str]> = change.iter().map(Vec::as_slice).collect();
        let e = order(&k, now, &format!("{file}-{i}"), &refs);
        let (ok, msg) = c.publish(&e).await;
        assert_eq!(
            ok, *valid,
            "vector {i} `{what}` (valid: {valid}) answered `{msg}`"
        );
        if !valid {
            assert!(msg.starts_with("invalid: tag `bolt12`"), "{msg}");
        }
    }
    all.len()
}

#[tokio::test]
async fn offers_test_vectors() {
    assert_eq!(walk("offers-test.json", "bolt12").await, 53);
}

#[tokio::test]
async fn format_string_test_vectors() {
    assert_eq!(walk("format-string-test.json", "string").await, 12);
}

fn vector(what: &str) -> String {
    vectors("offers-test.json", "bolt12")
        .into_iter()
        .find(|(_, _, w)| w == what)
        .unwrap()
        .0
}

#[tokio::test]
async fn expired_wrong_chain_and_contradicting_amounts_are_rejected() {
    let tn = board(BoardConfig::default());
    let mut c = tn.client().await;
    let k = Keys::generate();
    let now = tn.node.now().as_secs();
    let reject = |msg: &str, why: &str| {
        assert!(
            msg.starts_with("invalid: tag `bolt12`") && msg.contains(why),
            "{msg}"
        )
    };

    let testnet = vector("for testnet");
    let (ok, msg) = c
        .publish(&order(&k, now, "chain", &[&["bolt12", &testnet]]))
        .await;
    assert!(!ok);
    reject(&msg, "network `mainnet`");

    let with_amount = vector("with amount"); // 10000 msat
    let (_, msg) = c
        .publish(&order(
            &k,
            now,
            "amt",
            &[&["bolt12", &with_amount], &["amt", "20"]],
        ))
        .await;
    reject(&msg, "10000 msat");
    let (_, msg) = c
        .publish(&order(&k, now, "mkt", &[&["bolt12", &with_amount]]))
        .await;
    reject(&msg, "market price");
    assert!(
        c.publish(&order(
            &k,
            now,
            "ok",
            &[&["bolt12", &with_amount], &["amt", "10"]]
        ))
        .await
        .0
    );

    let usd = vector("with currency"); // USD 100.00
    let (_, msg) = c
        .publish(&order(
            &k,
            now,
            "eur",
            &[&["bolt12", &usd], &["f", "EUR"], &["fa", "100"]],
        ))
        .await;
    reject(&msg, "in USD");
    let (_, msg) = c
        .publish(&order(
            &k,
            now,
            "usd50",
            &[&["bolt12", &usd], &["f", "USD"], &["fa", "50"]],
        ))
        .await;
    reject(&msg, "outside the order's fiat amount");
    let range = c
        .publish(&order(
            &k,
            now,
            "usdr",
            &[&["bolt12", &usd], &["f", "USD"], &["fa", "50", "150"]],
        ))
        .await;
    assert!(range.0, "{}", range.1);

    let expiring = vector("with expiry"); // absolute expiry 2051184600
    assert!(
        c.publish(&order(&k, now, "exp-ok", &[&["bolt12", &expiring]]))
            .await
            .0
    );
    tn.clock.set(2_051_184_600);
    let now = tn.node.now().as_secs();
    let (_, msg) = c
        .publish(&order(&k, now, "exp", &[&["bolt12", &expiring]]))
        .await;
    reject(&msg, "expired");
}
