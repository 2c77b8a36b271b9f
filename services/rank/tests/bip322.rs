//! BIP-322 against the BIP's own test vectors (`tests/vectors/`, copied
//! unchanged from bitcoin/bips at commit 7fe0b034, BIP-322 version 2.0.0),
//! and the proof-of-funds signer against the verifier.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::str::FromStr;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::SecretKey;
use bitcoin::{Amount, OutPoint, ScriptBuf, TxOut, Txid};
use civkit_rank::bip322::{self, Bip322Error, Format, KeyScript};
use serde_json::Value;

fn vectors(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn script(address: &str) -> ScriptBuf {
    bitcoin::Address::from_str(address)
        .unwrap()
        .assume_checked()
        .script_pubkey()
}

/// The script types this verifier understands; others must come back
/// inconclusive, never valid.
fn understood(kind: &str) -> bool {
    matches!(kind, "p2pkh" | "p2sh-p2wpkh" | "p2wpkh" | "p2tr")
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap()
}

#[test]
fn message_hashes_and_virtual_transactions_match_the_bip() {
    let v = vectors("bip322-basic.json");
    for case in v["tx_hashes"].as_array().unwrap() {
        let message = str_of(case, "message").as_bytes();
        let spend = bip322::to_spend(&script(str_of(case, "address")), message);
        assert_eq!(
            hex::encode(bip322::message_hash(message)),
            str_of(case, "message_hash")
        );
        assert_eq!(
            spend.compute_txid().to_string(),
            str_of(case, "to_spend_tx_hash")
        );
        assert_eq!(
            bip322::to_sign(&spend).compute_txid().to_string(),
            str_of(case, "to_sign_tx_hash")
        );
    }
}

#[test]
fn every_valid_vector_verifies_or_is_inconclusive_for_scripts_not_understood() {
    let (mut valid, mut inconclusive) = (0, 0);
    for (file, sections) in [
        ("bip322-basic.json", &["simple"][..]),
        (
            "bip322-generated.json",
            &["simple", "full", "proof_of_funds"][..],
        ),
    ] {
        let v = vectors(file);
        for section in sections {
            for case in v[*section].as_array().unwrap() {
                let kind = str_of(case, "type");
                let challenge = script(str_of(case, "address"));
                for sig in case["bip322_signatures"].as_array().unwrap() {
                    let got = bip322::verify(
                        &challenge,
                        str_of(case, "message").as_bytes(),
                        sig.as_str().unwrap(),
                    );
                    let extra_understood = case["additional_inputs"]
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .flat_map(|i| i.as_array().unwrap())
                                .all(|i| understood(str_of(i, "type")))
                        })
                        .unwrap_or(true);
                    if !(understood(kind) && extra_understood) {
                        assert!(
                            matches!(got, Err(Bip322Error::Inconclusive(_))),
                            "{section} {kind}: {got:?}"
                        );
                        inconclusive += 1;
                        continue;
                    }
                    let proof = got.unwrap_or_else(|e| panic!("{section} {kind}: {e}"));
                    valid += 1;
                    let expected = match &sig.as_str().unwrap()[..3] {
                        "smp" => Format::Simple,
                        "ful" => Format::Full,
                        "pof" => Format::ProofOfFunds,
                        _ => Format::Simple, // unprefixed: the draft's simple form
                    };
                    assert_eq!(proof.format, expected);
                    // Numbers are strings in some sections, numbers in others.
                    let number = |k: &str| match &case[k] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    if !case["lock_time"].is_null() {
                        assert_eq!(proof.lock_time.to_string(), number("lock_time"));
                        assert_eq!(proof.sequence.to_string(), number("sequence"));
                    }
                    if let Some(lists) = case["additional_inputs"].as_array() {
                        let extra: Vec<&Value> =
                            lists.iter().flat_map(|l| l.as_array().unwrap()).collect();
                        assert_eq!(proof.funds.len(), extra.len());
                        for ((_, out), want) in proof.funds.iter().zip(extra) {
                            assert_eq!(out.value.to_sat(), want["value"].as_u64().unwrap());
                            assert_eq!(
                                hex::encode(out.script_pubkey.as_bytes()),
                                str_of(want, "pk_script")
                            );
                        }
                    }
                }
            }
        }
    }
    // Every signature of an understood type (P2PKH, P2SH-P2WPKH, P2WPKH,
    // P2TR key path, in all three formats) verified; the multisig and
    // timelock ones were inconclusive.
    assert_eq!((valid, inconclusive), (14, 9));
}

