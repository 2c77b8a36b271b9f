//! BIP-322 generic signed messages, version 2.0.0 of the BIP (June 2026):
//! signatures prefixed with their format (`smp` simple, `ful` full, `pof`
//! full proof of funds, the last a finalized PSBT).
//!
//! Why this module and not the `bip322` crate: the crate (0.0.10, the
//! newest published) implements the draft before 2.0.0. It reads
//! unprefixed simple and full signatures only, and has no proof-of-funds
//! form, which is the form a UTXO stake certificate needs.
//!
//! The BIP lets a validator without a full script interpreter check the
//! scripts it understands and answer *inconclusive* for the rest. This one
//! understands the single-key scripts: P2PKH, P2SH-P2WPKH, P2WPKH and P2TR
//! key-path spends. Their required rules are checked: `SIGHASH_ALL` (or
//! `SIGHASH_DEFAULT` for P2TR), strict DER and low-S ECDSA signatures
//! (libsecp256k1 refuses high S), compressed keys in segwit, minimal pushes
//! and nothing else on the stack. Multisig, timelock and script-path spends
//! come back [`Bip322Error::Inconclusive`], never valid.
//!
//! [`sign_proof_of_funds`] builds the `pof` form for P2WPKH and P2TR keys,
//! for `civkit-sample stake prove --utxo` and the tests.

use base64::Engine;
use bitcoin::consensus::deserialize;
use bitcoin::hashes::{hash160, sha256, Hash, HashEngine};
use bitcoin::key::{Keypair, TapTweak};
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey, Verification};
use bitcoin::sighash::{EcdsaSighashType, Prevouts, SighashCache, TapSighashType};
use bitcoin::{
    absolute, transaction, Amount, OutPoint, PublicKey, Script, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Txid, Witness, XOnlyPublicKey,
};

/// The signature formats of BIP-322 2.0.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `smp`: the witness stack of `to_sign`'s only input.
    Simple,
    /// `ful`: the whole `to_sign` transaction.
    Full,
    /// `pof`: the finalized PSBT of `to_sign`, with extra inputs.
    ProofOfFunds,
}

/// A valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub format: Format,
    /// `to_sign`'s `nLockTime` ("valid at time T").
    pub lock_time: u32,
    /// `nSequence` of `to_sign`'s first input ("and age S").
    pub sequence: u32,
    /// For proof of funds: the outputs the signer showed control of, as
    /// the PSBT describes them. Whether they exist and are unspent is the
    /// chain's to say.
    pub funds: Vec<(OutPoint, TxOut)>,
}

/// The BIP's *invalid* and *inconclusive* states, and undecodable input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bip322Error {
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("invalid signature: {0}")]
    Invalid(String),
    #[error("inconclusive: {0}")]
    Inconclusive(String),
}

fn invalid(m: impl Into<String>) -> Bip322Error {
    Bip322Error::Invalid(m.into())
}

/// `sha256_tag(m)` with the tag `BIP0322-signed-message`.
pub fn message_hash(message: &[u8]) -> [u8; 32] {
    let tag = sha256::Hash::hash(b"BIP0322-signed-message");
    let mut engine = sha256::Hash::engine();
    engine.input(tag.as_ref());
    engine.input(tag.as_ref());
    engine.input(message);
    sha256::Hash::from_engine(engine).to_byte_array()
}

/// The virtual `to_spend` transaction for `challenge` and `message`.
pub fn to_spend(challenge: &Script, message: &[u8]) -> Transaction {
    let mut script_sig = vec![0x00, 0x20];
    script_sig.extend_from_slice(&message_hash(message));
    Transaction {
        version: transaction::Version(0),
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::all_zeros(), 0xFFFF_FFFF),
            script_sig: ScriptBuf::from_bytes(script_sig),
            sequence: Sequence(0),
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: challenge.to_owned(),
        }],
    }
}

