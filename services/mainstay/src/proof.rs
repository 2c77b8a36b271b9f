//! Mainstay slot proofs, as the Mainstay API serves them
//! (`GET /commitment/latestproof`, `.msp` sequences).
//!
//! Every value is 32 bytes, shown as hex in *reversed* (display) byte order.
//! Starting from `commitment`, each op combines the running hash `h` with
//! the op's commitment `o` by double SHA-256 over internal byte order:
//! `append: true` gives `h = H(h || o)`, `append: false` gives `h = H(o || h)`.
//! The result, shown reversed, must equal `merkle_root`.

use nostr::hashes::{sha256d, Hash};
use serde::{Deserialize, Serialize};

/// One step of a slot proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub append: bool,
    pub commitment: String,
}

/// A slot proof: the commitment of a slot and its path to the attestation's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotProof {
    pub commitment: String,
    pub merkle_root: String,
    pub ops: Vec<Op>,
    pub txid: String,
    #[serde(default)]
    pub height: serde_json::Value,
}

/// Why a proof or sequence does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("`{0}` is not 32 bytes of hex")]
    BadHex(String),
    #[error("proof {index} (txid {txid}) does not reach its merkle root")]
    Unreached { index: usize, txid: String },
    #[error("the sequence's commitments are {found:?}, not {expected:?}")]
    Commitments {
        found: Vec<String>,
        expected: Vec<String>,
    },
    #[error("the sequence is empty")]
    Empty,
}

/// 32 bytes from display (reversed) hex, in internal order.
fn internal(hex_str: &str) -> Result<[u8; 32], ProofError> {
    let bytes = hex::decode(hex_str).map_err(|_| ProofError::BadHex(hex_str.to_string()))?;
    let mut out: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ProofError::BadHex(hex_str.to_string()))?;
    out.reverse();
    Ok(out)
}

/// The root a proof's ops lead to, in display hex.
pub fn root_of(proof: &SlotProof) -> Result<String, ProofError> {
    let mut h = internal(&proof.commitment)?;
    for op in &proof.ops {
        let o = internal(&op.commitment)?;
        let mut data = [0u8; 64];
        let (first, second) = if op.append { (h, o) } else { (o, h) };
        data[..32].copy_from_slice(&first);
        data[32..].copy_from_slice(&second);
        h = sha256d::Hash::hash(&data).to_byte_array();
    }
    h.reverse();
    Ok(hex::encode(h))
}

/// True when the proof's commitment reaches its `merkle_root`.
pub fn verify(proof: &SlotProof) -> Result<bool, ProofError> {
    Ok(root_of(proof)? == proof.merkle_root.to_ascii_lowercase())
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Verify a sequence of proofs, newest first: every proof reaches its root,
/// and the distinct consecutive commitments (the all-zero genesis left out)
/// are exactly `expected`, newest first. Returns the staychain transaction
/// the sequence reaches back to (the oldest proof's `txid`).
pub fn verify_sequence(proofs: &[SlotProof], expected: &[&str]) -> Result<String, ProofError> {
    let oldest = proofs.last().ok_or(ProofError::Empty)?;
    let mut found: Vec<String> = Vec::new();
    for (index, p) in proofs.iter().enumerate() {
        if !verify(p)? {
            return Err(ProofError::Unreached {
                index,
                txid: p.txid.clone(),
            });
        }
        let c = p.commitment.to_ascii_lowercase();
        if c != GENESIS && found.last() != Some(&c) {
            found.push(c);
        }
    }
    let expected: Vec<String> = expected.iter().map(|e| e.to_ascii_lowercase()).collect();
    if found != expected {
        return Err(ProofError::Commitments { found, expected });
    }
    Ok(oldest.txid.clone())
}