#[test]
fn every_error_vector_is_refused() {
    for file in ["bip322-basic.json", "bip322-generated.json"] {
        let v = vectors(file);
        for case in v["error"].as_array().unwrap() {
            let address = str_of(case, "address");
            let got = bip322::verify(
                &script(address),
                str_of(case, "message").as_bytes(),
                str_of(case, "signature"),
            );
            let description = str_of(case, "description");
            assert!(got.is_err(), "{description}: accepted");
            // Wrong messages and signers of understood scripts are
            // invalid, not merely inconclusive.
            let challenge = script(address);
            let single_key = challenge.is_p2pkh()
                || challenge.is_p2wpkh()
                || challenge.is_p2tr()
                || description.contains(" p2sh-p2wpkh ");
            if single_key && description.starts_with("wrong") {
                assert!(
                    matches!(got, Err(Bip322Error::Invalid(_))),
                    "{description}: {got:?}"
                );
            }
        }
    }
}

fn secret(b: u8) -> SecretKey {
    SecretKey::from_slice(&[b; 32]).unwrap()
}

fn utxo(n: u8, kind: KeyScript, sats: u64) -> (OutPoint, TxOut, SecretKey) {
    let key = secret(n);
    (
        OutPoint::new(Txid::from_byte_array([n; 32]), u32::from(n)),
        TxOut {
            value: Amount::from_sat(sats),
            script_pubkey: bip322::output_script(kind, &key),
        },
        key,
    )
}

#[test]
fn a_signed_proof_of_funds_verifies_and_any_change_breaks_it() {
    let funds = vec![
        utxo(1, KeyScript::P2wpkh, 50_000),
        utxo(2, KeyScript::P2tr, 70_000),
    ];
    let challenge = funds[0].1.script_pubkey.clone();
    let message = b"civkit stake statement";
    let sig = bip322::sign_proof_of_funds(message, (&challenge, &funds[0].2), &funds).unwrap();
    let proof = bip322::verify(&challenge, message, &sig).unwrap();
    assert_eq!(proof.format, Format::ProofOfFunds);
    let shown: Vec<_> = proof.funds.iter().map(|(o, t)| (*o, t.value)).collect();
    assert_eq!(
        shown,
        funds
            .iter()
            .map(|(o, t, _)| (*o, t.value))
            .collect::<Vec<_>>()
    );

    // Another message, another address.
    assert!(matches!(
        bip322::verify(&challenge, b"another statement", &sig),
        Err(Bip322Error::Invalid(_))
    ));
    assert!(matches!(
        bip322::verify(&funds[1].1.script_pubkey, message, &sig),
        Err(Bip322Error::Invalid(_))
    ));

    // A key that does not own an output cannot sign for it.
    let mut stolen = funds.clone();
    stolen[1].2 = secret(9);
    assert!(bip322::sign_proof_of_funds(message, (&challenge, &funds[0].2), &stolen).is_err());

    // Claiming more value than the output holds breaks the signatures:
    // the signer committed to the amounts.
    let mut psbt = {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&sig[3..])
            .unwrap();
        bitcoin::psbt::Psbt::deserialize(&bytes).unwrap()
    };
    psbt.inputs[2].witness_utxo.as_mut().unwrap().value = Amount::from_sat(7_000_000);
    let forged = {
        use base64::Engine;
        format!(
            "pof{}",
            base64::engine::general_purpose::STANDARD.encode(psbt.serialize())
        )
    };
    assert!(matches!(
        bip322::verify(&challenge, message, &forged),
        Err(Bip322Error::Invalid(_))
    ));

    // Garbage in every shape is refused, never a panic.
    for junk in ["pof", "pofAAAA", "ful", "smp", "pof!!!!", "", "fulAA=="] {
        assert!(bip322::verify(&challenge, message, junk).is_err(), "{junk}");
    }
}
