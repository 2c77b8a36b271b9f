//! Web-of-Stakes end to end on one node: a maker proves a channel to the
//! rank service, reaches tier 2, and a board with `min_tier = 2` for NGN
//! takes their order, signed by an ephemeral key with the `stake` tag. The
//! channel closes, a block passes, the rank service prunes it, and the next
//! order is refused with the tier needed and the tier found.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::Secp256k1;
use bitcoin::Network;
use civkit_board::{Board, BoardConfig};
use civkit_chain::stand_in;
use civkit_chain::{Esplora, SourceConfig};
use civkit_framework::testing::{TestNode, WireClient};
use civkit_rank::certificate::{certificate_event, channel_certificate};
use civkit_rank::tier::{stake_tag, Attestation, ATTESTATION_KIND, CERTIFICATE_KIND};
use civkit_rank::{testing, Rank, RankConfig};
use common::order;
use nostr::{Event, EventBuilder, Keys, Kind, Tag};

/// The order `common::order` builds, by `author`, vouched for by `stake`.
fn staked(author: &Keys, stake: &Keys, now: u64, d: &str) -> Event {
    let plain = order(author, now, d, &[]);
    let mut tags: Vec<Tag> = plain.tags.to_vec();
    tags.push(stake_tag(
        &stake.secret_key().keypair(&Secp256k1::new()),
        &author.public_key(),
        plain.created_at,
        plain.kind,
        &tags,
        &plain.content,
    ));
    EventBuilder::new(plain.kind, plain.content.clone())
        .tags(tags)
        .custom_created_at(plain.created_at)
        .sign_with_keys(author)
        .unwrap()
}

async fn tier_of(c: &mut impl WireClient, rank: &nostr::PublicKey, stake: &Keys) -> Option<u8> {
    let stake = bitcoin::key::XOnlyPublicKey::from_slice(&stake.public_key().to_bytes()).unwrap();
    let found = c.req("att", vec![Attestation::filter(rank, &stake)]).await;
    Attestation::newest(&found, rank, &stake, nostr::Timestamp::now().as_secs()).map(|a| a.tier)
}