/// The virtual `to_sign` transaction, unsigned: one input spending
/// `to_spend`'s output, one output of nothing to `OP_RETURN`.
pub fn to_sign(to_spend: &Transaction) -> Transaction {
    Transaction {
        version: transaction::Version(0),
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(to_spend.compute_txid(), 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence(0),
            witness: Witness::new(),
        }],
        output: vec![op_return()],
    }
}

/// `to_sign`'s one output: nothing, to `OP_RETURN`.
fn op_return() -> TxOut {
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(vec![0x6a]),
    }
}

fn decode_base64(s: &str) -> Result<Vec<u8>, Bip322Error> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Bip322Error::Malformed("not base64".into()))
}

/// Verify `signature` (with its format prefix; an unprefixed signature is
/// read as simple, as the BIP allows for older signers) by the address
/// whose script is `challenge`, over `message`.
pub fn verify(challenge: &Script, message: &[u8], signature: &str) -> Result<Proof, Bip322Error> {
    let spend = to_spend(challenge, message);
    let first = OutPoint::new(spend.compute_txid(), 0);
    let (format, body) = match signature.get(..3) {
        Some("smp") => (Format::Simple, &signature[3..]),
        Some("ful") => (Format::Full, &signature[3..]),
        Some("pof") => (Format::ProofOfFunds, &signature[3..]),
        _ => (Format::Simple, signature),
    };
    let bytes = decode_base64(body)?;
    let (tx, prevouts) = match format {
        Format::Simple => {
            if !(challenge.is_p2wpkh() || challenge.is_p2wsh() || challenge.is_p2tr()) {
                return Err(invalid("the simple form is for native segwit addresses"));
            }
            let witness: Witness = deserialize(&bytes)
                .map_err(|_| Bip322Error::Malformed("not a witness stack".into()))?;
            let mut tx = to_sign(&spend);
            tx.input[0].witness = witness;
            (tx, vec![spend.output[0].clone()])
        }
        Format::Full => {
            let tx: Transaction = deserialize(&bytes)
                .map_err(|_| Bip322Error::Malformed("not a transaction".into()))?;
            if tx.input.len() != 1 {
                return Err(invalid(
                    "a full signature has one input; proofs of funds are `pof`",
                ));
            }
            (tx, vec![spend.output[0].clone()])
        }
        Format::ProofOfFunds => proof_of_funds(&bytes, message, &spend)?,
    };
    check_shape(&tx, first)?;
    let mut cache = SighashCache::new(&tx);
    let secp = Secp256k1::verification_only();
    for index in 0..tx.input.len() {
        check_input(&secp, &tx, &mut cache, &prevouts, index)?;
    }
    let funds = tx
        .input
        .iter()
        .zip(&prevouts)
        .skip(1)
        .map(|(i, o)| (i.previous_output, o.clone()))
        .collect();
    Ok(Proof {
        format,
        lock_time: tx.lock_time.to_consensus_u32(),
        sequence: tx.input[0].sequence.0,
        funds,
    })
}

/// The PSBT's transaction with its final scripts, and every input's
/// previous output (the first is `to_spend`'s).
fn proof_of_funds(
    bytes: &[u8],
    message: &[u8],
    spend: &Transaction,
) -> Result<(Transaction, Vec<TxOut>), Bip322Error> {
    let psbt =
        Psbt::deserialize(bytes).map_err(|e| Bip322Error::Malformed(format!("PSBT: {e}")))?;
    // PSBT_GLOBAL_GENERIC_SIGNED_MESSAGE (0x09), when present, is the message.
    if let Some((_, m)) = psbt.unknown.iter().find(|(k, _)| k.type_value == 0x09) {
        if m.as_slice() != message {
            return Err(invalid("the PSBT carries another message"));
        }
    }
    let mut prevouts = vec![spend.output[0].clone()];
    for (index, (txin, input)) in psbt
        .unsigned_tx
        .input
        .iter()
        .zip(&psbt.inputs)
        .enumerate()
        .skip(1)
    {
        let prev = &txin.previous_output;
        let from_full = |tx: &Transaction| {
            (tx.compute_txid() == prev.txid)
                .then(|| tx.output.get(prev.vout as usize).cloned())
                .flatten()
        };
        let utxo = match (&input.witness_utxo, &input.non_witness_utxo) {
            (_, Some(tx)) => from_full(tx)
                .ok_or_else(|| invalid(format!("input {index}'s full UTXO is not its prevout")))?,
            (Some(out), None) => out.clone(),
            // An earlier input spending the same transaction may carry it.
            (None, None) => psbt.unsigned_tx.input[1..index]
                .iter()
                .zip(&psbt.inputs[1..index])
                .find(|(i, _)| i.previous_output.txid == prev.txid)
                .and_then(|(_, p)| p.non_witness_utxo.as_ref())
                .and_then(from_full)
                .ok_or_else(|| invalid(format!("input {index} has no UTXO")))?,
        };
        prevouts.push(utxo);
    }
    if psbt
        .inputs
        .iter()
        .any(|i| i.final_script_sig.is_none() && i.final_script_witness.is_none())
    {
        return Err(invalid("the PSBT is not finalized"));
    }
    Ok((psbt.extract_tx_unchecked_fee_rate(), prevouts))
}

