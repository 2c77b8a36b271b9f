//! Channel stake certificates against the stand-in chain: a real 2-of-2
//! P2WSH funding transaction in a block, a channel_announcement built with
//! LDK's message types and signed over LDK's encoding, and every refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use bitcoin::key::XOnlyPublicKey;
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::{Amount, Network, OutPoint, ScriptBuf, TxOut};
use civkit_chain::stand_in::{self, StandInChain};
use civkit_chain::{ChainSource, Esplora};
use civkit_rank::channel::{ChannelCertificate, Refusal};
use civkit_rank::statement::StakeStatement;
use civkit_rank::testing;
use lightning::ln::msgs::ChannelAnnouncement;
use lightning::util::ser::Writeable;

fn secret(b: u8) -> SecretKey {
    SecretKey::from_slice(&[b; 32]).unwrap()
}
fn public(b: u8) -> PublicKey {
    secret(b).public_key(&Secp256k1::new())
}
fn xonly(b: u8) -> XOnlyPublicKey {
    public(b).x_only_public_key().0
}

/// Node keys 1 and 2, funding keys 11 and 12.
const NODES: (u8, u8) = (1, 2);
const FUNDING: (u8, u8) = (11, 12);

/// A funding output of `sats` to the 2-of-2 of `keys`, mined; its scid.
fn fund(chain: &StandInChain, keys: (u8, u8), sats: u64) -> (u64, OutPoint) {
    testing::fund_channel(chain, (public(keys.0), public(keys.1)), sats)
}

/// A signed channel_announcement, as LDK encodes it; `signers` sign it
/// (node 1, node 2, funding 1, funding 2).
fn announcement(scid: u64, network: Network, signers: [u8; 4]) -> ChannelAnnouncement {
    let keys = [NODES.0, NODES.1, FUNDING.0, FUNDING.1].map(secret);
    let signers = signers.map(secret);
    testing::announcement(
        scid,
        network,
        [&keys[0], &keys[1], &keys[2], &keys[3]],
        [&signers[0], &signers[1], &signers[2], &signers[3]],
    )
}

/// The certificate as a maker sends it: hex, side, DER hex, parsed back.
fn certificate(
    ann: &ChannelAnnouncement,
    side: u8,
    signer: u8,
    s: &StakeStatement,
) -> ChannelCertificate {
    let sig = Secp256k1::new().sign_ecdsa(&Message::from_digest(s.digest()), &secret(signer));
    ChannelCertificate::parse(
        &hex::encode(ann.encode()),
        side,
        &hex::encode(sig.serialize_der()),
    )
    .unwrap()
}

const RANK: u8 = 40;

fn statement(expiry_height: u32) -> StakeStatement {
    StakeStatement {
        stake_key: xonly(30),
        rank_key: xonly(RANK),
        expiry_height,
        network: Network::Regtest,
    }
}

#[tokio::test]
async fn a_channel_weighs_its_funding_output_until_it_is_spent() {
    let (chain, url) = stand_in::start().await;
    chain.mine_empty(2);
    let (scid, outpoint) = fund(&chain, FUNDING, 2_500_000);
    chain.mine_empty(5);
    let source = Esplora { url };
    let verify = |c: ChannelCertificate, s: StakeStatement| {
        let source = source.clone();
        async move { c.verify(&s, &xonly(RANK), Network::Regtest, &source).await }
    };
    let ann = announcement(
        scid,
        Network::Regtest,
        [NODES.0, NODES.1, FUNDING.0, FUNDING.1],
    );
    let s = statement(1_000);

    let stake = verify(certificate(&ann, 2, FUNDING.1, &s), s)
        .await
        .unwrap();
    assert_eq!(stake.value, Amount::from_sat(2_500_000));
    // Mined at height 2 of a chain whose tip is 7: six confirmations.
    assert_eq!(stake.confirmed_at, 2);
    assert_eq!(stake.confirmations(7), 6);
    assert_eq!(stake.outpoint, outpoint);
    assert_eq!(source.tip_height().await.unwrap(), 7);

    // The statement signed by the other side's key, claimed as side 2.
    let r = verify(certificate(&ann, 2, FUNDING.0, &s), s).await;
    assert!(matches!(r, Err(Refusal::StatementSignature)), "{r:?}");
    // A node signature by a key that is not the node's.
    let forged = announcement(scid, Network::Regtest, [NODES.0, 99, FUNDING.0, FUNDING.1]);
    let r = verify(certificate(&forged, 1, FUNDING.0, &s), s).await;
    assert!(matches!(r, Err(Refusal::Announcement(_))), "{r:?}");
    // A byte appended to the announcement is signed excess data to LDK:
    // the signatures no longer cover it.
    let mut padded = ann.encode();
    padded.push(0);
    let sig = Secp256k1::new().sign_ecdsa(&Message::from_digest(s.digest()), &secret(FUNDING.0));
    let c = ChannelCertificate::parse(&hex::encode(padded), 1, &hex::encode(sig.serialize_der()))
        .unwrap();
    let r = verify(c, s).await;
    assert!(matches!(r, Err(Refusal::Announcement(_))), "{r:?}");
    // For another rank service; for another network.
    let other = StakeStatement {
        rank_key: xonly(41),
        ..s
    };
    let r = verify(certificate(&ann, 1, FUNDING.0, &other), other).await;
    assert!(matches!(r, Err(Refusal::OtherRankService)), "{r:?}");
    let mainnet = announcement(
        scid,
        Network::Bitcoin,
        [NODES.0, NODES.1, FUNDING.0, FUNDING.1],
    );
    let r = verify(certificate(&mainnet, 1, FUNDING.0, &s), s).await;
    assert!(matches!(r, Err(Refusal::OtherNetwork)), "{r:?}");
    // Expired: the tip (7) is at the expiry height.
    let old = statement(7);
    let r = verify(certificate(&ann, 1, FUNDING.0, &old), old).await;
    assert!(
        matches!(r, Err(Refusal::Expired { expiry: 7, tip: 7 })),
        "{r:?}"
    );
    // An output of other keys at the announced position.
    let (elsewhere, _) = fund(&chain, (13, 14), 9_000_000);
    let misplaced = announcement(
        elsewhere,
        Network::Regtest,
        [NODES.0, NODES.1, FUNDING.0, FUNDING.1],
    );
    let r = verify(certificate(&misplaced, 1, FUNDING.0, &s), s).await;
    assert!(matches!(r, Err(Refusal::NotFunding)), "{r:?}");
    // A position where no transaction is.
    let nowhere = lightning::util::scid_utils::scid_from_parts(500, 1, 0).unwrap();
    let lost = announcement(
        nowhere,
        Network::Regtest,
        [NODES.0, NODES.1, FUNDING.0, FUNDING.1],
    );
    let r = verify(certificate(&lost, 1, FUNDING.0, &s), s).await;
    assert!(matches!(r, Err(Refusal::NotOnChain(_))), "{r:?}");

    // The channel closes: the next block spends the funding output.
    chain.mine(vec![stand_in::spending(
        outpoint,
        vec![TxOut {
            value: Amount::from_sat(2_400_000),
            script_pubkey: ScriptBuf::new_op_return([]),
        }],
    )]);
    let r = verify(certificate(&ann, 1, FUNDING.0, &s), s).await;
    assert!(matches!(r, Err(Refusal::Spent)), "{r:?}");
}

