//! Checking attestations on the Bitcoin chain.
//!
//! An attestation transaction has a single output that pays to HASH160 of
//! the Mainstay base key tweaked by the attested `merkle_root`: the root's 32
//! bytes in internal order are split into sixteen 2-byte big-endian
//! non-hardened BIP32 child indexes, applied in order with CKDpub. Each
//! attestation spends the previous one (the staychain).

use std::str::FromStr;

use async_trait::async_trait;
use bitcoin::bip32::{ChainCode, ChildNumber, Fingerprint, Xpub};
use bitcoin::hashes::{hash160, Hash};
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use bitcoin::{NetworkKind, PubkeyHash, ScriptBuf, Transaction, Txid, WPubkeyHash};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The public Mainstay mainnet base key and chain code.
pub const MAINNET_BASE_KEY: &str =
    "03e31877426407458858948993f6af1fc70dd2928a328dec6cdf5c215770e40ed2";
/// Chain code of [`MAINNET_BASE_KEY`].
pub const MAINNET_CHAIN_CODE: &str =
    "14df7ece79e83f0f479a37832d770294014edc6884b0c8bfa2e0aaf51fb00229";

/// Where transactions come from.
#[async_trait]
pub trait ChainSource: Send + Sync {
    /// The transaction with this txid (display hex).
    async fn transaction(&self, txid: &str) -> Result<Transaction>;
}

async fn http(
    method: &'static str,
    url: String,
    auth: Option<(String, String)>,
    body: Option<Value>,
) -> Result<String> {
    let mut req = civkit_http::Request::new(method, url);
    if let Some((u, p)) = auth {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req = req.header("Authorization", format!("Basic {basic}"));
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    Ok(req.text().await?)
}

fn decode_tx(hex_tx: &str) -> Result<Transaction> {
    bitcoin::consensus::encode::deserialize_hex(hex_tx.trim())
        .map_err(|e| Error::BadAnswer(format!("not a transaction: {e}")))
}

/// bitcoind's JSON-RPC (`getrawtransaction <txid> false`; needs `-txindex`).
pub struct BitcoindRpc {
    pub url: String,
    pub user: String,
    pub password: String,
}

#[async_trait]
impl ChainSource for BitcoindRpc {
    async fn transaction(&self, txid: &str) -> Result<Transaction> {
        let body = json!({ "jsonrpc": "1.0", "id": "civkit", "method": "getrawtransaction", "params": [txid, false] });
        let text = http(
            "POST",
            self.url.clone(),
            Some((self.user.clone(), self.password.clone())),
            Some(body),
        )
        .await?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::BadAnswer(format!("bitcoind answered non-JSON: {e}")))?;
        if !v["error"].is_null() {
            return Err(Error::BadAnswer(format!("bitcoind: {}", v["error"])));
        }
        decode_tx(
            v["result"]
                .as_str()
                .ok_or_else(|| Error::BadAnswer("bitcoind: no result".into()))?,
        )
    }
}

/// An Esplora REST server (`GET {url}/tx/{txid}/hex`).
pub struct Esplora {
    pub url: String,
}

#[async_trait]
impl ChainSource for Esplora {
    async fn transaction(&self, txid: &str) -> Result<Transaction> {
        decode_tx(
            &http(
                "GET",
                format!("{}/tx/{txid}/hex", self.url.trim_end_matches('/')),
                None,
                None,
            )
            .await?,
        )
    }
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
/// output paying to the tweaked key.
pub async fn check_attestation(
    chain: &dyn ChainSource,
    base_key: &str,
    chain_code: &str,
    txid: &str,
    merkle_root: &str,
) -> Result<Transaction> {
    let tx = chain.transaction(txid).await?;
    if tx.compute_txid().to_string() != txid {
        return Err(Error::BadAnswer(
            "the chain source returned another transaction".into(),
        ));
    }
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
    Ok(tx)
}

/// Check staychain continuity over txids, newest first: each spends the next.
pub async fn check_staychain(chain: &dyn ChainSource, txids: &[String]) -> Result<()> {
    for pair in txids.windows(2) {
        let newer = chain.transaction(&pair[0]).await?;
        let older = Txid::from_str(&pair[1])
            .map_err(|e| Error::Document(format!("txid {}: {e}", pair[1])))?;
        if !newer.input.iter().any(|i| i.previous_output.txid == older) {
            return Err(Error::Chain(format!(
                "{} does not spend {}: the staychain is broken",
                pair[0], pair[1]
            )));
        }
    }
    Ok(())
}