/// `to_sign`'s fields as the BIP fixes them.
fn check_shape(tx: &Transaction, first: OutPoint) -> Result<(), Bip322Error> {
    if tx.input.first().map(|i| i.previous_output) != Some(first) {
        return Err(invalid("the first input does not spend to_spend"));
    }
    if tx.output != [op_return()] {
        return Err(invalid("to_sign has one output: nothing to OP_RETURN"));
    }
    let mut seen = std::collections::BTreeSet::new();
    if !tx.input.iter().all(|i| seen.insert(i.previous_output)) {
        return Err(invalid("an input is spent twice"));
    }
    if !matches!(tx.version.0, 0 | 2) {
        return Err(Bip322Error::Inconclusive(format!(
            "to_sign version {}",
            tx.version.0
        )));
    }
    Ok(())
}

fn push_data(script: &Script) -> Result<Vec<&[u8]>, Bip322Error> {
    script
        .instructions_minimal()
        .map(|i| match i {
            Ok(bitcoin::script::Instruction::PushBytes(b)) => Ok(b.as_bytes()),
            _ => Err(invalid("the scriptSig is not minimal pushes")),
        })
        .collect()
}

/// Check one input's signature, for the script types this module knows.
fn check_input<C: Verification>(
    secp: &Secp256k1<C>,
    tx: &Transaction,
    cache: &mut SighashCache<&Transaction>,
    prevouts: &[TxOut],
    index: usize,
) -> Result<(), Bip322Error> {
    let input = &tx.input[index];
    let prev = &prevouts[index];
    let spk = prev.script_pubkey.as_script();
    let which = format!("input {index}");
    let witness: Vec<&[u8]> = input.witness.iter().collect();
    let bad = |what: &str| invalid(format!("{which}: {what}"));

    if spk.is_p2tr() {
        if !input.script_sig.is_empty() {
            return Err(bad("a taproot spend has an empty scriptSig"));
        }
        let [sig] = witness.as_slice() else {
            return Err(Bip322Error::Inconclusive(format!(
                "{which}: only taproot key-path spends are understood"
            )));
        };
        let sig = bitcoin::taproot::Signature::from_slice(sig).map_err(|_| bad("bad signature"))?;
        if !matches!(
            sig.sighash_type,
            TapSighashType::Default | TapSighashType::All
        ) {
            return Err(bad("signatures must use SIGHASH_ALL or SIGHASH_DEFAULT"));
        }
        let key = XOnlyPublicKey::from_slice(&spk.as_bytes()[2..])
            .map_err(|_| bad("the output key is not a point"))?;
        let sighash = cache
            .taproot_key_spend_signature_hash(index, &Prevouts::All(prevouts), sig.sighash_type)
            .map_err(|e| bad(&e.to_string()))?;
        return secp
            .verify_schnorr(
                &sig.signature,
                &Message::from_digest(sighash.to_byte_array()),
                &key,
            )
            .map_err(|_| bad("invalid signature"));
    }

    // The single-key ECDSA scripts: where the signature and key are, and
    // which script the BIP143 or legacy sighash commits to.
    let (sig, key, segwit_code) = if spk.is_p2wpkh() {
        if !input.script_sig.is_empty() {
            return Err(bad("a P2WPKH spend has an empty scriptSig"));
        }
        let [sig, key] = witness.as_slice() else {
            return Err(bad("a P2WPKH witness is a signature and a key"));
        };
        (*sig, *key, Some((spk.to_owned(), &spk.as_bytes()[2..])))
    } else if spk.is_p2sh() {
        let pushes = push_data(&input.script_sig)?;
        let [redeem] = pushes.as_slice() else {
            return Err(Bip322Error::Inconclusive(format!(
                "{which}: only P2SH-P2WPKH is understood among P2SH scripts"
            )));
        };
        let redeem = Script::from_bytes(redeem);
        if hash160::Hash::hash(redeem.as_bytes()).as_byte_array()[..] != spk.as_bytes()[2..22] {
            return Err(bad("the redeem script does not hash to the address"));
        }
        if !redeem.is_p2wpkh() {
            return Err(Bip322Error::Inconclusive(format!(
                "{which}: only P2SH-P2WPKH is understood among P2SH scripts"
            )));
        }
        let [sig, key] = witness.as_slice() else {
            return Err(bad("a P2WPKH witness is a signature and a key"));
        };
        (
            *sig,
            *key,
            Some((redeem.to_owned(), &redeem.as_bytes()[2..])),
        )
    } else if spk.is_p2pkh() {
        if !input.witness.is_empty() {
            return Err(bad("a P2PKH spend has no witness"));
        }
        let pushes = push_data(&input.script_sig)?;
        let [sig, key] = pushes.as_slice() else {
            return Err(bad("a P2PKH scriptSig is a signature and a key"));
        };
        (*sig, *key, None)
    } else {
        return Err(Bip322Error::Inconclusive(format!(
            "{which}: the script type is not understood (single-key P2PKH, P2SH-P2WPKH, P2WPKH and P2TR are)"
        )));
    };

    let sig = bitcoin::ecdsa::Signature::from_slice(sig)
        .map_err(|_| bad("the signature is not strict DER with a standard sighash type"))?;
    if sig.sighash_type != EcdsaSighashType::All {
        return Err(bad("signatures must use SIGHASH_ALL"));
    }
    let key = PublicKey::from_slice(key).map_err(|_| bad("the key is not a point"))?;
    let digest = match segwit_code {
        Some((code, program)) => {
            if !key.compressed
                || key.wpubkey_hash().ok().map(|h| h.to_byte_array().to_vec())
                    != Some(program.to_vec())
            {
                return Err(bad("the key does not hash to the address"));
            }
            cache
                .p2wpkh_signature_hash(index, &code, prev.value, EcdsaSighashType::All)
                .map_err(|e| bad(&e.to_string()))?
                .to_byte_array()
        }
        None => {
            if key.pubkey_hash().as_byte_array()[..] != spk.as_bytes()[3..23] {
                return Err(bad("the key does not hash to the address"));
            }
            cache
                .legacy_signature_hash(index, spk, EcdsaSighashType::All.to_u32())
                .map_err(|e| bad(&e.to_string()))?
                .to_byte_array()
        }
    };
    secp.verify_ecdsa(&Message::from_digest(digest), &sig.signature, &key.inner)
        .map_err(|_| bad("invalid signature"))
}