#[test]
fn malformed_certificates_are_refused_before_any_lookup() {
    let ann = announcement(
        1 << 40,
        Network::Regtest,
        [NODES.0, NODES.1, FUNDING.0, FUNDING.1],
    );
    let good = hex::encode(ann.encode());
    let sig = hex::encode(
        Secp256k1::new()
            .sign_ecdsa(&Message::from_digest([7; 32]), &secret(FUNDING.0))
            .serialize_der(),
    );
    for (a, side, s) in [
        ("zz".to_string(), 1, sig.clone()),
        (good[..good.len() - 2].to_string(), 1, sig.clone()),
        (good.clone(), 3, sig.clone()),
        (good.clone(), 1, "3044".to_string()),
    ] {
        assert!(
            matches!(
                ChannelCertificate::parse(&a, side, &s),
                Err(Refusal::Malformed(_))
            ),
            "{a:.20} {side} {s:.10}"
        );
    }
    assert!(ChannelCertificate::parse(&good, 1, &sig).is_ok());
}

/// Two channels certified; one closes. The tip follower sees the block
/// that spends it, and the certificates resting on it are pruned at that
/// block, the other channel's kept.
#[tokio::test]
async fn a_spent_channel_is_pruned_within_one_block() {
    use civkit_rank::watch::SpendWatch;
    use std::sync::Arc;
    let (chain, url) = stand_in::start().await;
    chain.mine_empty(2);
    let (scid_a, a) = fund(&chain, FUNDING, 1_000_000);
    let (_, b) = fund(&chain, (13, 14), 2_000_000);
    let source: Arc<dyn ChainSource> = Arc::new(Esplora { url });
    let ann = announcement(
        scid_a,
        Network::Regtest,
        [NODES.0, NODES.1, FUNDING.0, FUNDING.1],
    );
    let s = statement(1_000);
    let stake = certificate(&ann, 1, FUNDING.0, &s)
        .verify(&s, &xonly(RANK), Network::Regtest, source.as_ref())
        .await
        .unwrap();
    let mut watch = SpendWatch::new();
    watch.watch(stake.outpoint, "cert-a1");
    watch.watch(stake.outpoint, "cert-a2"); // a second stake key on the same channel
    watch.watch(b, "cert-b");
    let (pruned, err) = watch.prune_spent(source.as_ref()).await;
    assert!(pruned.is_empty() && err.is_none());

    let mut tips = civkit_chain::follow(source.clone(), std::time::Duration::from_millis(20));
    let seen = tips.wait_for(Option::is_some).await.unwrap().unwrap();
    chain.mine(vec![stand_in::spending(
        a,
        vec![TxOut {
            value: Amount::from_sat(990_000),
            script_pubkey: ScriptBuf::new_op_return([]),
        }],
    )]);
    let next = tips
        .wait_for(|t| t.is_some_and(|t| t.height > seen.height))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.height, seen.height + 1, "the very next block");
    let (mut pruned, err) = watch.prune_spent(source.as_ref()).await;
    pruned.sort();
    assert_eq!((pruned, err.is_none()), (vec!["cert-a1", "cert-a2"], true));
    assert_eq!(watch.len(), 1, "the other channel is still watched");
}
