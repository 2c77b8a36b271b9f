//! The board's rounds: the ids of the events accepted in a round form a
//! Merkle tree, and the round's commitment chains the previous round's, so
//! a verifier can check order and completeness, not only inclusion.
//!
//! Values are 32 bytes in the same display convention as Mainstay proofs
//! (hex is the reverse of the internal bytes), and paths use the same
//! [`Op`] format, so one function ([`crate::proof::root_of`]) follows an
//! event to its round commitment and a round commitment to Mainstay.
//!
//! - leaves: the event ids, in acceptance order;
//! - inner node: `H(left || right)` with `H` double SHA-256; an odd last
//!   node is paired with itself;
//! - round commitment: `H(previous commitment || tree root)`, the first
//!   round's previous commitment being 32 zero bytes.

use nostr::hashes::{sha256d, Hash};
use serde::{Deserialize, Serialize};

use crate::proof::{Op, ProofError, SlotProof};

fn internal(hex_str: &str) -> Result<[u8; 32], ProofError> {
    let bytes = hex::decode(hex_str).map_err(|_| ProofError::BadHex(hex_str.to_string()))?;
    let mut out: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ProofError::BadHex(hex_str.to_string()))?;
    out.reverse();
    Ok(out)
}

fn display(mut bytes: [u8; 32]) -> String {
    bytes.reverse();
    hex::encode(bytes)
}

fn pair(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut data = [0u8; 64];
    data[..32].copy_from_slice(a);
    data[32..].copy_from_slice(b);
    sha256d::Hash::hash(&data).to_byte_array()
}

/// The all-zero commitment before the first round.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One round as the board records and publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    pub number: u64,
    /// Commitment of the previous round (or [`GENESIS`]).
    pub previous: String,
    /// Event ids in acceptance order (hex).
    pub events: Vec<String>,
    /// Merkle root of `events`.
    pub root: String,
    /// `H(previous || root)`: what goes into the Mainstay slot.
    pub commitment: String,
}

/// Merkle root of leaves (display hex).
pub fn merkle_root(leaves: &[String]) -> Result<String, ProofError> {
    let mut level: Vec<[u8; 32]> = leaves
        .iter()
        .map(|l| internal(l))
        .collect::<Result<_, _>>()?;
    if level.is_empty() {
        return Ok(GENESIS.to_string());
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|c| pair(&c[0], c.get(1).unwrap_or(&c[0])))
            .collect();
    }
    Ok(display(level[0]))
}

/// Build round `number` over `events`, chained to `previous`.
pub fn build(number: u64, previous: &str, events: Vec<String>) -> Result<Round, ProofError> {
    let root = merkle_root(&events)?;
    let commitment = display(pair(&internal(previous)?, &internal(&root)?));
    Ok(Round {
        number,
        previous: previous.to_string(),
        events,
        root,
        commitment,
    })
}

/// A proof that event `index` of `round` is in it: its path to the round
/// commitment, in Mainstay's proof format (`merkle_root` = the commitment).
pub fn inclusion(round: &Round, index: usize) -> Result<SlotProof, ProofError> {
    let mut level: Vec<[u8; 32]> = round
        .events
        .iter()
        .map(|l| internal(l))
        .collect::<Result<_, _>>()?;
    let leaf = *level.get(index).ok_or(ProofError::Empty)?;
    let mut i = index;
    let mut ops = Vec::new();
    while level.len() > 1 {
        let sibling = if i.is_multiple_of(2) {
            *level.get(i + 1).unwrap_or(&level[i])
        } else {
            level[i - 1]
        };
        ops.push(Op {
            append: i.is_multiple_of(2),
            commitment: display(sibling),
        });
        level = level
            .chunks(2)
            .map(|c| pair(&c[0], c.get(1).unwrap_or(&c[0])))
            .collect();
        i /= 2;
    }
    ops.push(Op {
        append: false,
        commitment: round.previous.clone(),
    });
    Ok(SlotProof {
        commitment: display(leaf),
        merkle_root: round.commitment.clone(),
        ops,
        txid: String::new(),
        height: serde_json::Value::Null,
    })
}

/// What is wrong with a published history of rounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("round {0} does not recompute to its commitment")]
    Tampered(u64),
    #[error("round {found} follows round {after}: rounds are missing")]
    Gap { after: u64, found: u64 },
    #[error("round {0} does not chain to the previous round's commitment")]
    Unchained(u64),
    #[error(transparent)]
    Proof(#[from] ProofError),
}

/// Check a history of rounds, oldest first: each recomputes, numbers are
/// consecutive, and each chains to the one before.
pub fn verify_history(rounds: &[Round]) -> Result<(), HistoryError> {
    for (i, r) in rounds.iter().enumerate() {
        let again = build(r.number, &r.previous, r.events.clone())?;
        if again.root != r.root || again.commitment != r.commitment {
            return Err(HistoryError::Tampered(r.number));
        }
        if let Some(prev) = i.checked_sub(1).map(|j| &rounds[j]) {
            if r.number != prev.number + 1 {
                return Err(HistoryError::Gap {
                    after: prev.number,
                    found: r.number,
                });
            }
            if r.previous != prev.commitment {
                return Err(HistoryError::Unchained(r.number));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof;

    fn ids(n: u8) -> Vec<String> {
        (0..n).map(|i| hex::encode([i + 1; 32])).collect()
    }

    #[test]
    fn every_event_proves_inclusion_up_to_the_round_commitment() {
        for n in 1..=9 {
            let r = build(0, GENESIS, ids(n)).unwrap();
            for i in 0..n as usize {
                let p = inclusion(&r, i).unwrap();
                assert_eq!(p.commitment, r.events[i]);
                assert!(proof::verify(&p).unwrap(), "n={n} i={i}");
            }
            let mut forged = inclusion(&r, 0).unwrap();
            forged.commitment = hex::encode([0xee; 32]);
            assert!(!proof::verify(&forged).unwrap());
        }
    }

    #[test]
    fn a_history_catches_tampering_gaps_and_reordering() {
        let r0 = build(0, GENESIS, ids(3)).unwrap();
        let r1 = build(1, &r0.commitment, ids(2)).unwrap();
        let r2 = build(2, &r1.commitment, ids(4)).unwrap();
        assert_eq!(
            verify_history(&[r0.clone(), r1.clone(), r2.clone()]),
            Ok(())
        );
        assert_eq!(
            verify_history(&[r0.clone(), r2.clone()]),
            Err(HistoryError::Gap { after: 0, found: 2 })
        );
        let mut dropped = r1.clone();
        dropped.events.remove(0);
        assert_eq!(
            verify_history(&[r0.clone(), dropped, r2.clone()]),
            Err(HistoryError::Tampered(1))
        );
        let mut swapped = r1.clone();
        swapped.events.swap(0, 1);
        assert_eq!(
            verify_history(&[r0.clone(), swapped]),
            Err(HistoryError::Tampered(1))
        );
        let other = build(1, GENESIS, ids(2)).unwrap();
        assert_eq!(
            verify_history(&[r0, other]),
            Err(HistoryError::Unchained(1))
        );
    }
}