/// A key's P2WPKH or P2TR (key path, no script tree) output script.
pub fn output_script(kind: KeyScript, key: &SecretKey) -> ScriptBuf {
    let secp = Secp256k1::new();
    match kind {
        KeyScript::P2wpkh => {
            let key = bitcoin::CompressedPublicKey(key.public_key(&secp));
            ScriptBuf::new_p2wpkh(&key.wpubkey_hash())
        }
        KeyScript::P2tr => {
            let (x, _) = key.x_only_public_key(&secp);
            ScriptBuf::new_p2tr(&secp, x, None)
        }
    }
}

/// The output scripts [`sign_proof_of_funds`] signs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScript {
    P2wpkh,
    P2tr,
}

impl KeyScript {
    /// Which of the two `script` is, if either.
    pub fn of(script: &Script) -> Option<KeyScript> {
        if script.is_p2wpkh() {
            Some(KeyScript::P2wpkh)
        } else if script.is_p2tr() {
            Some(KeyScript::P2tr)
        } else {
            None
        }
    }
}

/// A `pof` signature over `message` by the address `challenge` (key
/// `challenge_key`) that shows control of `funds`: each output, its
/// previous output as the chain has it, and its key. Every script is
/// P2WPKH or P2TR (key path).
pub fn sign_proof_of_funds(
    message: &[u8],
    challenge: (&Script, &SecretKey),
    funds: &[(OutPoint, TxOut, SecretKey)],
) -> Result<String, Bip322Error> {
    let spend = to_spend(challenge.0, message);
    let mut tx = to_sign(&spend);
    let mut inputs = vec![(
        tx.input[0].previous_output,
        spend.output[0].clone(),
        *challenge.1,
    )];
    inputs.extend(funds.iter().cloned());
    tx.input.extend(funds.iter().map(|(outpoint, _, _)| TxIn {
        previous_output: *outpoint,
        script_sig: ScriptBuf::new(),
        sequence: Sequence(0),
        witness: Witness::new(),
    }));
    let prevouts: Vec<TxOut> = inputs.iter().map(|(_, o, _)| o.clone()).collect();
    let secp = Secp256k1::new();
    let mut witnesses = Vec::new();
    {
        let mut cache = SighashCache::new(&tx);
        for (index, (_, prev, key)) in inputs.iter().enumerate() {
            let unsupported = || invalid(format!("input {index}: only P2WPKH and P2TR are signed"));
            let kind = KeyScript::of(&prev.script_pubkey).ok_or_else(unsupported)?;
            if output_script(kind, key) != prev.script_pubkey {
                return Err(invalid(format!(
                    "input {index}: the key does not own the output"
                )));
            }
            let witness = match kind {
                KeyScript::P2wpkh => {
                    let digest = cache
                        .p2wpkh_signature_hash(
                            index,
                            &prev.script_pubkey,
                            prev.value,
                            EcdsaSighashType::All,
                        )
                        .map_err(|e| invalid(e.to_string()))?;
                    let sig = bitcoin::ecdsa::Signature::sighash_all(
                        secp.sign_ecdsa(&Message::from_digest(digest.to_byte_array()), key),
                    );
                    let public = bitcoin::CompressedPublicKey(key.public_key(&secp));
                    Witness::p2wpkh(&sig, &public.0)
                }
                KeyScript::P2tr => {
                    let digest = cache
                        .taproot_key_spend_signature_hash(
                            index,
                            &Prevouts::All(&prevouts),
                            TapSighashType::Default,
                        )
                        .map_err(|e| invalid(e.to_string()))?;
                    let tweaked = Keypair::from_secret_key(&secp, key).tap_tweak(&secp, None);
                    let sig = secp.sign_schnorr_no_aux_rand(
                        &Message::from_digest(digest.to_byte_array()),
                        &tweaked.to_keypair(),
                    );
                    Witness::from_slice(&[sig.as_ref().to_vec()])
                }
            };
            witnesses.push(witness);
        }
    }
    let mut psbt = Psbt::from_unsigned_tx(tx).map_err(|e| invalid(e.to_string()))?;
    for ((input, witness), prev) in psbt.inputs.iter_mut().zip(witnesses).zip(&prevouts) {
        input.witness_utxo = Some(prev.clone());
        input.final_script_witness = Some(witness);
    }
    psbt.unknown.insert(
        bitcoin::psbt::raw::Key {
            type_value: 0x09,
            key: Vec::new(),
        },
        message.to_vec(),
    );
    Ok(format!(
        "pof{}",
        base64::engine::general_purpose::STANDARD.encode(psbt.serialize())
    ))
}
