//! UTXO stake certificates against the stand-in chain: outputs of several
//! script types mined in real blocks, a BIP-322 proof of funds over the
//! statement, and every refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use bitcoin::hashes::Hash;
use bitcoin::key::XOnlyPublicKey;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Address, Amount, Network, OutPoint, TxOut, Txid};
use civkit_chain::stand_in::{self, StandInChain};
use civkit_chain::Esplora;
use civkit_rank::bip322::{self, KeyScript};
use civkit_rank::certificate::{Refusal, UtxoCertificate};
use civkit_rank::statement::StakeStatement;

fn secret(b: u8) -> SecretKey {
    SecretKey::from_slice(&[b; 32]).unwrap()
}
fn xonly(b: u8) -> XOnlyPublicKey {
    secret(b).x_only_public_key(&Secp256k1::new()).0
}

/// An output of `sats` to key `n`'s `kind` script, mined.
fn mined(chain: &StandInChain, n: u8, kind: KeyScript, sats: u64) -> (OutPoint, TxOut, SecretKey) {
    let out = TxOut {
        value: Amount::from_sat(sats),
        script_pubkey: bip322::output_script(kind, &secret(n)),
    };
    let tx = stand_in::spending(
        OutPoint::new(Txid::all_zeros(), u32::from(n)),
        vec![out.clone()],
    );
    chain.mine(vec![tx.clone()]);
    (OutPoint::new(tx.compute_txid(), 0), out, secret(n))
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

/// The certificate: the first output's address signs, all outputs shown.
fn certificate(s: &StakeStatement, funds: &[(OutPoint, TxOut, SecretKey)]) -> UtxoCertificate {
    let (_, first, key) = &funds[0];
    let message = UtxoCertificate::message(s);
    UtxoCertificate {
        address: Address::from_script(&first.script_pubkey, Network::Regtest)
            .unwrap()
            .to_string(),
        signature: bip322::sign_proof_of_funds(
            message.as_bytes(),
            (&first.script_pubkey, key),
            funds,
        )
        .unwrap(),
    }
}

#[tokio::test]
async fn utxos_of_several_script_types_weigh_their_values_until_spent() {
    let (chain, url) = stand_in::start().await;
    chain.mine_empty(1);
    let a = mined(&chain, 1, KeyScript::P2wpkh, 40_000);
    let b = mined(&chain, 2, KeyScript::P2tr, 60_000);
    chain.mine_empty(3);
    let source = Esplora { url };
    let s = statement(1_000);
    let c = certificate(&s, &[a.clone(), b.clone()]);

    let stakes = c
        .verify(&s, &xonly(RANK), Network::Regtest, &source)
        .await
        .unwrap();
    let tip = chain.tip().unwrap();
    let got: Vec<_> = stakes
        .iter()
        .map(|x| (x.outpoint, x.value.to_sat(), x.confirmations(tip)))
        .collect();
    assert_eq!(got, vec![(a.0, 40_000, 5), (b.0, 60_000, 4)]);

    // Another rank service, another network, expiry, another statement.
    let refused = |r: Result<_, Refusal>| r.unwrap_err();
    assert!(matches!(
        refused(c.verify(&s, &xonly(41), Network::Regtest, &source).await),
        Refusal::OtherRankService
    ));
    assert!(matches!(
        refused(c.verify(&s, &xonly(RANK), Network::Signet, &source).await),
        Refusal::OtherNetwork
    ));
    let late = statement(tip as u32);
    assert!(matches!(
        refused(
            certificate(&late, std::slice::from_ref(&a))
                .verify(&late, &xonly(RANK), Network::Regtest, &source)
                .await
        ),
        Refusal::Expired { .. }
    ));
    let other = StakeStatement {
        stake_key: xonly(31),
        ..s
    };
    assert!(matches!(
        refused(
            c.verify(&other, &xonly(RANK), Network::Regtest, &source)
                .await
        ),
        Refusal::ProofOfFunds(_)
    ));

    // An output that is not on the chain (never mined) does not count.
    let ghost = (
        OutPoint::new(Txid::from_byte_array([7; 32]), 0),
        a.1.clone(),
        a.2,
    );
    assert!(matches!(
        refused(
            certificate(&s, &[a.clone(), ghost])
                .verify(&s, &xonly(RANK), Network::Regtest, &source)
                .await
        ),
        Refusal::Spent
    ));

    // Spending one output voids the certificate at the next block.
    chain.mine(vec![stand_in::spending(b.0, vec![])]);
    assert!(matches!(
        refused(c.verify(&s, &xonly(RANK), Network::Regtest, &source).await),
        Refusal::Spent
    ));
    // A proof of funds with no extra output is no certificate.
    let message = UtxoCertificate::message(&s);
    let bare = UtxoCertificate {
        address: c.address.clone(),
        signature: bip322::sign_proof_of_funds(message.as_bytes(), (&a.1.script_pubkey, &a.2), &[])
            .unwrap(),
    };
    assert!(matches!(
        refused(
            bare.verify(&s, &xonly(RANK), Network::Regtest, &source)
                .await
        ),
        Refusal::Malformed(_)
    ));
}
