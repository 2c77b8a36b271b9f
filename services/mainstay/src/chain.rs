//! Checking attestations on the Bitcoin chain.
//!
//! An attestation transaction has a single output that pays to HASH160 of
//! the Mainstay base key tweaked by the attested `merkle_root`: the root's 32
//! bytes in internal order are split into sixteen 2-byte big-endian
//! non-hardened BIP32 child indexes, applied in order with CKDpub. Each
//! attestation spends the previous one (the staychain).

use std::str::FromStr;

use bitcoin::bip32::{ChainCode, ChildNumber, Fingerprint, Xpub};
use bitcoin::hashes::{hash160, Hash};
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use bitcoin::{NetworkKind, PubkeyHash, ScriptBuf, Transaction, Txid, WPubkeyHash};

use crate::error::{Error, Result};

/// The public Mainstay mainnet base key and chain code.
pub const MAINNET_BASE_KEY: &str =
    "03e31877426407458858948993f6af1fc70dd2928a328dec6cdf5c215770e40ed2";
/// Chain code of [`MAINNET_BASE_KEY`].
pub const MAINNET_CHAIN_CODE: &str =
    "14df7ece79e83f0f479a37832d770294014edc6884b0c8bfa2e0aaf51fb00229";

/// The chain client, shared with the other services (`civkit-chain`).
pub use civkit_chain::{BitcoindRpc, ChainSource, Esplora};

fn txid(text: &str) -> Result<Txid> {
    Txid::from_str(text).map_err(|e| Error::Document(format!("{text} is not a txid: {e}")))
}

/// The base key tweaked by a merkle root (display hex).
pub fn tweaked_key(base_key: &str, chain_code: &str, merkle_root: &str) -> Result<PublicKey> {
    let bad = |m: &str| Error::Document(m.to_string());
    let secp = Secp256k1::verification_only();
    let mut root = hex::decode(merkle_root).map_err(|_| bad("merkle root is not hex"))?;
    if root.len() != 32 {
        return Err(bad("merkle root is not 32 bytes"));
    }
    root.reverse(); // internal order
    let code: [u8; 32] = hex::decode(chain_code)
        .ok()
        .and_then(|c| c.try_into().ok())
        .ok_or_else(|| bad("chain code is not 32 bytes of hex"))?;
    let xpub = Xpub {
        network: NetworkKind::Main,
        depth: 0,
        parent_fingerprint: Fingerprint::default(),
        child_number: ChildNumber::Normal { index: 0 },
        public_key: PublicKey::from_str(base_key).map_err(|e| bad(&format!("base key: {e}")))?,
        chain_code: ChainCode::from(code),
    };
    let path: Vec<ChildNumber> = root
        .chunks(2)
        .map(|c| ChildNumber::Normal {
            index: u32::from(u16::from_be_bytes([c[0], c[1]])),
        })
        .collect();
    Ok(xpub
        .derive_pub(&secp, &path)
        .map_err(|e| Error::Chain(e.to_string()))?
        .public_key)
}

/// Scripts that pay to HASH160 of `key`: P2PKH, P2WPKH, or P2SH of a
/// 1-of-1 multisig over it (how Mainstay's staychain spends).
pub fn paying_scripts(key: &PublicKey) -> Vec<ScriptBuf> {
    let h = hash160::Hash::hash(&key.serialize());
    let multisig = bitcoin::blockdata::script::Builder::new()
        .push_int(1)
        .push_slice(key.serialize())
        .push_int(1)
        .push_opcode(bitcoin::opcodes::all::OP_CHECKMULTISIG)
        .into_script();
    vec![
        ScriptBuf::new_p2pkh(&PubkeyHash::from_raw_hash(h)),
        ScriptBuf::new_p2wpkh(&WPubkeyHash::from_raw_hash(h)),
        ScriptBuf::new_p2sh(&multisig.script_hash()),
    ]
}

/// Check that `txid` attests `merkle_root` under the base key: a single
/// output paying to the tweaked key, confirmed by at least
/// `min_confirmations` blocks.
pub async fn check_attestation(
    chain: &dyn ChainSource,
    base_key: &str,
    chain_code: &str,
    txid: &str,
    merkle_root: &str,
    min_confirmations: u64,
) -> Result<Transaction> {
    let id = self::txid(txid)?;
    // The chain client checks that the transaction hashes to `id`.
    let tx = chain.transaction(&id).await?;
    if tx.output.len() != 1 {
        return Err(Error::Chain(format!(
            "attestation {txid} has {} outputs, not 1",
            tx.output.len()
        )));
    }
    let key = tweaked_key(base_key, chain_code, merkle_root)?;
    if !paying_scripts(&key).contains(&tx.output[0].script_pubkey) {
        return Err(Error::Chain(format!(
            "attestation {txid} does not pay to the base key tweaked by {merkle_root}"
        )));
    }
    let confirmations = chain.confirmations(&id).await?;
    if confirmations < min_confirmations {
        return Err(Error::Chain(format!(
            "attestation {txid} has {confirmations} confirmation(s), fewer than {min_confirmations}"
        )));
    }
    Ok(tx)
}

/// Walk the staychain back from `from`, each transaction to the one its
/// first input spends, until `stop` says a txid is known good (the slot's
/// configured first transaction, or one verified before). Returns the
/// txids walked, newest first, the stopping one last. Anyone can make a
/// transaction that pays a tweaked key; only the ones linked to the slot's
/// start are Mainstay's.
pub async fn walk_staychain(
    chain: &dyn ChainSource,
    from: &str,
    stop: impl Fn(&str) -> bool + Send,
    max_steps: usize,
) -> Result<Vec<String>> {
    let mut walked = vec![from.to_string()];
    let mut current = from.to_string();
    for _ in 0..max_steps {
        if stop(&current) {
            return Ok(walked);
        }
        let tx = chain.transaction(&txid(&current)?).await?;
        if tx.is_coinbase() {
            break;
        }
        let prev = tx
            .input
            .first()
            .ok_or_else(|| Error::Chain(format!("{current} spends nothing")))?
            .previous_output
            .txid
            .to_string();
        walked.push(prev.clone());
        current = prev;
    }
    Err(Error::Chain(format!(
        "{from} does not lead back to the slot's staychain start within {max_steps} transactions"
    )))
}

/// Check the attestations of a history, newest first: each is on the
/// staychain that leads back to `start`, in this order.
pub async fn check_staychain(
    chain: &dyn ChainSource,
    txids: &[String],
    start: &str,
    max_steps: usize,
) -> Result<()> {
    let Some(newest) = txids.first() else {
        return Ok(());
    };
    Txid::from_str(start).map_err(|e| Error::Document(format!("staychain start {start}: {e}")))?;
    let walked = walk_staychain(chain, newest, |t| t == start, max_steps).await?;
    let mut at = 0;
    for txid in txids {
        match walked[at..].iter().position(|w| w == txid) {
            Some(i) => at += i,
            None => {
                return Err(Error::Chain(format!(
                    "{txid} is not on the staychain from {newest} back to {start}"
                )))
            }
        }
    }
    Ok(())
}
