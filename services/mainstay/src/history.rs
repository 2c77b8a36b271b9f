//! What a taker checks about a board's history: the published rounds chain
//! without gaps or rewrites, attested rounds carry proofs that reach
//! Mainstay, and every order the taker saw is in a round.

use serde::{Deserialize, Serialize};

use crate::proof::{self, SlotProof};
use crate::rounds::{self, Round};

/// The event kind of a published round (addressable, `d` = round number).
pub const ROUND_KIND: u16 = 30384;

/// A round as a board publishes it: the round and, once attested, the slot proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRound {
    pub round: Round,
    pub attestation: Option<SlotProof>,
}

/// Where one seen order stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OrderStatus {
    /// In round `round`, attested by a later-or-equal round through Mainstay txid `txid`.
    Attested { round: u64, txid: String },
    /// In round `round`, no attestation covers it yet.
    Pending { round: u64 },
    /// In no published round: the board left it out of its history.
    Missing,
    /// In round `round`, no longer served, and nothing the board serves and
    /// notarized explains why: the board withholds an order its history holds.
    Withheld { round: u64 },
    /// In round `round`, no longer served because a notarized event explains it.
    Gone { round: u64, why: Gone },
}

/// Why an order the history holds is no longer served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Gone {
    /// Its author deleted it (NIP-09) with `deletion`, itself in a round.
    DeletedByAuthor { deletion: String },
    /// A newer version at the same address, `by`, in a round.
    Replaced { by: String },
    /// Its NIP-40 expiration has passed.
    Expired,
}

/// An order a taker saw, and what the board serves about it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    /// The board serves it now.
    pub served: bool,
    /// When not served: what the board serves that would explain it (the
    /// explanation counts only if it is itself notarized, or is an expiry).
    pub explained_by: Option<Gone>,
}

impl Seen {
    /// A seen order the board serves.
    pub fn served(id: impl Into<String>) -> Self {
        Seen {
            id: id.into(),
            served: true,
            explained_by: None,
        }
    }
}

/// The report of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Problems with the rounds themselves (gaps, rewrites, bad proofs).
    pub history_errors: Vec<String>,
    /// Each seen order id with its status.
    pub orders: Vec<(String, OrderStatus)>,
}

impl Report {
    /// True when the history holds together and no seen order is missing
    /// or withheld.
    pub fn is_clean(&self) -> bool {
        self.history_errors.is_empty()
            && !self
                .orders
                .iter()
                .any(|(_, s)| matches!(s, OrderStatus::Missing | OrderStatus::Withheld { .. }))
    }
}

/// Check a board's published rounds against the orders a taker saw.
pub fn check(mut published: Vec<PublishedRound>, seen: &[Seen]) -> Report {
    published.sort_by_key(|p| p.round.number);
    let mut errors = Vec::new();
    let rounds: Vec<Round> = published.iter().map(|p| p.round.clone()).collect();
    if let Some(first) = rounds.first() {
        if first.number != 0 {
            errors.push(format!("rounds 0 to {} are missing", first.number - 1));
        }
    }
    if let Err(e) = rounds::verify_history(&rounds) {
        errors.push(e.to_string());
    }
    // Attestations that verify, by round number.
    let mut attested: Vec<(u64, String)> = Vec::new();
    for p in &published {
        if let Some(a) = &p.attestation {
            match proof::verify(a) {
                Ok(true) if a.commitment == p.round.commitment => {
                    attested.push((p.round.number, a.txid.clone()))
                }
                _ => errors.push(format!(
                    "round {}: its Mainstay proof does not verify",
                    p.round.number
                )),
            }
        }
    }
    let round_of = |id: &str| {
        rounds
            .iter()
            .find(|r| r.events.iter().any(|e| e == id))
            .map(|r| r.number)
    };
    let orders = seen
        .iter()
        .map(|s| {
            let status = match round_of(&s.id) {
                None => OrderStatus::Missing,
                Some(round) if !s.served => {
                    let notarized = match &s.explained_by {
                        Some(Gone::DeletedByAuthor { deletion: e })
                        | Some(Gone::Replaced { by: e }) => round_of(e).is_some(),
                        Some(Gone::Expired) => true,
                        None => false,
                    };
                    match (&s.explained_by, notarized) {
                        (Some(why), true) => OrderStatus::Gone {
                            round,
                            why: why.clone(),
                        },
                        _ => OrderStatus::Withheld { round },
                    }
                }
                Some(round) => match attested.iter().find(|(n, _)| *n >= round) {
                    Some((_, txid)) => OrderStatus::Attested {
                        round,
                        txid: txid.clone(),
                    },
                    None => OrderStatus::Pending { round },
                },
            };
            (s.id.clone(), status)
        })
        .collect();
    Report {
        history_errors: errors,
        orders,
    }
}
