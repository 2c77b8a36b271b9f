//! The board's rounds: the ids of the events accepted in a round form a
//! Merkle tree, and the round's commitment chains the previous round's, so
//! a verifier can check order and completeness, not only inclusion.
//!
//! Values are 32 bytes in the same display convention as Mainstay proofs
//! (hex is the reverse of the internal bytes), and paths use the same
//! [`Op`] shape; [`verify_inclusion`] follows an event to its round
//! commitment, [`crate::proof::verify`] a round commitment to Mainstay.
//!
//! `H` is double SHA-256 over internal byte order. Leaves, inner nodes and
//! the round commitment are domain-separated by a one-byte tag, and an odd
//! last node is carried up unchanged (never paired with itself), so two
//! different lists of events cannot share a root (the CVE-2012-2459 pattern):
//!
//! - leaf: `H(0x00 || event id)`, the event ids in acceptance order;
//! - inner node: `H(0x01 || left || right)`; a level with an odd count
//!   carries its last node to the next level as it is;
//! - a round of one event has that event's leaf hash as its root;
//! - round commitment: `H(0x02 || previous commitment || root)`, the first
//!   round's previous commitment being 32 zero bytes; an empty round (never
//!   closed by the notary) would have the root of 32 zero bytes.

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

const LEAF: u8 = 0x00;
const INNER: u8 = 0x01;
const COMMIT: u8 = 0x02;

fn tagged(tag: u8, parts: &[&[u8; 32]]) -> [u8; 32] {
    let mut data = Vec::with_capacity(1 + 32 * parts.len());
    data.push(tag);
    for p in parts {
        data.extend_from_slice(*p);
    }
    sha256d::Hash::hash(&data).to_byte_array()
}

fn leaf(id: &[u8; 32]) -> [u8; 32] {
    tagged(LEAF, &[id])
}

fn inner(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    tagged(INNER, &[a, b])
}

/// The next level up: pairs hashed, an odd last node carried up as it is.
fn level_up(level: &[[u8; 32]]) -> Vec<[u8; 32]> {
    level
        .chunks(2)
        .map(|c| match c {
            [a, b] => inner(a, b),
            [a] => *a,
            _ => unreachable!("chunks(2) yields one or two"),
        })
        .collect()
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

fn leaves(events: &[String]) -> Result<Vec<[u8; 32]>, ProofError> {
    events.iter().map(|l| Ok(leaf(&internal(l)?))).collect()
}

/// Merkle root of a round's event ids (display hex).
pub fn merkle_root(events: &[String]) -> Result<String, ProofError> {
    let mut level = leaves(events)?;
    if level.is_empty() {
        return Ok(GENESIS.to_string());
    }
    while level.len() > 1 {
        level = level_up(&level);
    }
    Ok(display(level[0]))
}

/// Build round `number` over `events`, chained to `previous`.
pub fn build(number: u64, previous: &str, events: Vec<String>) -> Result<Round, ProofError> {
    let root = merkle_root(&events)?;
    let commitment = display(tagged(COMMIT, &[&internal(previous)?, &internal(&root)?]));
    Ok(Round {
        number,
        previous: previous.to_string(),
        events,
        root,
        commitment,
    })
}

/// A proof that event `index` of `round` is in it, in the shape of a
/// Mainstay proof: `commitment` is the event id, `merkle_root` the round
/// commitment, `ops` the siblings from the leaf up (`append: true` when the
/// sibling is on the right; a level where the node is carried up has no
/// op), then the previous round's commitment. Check it with
/// [`verify_inclusion`].
pub fn inclusion(round: &Round, index: usize) -> Result<SlotProof, ProofError> {
    let mut level = leaves(&round.events)?;
    let id = round.events.get(index).ok_or(ProofError::Empty)?;
    let mut i = index;
    let mut ops = Vec::new();
    while level.len() > 1 {
        let sibling = if i.is_multiple_of(2) {
            level.get(i + 1)
        } else {
            level.get(i - 1)
        };
        if let Some(s) = sibling {
            ops.push(Op {
                append: i.is_multiple_of(2),
                commitment: display(*s),
            });
        }
        level = level_up(&level);
        i /= 2;
    }
    ops.push(Op {
        append: false,
        commitment: round.previous.clone(),
    });
    Ok(SlotProof {
        commitment: id.clone(),
        merkle_root: round.commitment.clone(),
        ops,
        txid: String::new(),
        height: serde_json::Value::Null,
    })
}

/// True when an [`inclusion`] proof leads from its event id to its round
/// commitment.
pub fn verify_inclusion(proof: &SlotProof) -> Result<bool, ProofError> {
    let Some((chain, path)) = proof.ops.split_last() else {
        return Ok(false);
    };
    let mut h = leaf(&internal(&proof.commitment)?);
    for op in path {
        let o = internal(&op.commitment)?;
        h = if op.append {
            inner(&h, &o)
        } else {
            inner(&o, &h)
        };
    }
    if chain.append {
        return Ok(false);
    }
    let commitment = tagged(COMMIT, &[&internal(&chain.commitment)?, &h]);
    Ok(display(commitment) == proof.merkle_root.to_ascii_lowercase())
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
                assert!(verify_inclusion(&p).unwrap(), "n={n} i={i}");
            }
            let mut forged = inclusion(&r, 0).unwrap();
            forged.commitment = hex::encode([0xee; 32]);
            assert!(!verify_inclusion(&forged).unwrap());
        }
    }

    #[test]
    fn different_rounds_never_share_a_root() {
        // The duplicated-last-node pattern: [a, b, c] against [a, b, c, c].
        let three = ids(3);
        let mut four = three.clone();
        four.push(three[2].clone());
        assert_ne!(merkle_root(&three).unwrap(), merkle_root(&four).unwrap());
        // An inner node presented as a leaf (a round of two events against a
        // round whose one "event" is their parent).
        let two = ids(2);
        let l: Vec<[u8; 32]> = leaves(&two).unwrap();
        let parent = display(inner(&l[0], &l[1]));
        assert_eq!(merkle_root(&two).unwrap(), parent);
        assert_ne!(merkle_root(std::slice::from_ref(&parent)).unwrap(), parent);
        // A round of one event: its root is the event's leaf hash.
        let one = ids(1);
        assert_eq!(
            merkle_root(&one).unwrap(),
            display(leaf(&internal(&one[0]).unwrap()))
        );
        // A Mainstay-style proof cannot stand in for an inclusion proof.
        let r = build(0, GENESIS, ids(4)).unwrap();
        assert!(!proof::verify(&inclusion(&r, 1).unwrap()).unwrap());
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
