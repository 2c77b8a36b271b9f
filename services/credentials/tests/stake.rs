//! Stake as the scarce asset: a stake key of tier 2 receives its epoch's
//! credentials without paying, once per epoch; another stake key resting on
//! the same channel cannot claim them again in that epoch; and events pay
//! by their stake tier.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::sync::Arc;
use std::time::Duration;

use civkit_chain::stand_in;
use civkit_chain::{Esplora, SourceConfig};
use civkit_credentials::payment::{self, PaymentConfig};
use civkit_credentials::wallet::{self, Pending};
use civkit_credentials::{Credentials, CredentialsConfig, MINT};
use civkit_framework::testing::{MemoryClient, TestNode, WireClient};
use civkit_rank::tier::{stake_tag, Attestation};
use civkit_rank::{testing, Rank, RankConfig};
use nostr::{EventBuilder, Filter, Keys, Kind, Timestamp};
use serde_json::Value;

async fn mint(c: &mut MemoryClient, tn: &TestNode, stake: &Keys, n: usize) -> Value {
    let board = tn.node.keys().public_key();
    let f = Filter::new()
        .kind(Kind::from(MINT))
        .pubkey(stake.public_key());
    let sub = format!("m{}", rand_id());
    c.req(&sub, vec![f]).await;
    let pending = Pending::new(n).unwrap();
    assert!(
        c.publish(&wallet::stake_mint_request(stake, &board, &pending).unwrap())
            .await
            .0
    );
    let event = c
        .next_event(&sub, Duration::from_secs(10))
        .await
        .expect("an answer");
    let answer = wallet::open(stake, &event).unwrap();
    if answer["error"].is_null() {
        let announced = tn.node.service_nip11()["civkit_credentials"]["pubkey"]
            .as_str()
            .unwrap()
            .to_string();
        let creds = wallet::finish(&pending, &answer, &announced).unwrap();
        assert_eq!(creds.len(), n);
    }
    answer
}

/// A fresh subscription number.
fn rand_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

async fn tier(c: &mut MemoryClient, rank: &nostr::PublicKey, stake: &Keys) -> Option<u8> {
    let stake = bitcoin::key::XOnlyPublicKey::from_slice(&stake.public_key().to_bytes()).unwrap();
    let found = c.req("t", vec![Attestation::filter(rank, &stake)]).await;
    Attestation::newest(&found, rank, &stake, nostr::Timestamp::now().as_secs()).map(|a| a.tier)
}

fn error(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn stake_pays_for_credentials_once_per_output_per_epoch() {
    let (chain, url) = stand_in::start().await;
    chain.mine_empty(2);
    let channel = testing::open_channel(&chain, 1, 2_500_000);
    chain.mine_empty(150);

    let keys = Keys::generate();
    let rank_key = keys.public_key();
    let rank = Rank::new(
        RankConfig {
            network: "regtest".into(),
            chain: SourceConfig {
                url: url.clone(),
                ..SourceConfig::default()
            },
            poll_secs: 1,
            ..RankConfig::default()
        },
        bitcoin::Network::Regtest,
        Arc::new(Esplora { url }),
    );
    let free = PaymentConfig {
        backend: "free".into(),
        ..PaymentConfig::default()
    };
    let mut cfg = CredentialsConfig {
        kinds: vec![1],
        epoch_secs: 600, // shorter than an attestation's life (3600 s)
        payment: free.clone(),
        ..CredentialsConfig::default()
    };
    cfg.stake.rank_key = rank_key.to_hex();
    cfg.stake.per_epoch_by_tier = vec![0, 1, 3];
    cfg.stake.per_event_by_tier = vec![2, 1, 0];
    let dir = tempfile::tempdir().unwrap();
    let backend = payment::from_config(&free, dir.path(), "payment").unwrap();
    let tn = TestNode::builder()
        .keys(keys)
        .service("rank", Arc::new(rank))
        .service(
            "credentials",
            Arc::new(Credentials::new(cfg, [7; 32], backend)),
        )
        .build();
    let mut c = tn.client().await;

    // No attestation yet: nothing to claim.
    let (a, b) = (Keys::generate(), Keys::generate());
    let answer = mint(&mut c, &tn, &a, 1).await;
    assert!(
        error(&answer).starts_with("payment-required: no tier attestation"),
        "{answer}"
    );

    // Tier 2 earns 3 credentials per epoch, once.
    assert!(
        c.publish(&channel.certificate_event(&a, &rank_key, 10_000))
            .await
            .0
    );
    assert_eq!(tier(&mut c, &rank_key, &a).await, Some(2));
    let answer = mint(&mut c, &tn, &a, 4).await;
    assert!(
        error(&answer).starts_with("restricted: tier 2 earns 1 to 3"),
        "{answer}"
    );
    let answer = mint(&mut c, &tn, &a, 3).await;
    assert!(error(&answer).is_empty(), "{answer}");
    let again = mint(&mut c, &tn, &a, 2).await;
    assert!(error(&again).starts_with("blocked:"), "{again}");

    // The same channel proven for another stake key: the output moves to
    // it, the first key drops to tier 0, and the output has claimed already.
    assert!(
        c.publish(&channel.certificate_event(&b, &rank_key, 10_000))
            .await
            .0
    );
    assert_eq!(tier(&mut c, &rank_key, &b).await, Some(2));
    assert_eq!(tier(&mut c, &rank_key, &a).await, Some(0));
    let answer = mint(&mut c, &tn, &b, 3).await;
    assert!(
        error(&answer).starts_with("blocked: an output behind this stake key already claimed"),
        "{answer}"
    );
    // The next epoch, it may.
    tn.clock.advance(600);
    let answer = mint(&mut c, &tn, &b, 3).await;
    assert!(error(&answer).is_empty(), "{answer}");

    // Events pay by tier: tier 2 pays nothing, no stake tag pays 2.
    let now = tn.node.now().as_secs();
    let author = Keys::generate();
    let unsigned =
        EventBuilder::new(Kind::from(1), "hello").custom_created_at(Timestamp::from_secs(now));
    let plain = unsigned.clone().sign_with_keys(&author).unwrap();
    let (ok, msg) = c.publish(&plain).await;
    assert!(
        !ok && msg.starts_with("payment-required: kind 1 needs 2 credential(s)"),
        "{msg}"
    );
    let tag = stake_tag(
        &b.secret_key()
            .keypair(&bitcoin::secp256k1::Secp256k1::new()),
        &author.public_key(),
        plain.created_at,
        plain.kind,
        &[],
        "hello",
    );
    let staked = unsigned.tag(tag).sign_with_keys(&author).unwrap();
    let (ok, msg) = c.publish(&staked).await;
    assert!(ok, "{msg}");
}