#[tokio::test]
async fn a_channel_buys_tier_two_until_it_closes() {
    let (chain, url) = stand_in::start().await;
    chain.mine_empty(2);
    let channel = testing::open_channel(&chain, 1, 2_500_000);
    chain.mine_empty(150); // past maturity: the whole value counts

    let rank_cfg = RankConfig {
        network: "regtest".into(),
        chain: SourceConfig {
            backend: "esplora".into(),
            url: url.clone(),
            ..SourceConfig::default()
        },
        poll_secs: 1,
        ..RankConfig::default()
    };
    let rank = Rank::new(rank_cfg, Network::Regtest, Arc::new(Esplora { url }));
    // The board's rules need the rank service's key: the node's.
    let keys = Keys::generate();
    let mut board_cfg = BoardConfig::default();
    board_cfg.stake.rank_key = keys.public_key().to_hex();
    board_cfg.stake.min_tier_by_currency.insert("NGN".into(), 2);
    let tn = TestNode::builder()
        .keys(keys.clone())
        .service("board", Arc::new(Board::new(board_cfg)))
        .service("rank", Arc::new(rank))
        .build();
    let mut c = tn.client().await;
    let rank_key = keys.public_key();

    // The maker proves side 1 of the channel for their stake key.
    let stake = Keys::generate();
    let statement = testing::Channel::statement(&stake, &rank_key, 10_000);
    let cert = channel.certificate_event(&stake, &rank_key, 10_000);
    assert_eq!(c.publish(&cert).await, (true, String::new()));
    assert_eq!(tier_of(&mut c, &rank_key, &stake).await, Some(2));

    // A certificate signed with the other side's funding key is refused.
    let forged = channel_certificate(&channel.announcement_hex(), 1, &channel.keys[3], &statement);
    let (ok, msg) = c
        .publish(&certificate_event(&stake, &rank_key, &statement, forged).unwrap())
        .await;
    assert!(!ok && msg.starts_with("invalid:"), "{msg}");
    // Hostile certificate events: not encrypted to the rank service, sent
    // by a key that is not the statement's, of an unknown type.
    let junk = EventBuilder::new(Kind::from(CERTIFICATE_KIND), "not a ciphertext")
        .tag(Tag::public_key(rank_key))
        .sign_with_keys(&stake)
        .unwrap();
    let (ok, msg) = c.publish(&junk).await;
    assert!(!ok && msg.contains("not NIP-44 encrypted"), "{msg}");
    let body = channel_certificate(&channel.announcement_hex(), 1, &channel.keys[2], &statement);
    let impostor =
        certificate_event(&Keys::generate(), &rank_key, &statement, body.clone()).unwrap();
    let (ok, msg) = c.publish(&impostor).await;
    assert!(
        !ok && msg.contains("signed by the statement's stake key"),
        "{msg}"
    );
    let mut odd = body;
    odd["type"] = "zk-curve-tree".into();
    let (ok, msg) = c
        .publish(&certificate_event(&stake, &rank_key, &statement, odd).unwrap())
        .await;
    assert!(
        !ok && msg.starts_with("unsupported: certificate type"),
        "{msg}"
    );
    // The rules are announced.
    let policy = &tn.node.service_nip11()["civkit_board"]["stake"];
    assert_eq!(policy["min_tier_by_currency"]["NGN"], 2, "{policy}");
    assert_eq!(policy["rank_key"], rank_key.to_hex().as_str());

    // An ephemeral author, vouched for by the stake key: accepted.
    let now = tn.node.now().as_secs();
    let (ok, msg) = c
        .publish(&staked(&Keys::generate(), &stake, now, "first"))
        .await;
    assert!(ok, "{msg}");
    // No stake tag: refused, saying what was needed and found.
    let (ok, msg) = c.publish(&order(&Keys::generate(), now, "bare", &[])).await;
    assert!(
        !ok && msg.starts_with("restricted: tier 2 needed") && msg.contains("found tier 0"),
        "{msg}"
    );
    // A stake tag copied onto another maker's order does not verify.
    let theirs = staked(&Keys::generate(), &stake, now, "copied");
    let mut tags: Vec<Tag> = order(&Keys::generate(), now, "copied", &[]).tags.to_vec();
    tags.extend(
        theirs
            .tags
            .iter()
            .filter(|t| t.as_slice()[0] == "stake")
            .cloned(),
    );
    let thief = Keys::generate();
    let copied = EventBuilder::new(Kind::from(38383), "")
        .tags(tags)
        .custom_created_at(theirs.created_at)
        .sign_with_keys(&thief)
        .unwrap();
    let (ok, msg) = c.publish(&copied).await;
    assert!(
        !ok && msg.contains("`stake` tag's signature does not verify"),
        "{msg}"
    );

    // The channel closes; the next block carries the spend.
    channel.close(&chain);
    let mut pruned = false;
    for _ in 0..100 {
        if tier_of(&mut c, &rank_key, &stake).await == Some(0) {
            pruned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pruned, "the rank service did not prune the closed channel");
    // A forged attestation by another key changes nothing.
    let forger = Keys::generate();
    let fake = EventBuilder::new(Kind::from(ATTESTATION_KIND), "")
        .tags(
            Attestation {
                stake_key: statement.stake_key,
                tier: 3,
                score: u64::MAX,
                inputs: Default::default(),
                height: 1,
                expires_at: now + 3600,
                outputs: Vec::new(),
            }
            .tags(),
        )
        .sign_with_keys(&forger)
        .unwrap();
    assert!(c.publish(&fake).await.0);
    assert!(Attestation::from_event(&fake, &rank_key, now).is_err());
    let (ok, msg) = c
        .publish(&staked(&Keys::generate(), &stake, now, "second"))
        .await;
    assert!(
        !ok && msg.starts_with("restricted: tier 2 needed") && msg.contains("found tier 0"),
        "{msg}"
    );
    // Re-sending the closed channel's certificate is refused too.
    let again = channel.certificate_event(&stake, &rank_key, 10_000);
    let (ok, msg) = c.publish(&again).await;
    assert!(!ok && msg.starts_with("blocked:"), "{msg}");
}

/// An attestation of `tier` for `stake`, signed by `signer`.
fn attestation(signer: &Keys, stake: &Keys, tier: u8, now: u64) -> Event {
    let a = Attestation {
        stake_key: bitcoin::key::XOnlyPublicKey::from_slice(&stake.public_key().to_bytes())
            .unwrap(),
        tier,
        score: 1,
        inputs: Default::default(),
        height: 1,
        expires_at: now + 3_600,
        outputs: Vec::new(),
    };
    EventBuilder::new(Kind::from(ATTESTATION_KIND), "")
        .tags(a.tags())
        .sign_with_keys(signer)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_from_a_remote_rank_service_are_checked_by_its_key() {
    use civkit_framework::Transport;
    // The remote rank service's relay: another node, over websocket.
    let remote = TestNode::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = civkit_nostr_ws::NostrWs::with_listener(
        "relay",
        civkit_nostr_ws::NostrWsConfig::default(),
        listener,
    );
    tokio::spawn(Box::new(relay).run(remote.node.clone(), remote.shutdown()));
    let rank = Keys::generate();
    let now = nostr::Timestamp::now().as_secs();
    let (trusted, forged_for) = (Keys::generate(), Keys::generate());
    let mut rc = remote.client().await;
    assert!(rc.publish(&attestation(&rank, &trusted, 2, now)).await.0);
    // Another key's attestation of tier 3 on the same relay counts for nothing.
    assert!(
        rc.publish(&attestation(&Keys::generate(), &forged_for, 3, now))
            .await
            .0
    );

    let mut cfg = BoardConfig::default();
    cfg.stake.rank_key = rank.public_key().to_hex();
    cfg.stake.rank_relay = format!("ws://{addr}");
    cfg.stake.min_tier = 2;
    let tn = TestNode::builder()
        .service("board", Arc::new(Board::new(cfg.clone())))
        .build();
    let mut c = tn.client().await;
    let now = tn.node.now().as_secs();
    let (ok, msg) = c
        .publish(&staked(&Keys::generate(), &trusted, now, "a"))
        .await;
    assert!(ok, "{msg}");
    let (ok, msg) = c
        .publish(&staked(&Keys::generate(), &forged_for, now, "b"))
        .await;
    assert!(
        !ok && msg.contains("found tier 0") && msg.contains("no attestation"),
        "{msg}"
    );

    // A rank service that cannot be reached: a clear error (the lookup
    // gives up after 3 s).
    cfg.stake.rank_relay = "ws://127.0.0.1:9".into();
    let down = TestNode::builder()
        .service("board", Arc::new(Board::new(cfg)))
        .build();
    let mut d = down.client().await;
    let (ok, msg) = d
        .publish(&staked(&Keys::generate(), &trusted, now, "c"))
        .await;
    assert!(
        !ok && msg.starts_with("error: the rank service could not be reached"),
        "{msg}"
    );
}
