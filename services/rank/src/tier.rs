//! What boards and takers use: the `stake` tag an order carries, the score
//! and tiers a rank service computes, and the tier attestation it signs.
//!
//! **The `stake` tag.** `["stake", <stake key, x-only hex>, <signature hex>]`.
//! The signature is BIP-340, by the stake key, over
//! `tagged_hash("civkit/stake-order", id')`, where `id'` is the NIP-01 id
//! the event would have without its `stake` tag:
//! `sha256([0, <author pubkey>, <created_at>, <kind>, <tags but "stake">, <content>])`.
//! It binds the author's key, so the author can be an ephemeral key: the
//! stake key vouches for this one event by this one author, and the tag
//! cannot be moved to another event.
//!
//! **The score** of a stake key, from its live certificates (each output
//! `i` with value `v_i` sats and `c_i` confirmations) and, on a board, its
//! orders (`o` published, `s` of them ended `success`):
//!
//! ```text
//! matured   = Σ v_i · min(c_i, maturity) / maturity
//! diversity = (9 + min(n, 10)) / 10            n = outputs counted
//! history   = (2 + o + s) / (2 · (1 + o))      1 with no orders, toward ½ with no successes
//! score     = floor(matured · diversity · history)
//! ```
//!
//! Tier `t` is the number of configured thresholds the score reaches.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::key::XOnlyPublicKey;
use bitcoin::secp256k1::{schnorr, Keypair, Message, Secp256k1};
use nostr::{Event, EventId, Filter, Kind, PublicKey, Tag, Tags, Timestamp};

/// The kind of a stake certificate sent to a rank service (ephemeral:
/// never stored; its content is NIP-44 encrypted to the rank service).
pub const CERTIFICATE_KIND: u16 = 23391;
/// The kind of a tier attestation (addressable by the stake key).
pub const ATTESTATION_KIND: u16 = 30392;

/// The digest a `stake` tag signs.
pub fn stake_digest(
    author: &PublicKey,
    created_at: Timestamp,
    kind: Kind,
    tags: &[Tag],
    content: &str,
) -> [u8; 32] {
    let others: Vec<Tag> = tags
        .iter()
        .filter(|t| t.as_slice().first().map(String::as_str) != Some("stake"))
        .cloned()
        .collect();
    let id = EventId::new(
        author,
        &created_at,
        &kind,
        &Tags::from_list(others),
        content,
    );
    let tag = sha256::Hash::hash(b"civkit/stake-order");
    let mut engine = sha256::Hash::engine();
    engine.input(tag.as_ref());
    engine.input(tag.as_ref());
    engine.input(id.as_bytes());
    sha256::Hash::from_engine(engine).to_byte_array()
}

/// The `stake` tag for an event with these fields, signed by `stake`.
pub fn stake_tag(
    stake: &Keypair,
    author: &PublicKey,
    created_at: Timestamp,
    kind: Kind,
    tags: &[Tag],
    content: &str,
) -> Tag {
    let digest = stake_digest(author, created_at, kind, tags, content);
    let sig = Secp256k1::new().sign_schnorr_no_aux_rand(&Message::from_digest(digest), stake);
    Tag::custom(
        nostr::TagKind::custom("stake"),
        [
            stake.x_only_public_key().0.to_string(),
            hex::encode(sig.as_ref()),
        ],
    )
}

/// One verification context for the process: building one per check
/// costs more than the check.
fn verifier() -> &'static Secp256k1<bitcoin::secp256k1::VerifyOnly> {
    static CONTEXT: std::sync::OnceLock<Secp256k1<bitcoin::secp256k1::VerifyOnly>> =
        std::sync::OnceLock::new();
    CONTEXT.get_or_init(Secp256k1::verification_only)
}

/// The stake key an event carries, checked: `Ok(None)` without a `stake`
/// tag, an error naming the fault for a bad one.
pub fn stake_of(event: &Event) -> Result<Option<XOnlyPublicKey>, String> {
    let mut tags = event
        .tags
        .iter()
        .map(Tag::as_slice)
        .filter(|t| t.first().map(String::as_str) == Some("stake"));
    let Some(tag) = tags.next() else {
        return Ok(None);
    };
    if tags.next().is_some() {
        return Err("more than one `stake` tag".into());
    }
    let (Some(key), Some(sig)) = (tag.get(1), tag.get(2)) else {
        return Err("the `stake` tag is a key and a signature".into());
    };
    let key: XOnlyPublicKey = key
        .parse()
        .map_err(|_| "the `stake` tag's key is not an x-only public key".to_string())?;
    let sig = hex::decode(sig)
        .ok()
        .and_then(|b| schnorr::Signature::from_slice(&b).ok())
        .ok_or_else(|| "the `stake` tag's signature is not 64 bytes of hex".to_string())?;
    let digest = stake_digest(
        &event.pubkey,
        event.created_at,
        event.kind,
        event.tags.as_slice(),
        &event.content,
    );
    verifier()
        .verify_schnorr(&sig, &Message::from_digest(digest), &key)
        .map_err(|_| "the `stake` tag's signature does not verify".to_string())?;
    Ok(Some(key))
}

/// What a score is computed from; an attestation carries all of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScoreInputs {
    /// Total value of the live outputs, sats.
    pub value_sat: u64,
    /// Their value weighted by maturity (see the module documentation).
    pub matured_sat: u64,
    /// Value-weighted mean confirmations.
    pub age_blocks: u64,
    /// Outputs counted.
    pub certificates: u64,
    /// Orders published under the stake key, and how many ended `success`.
    pub orders: u64,
    pub settled: u64,
}

/// One output as the score sees it.
#[derive(Debug, Clone, Copy)]
pub struct Weighed {
    pub value_sat: u64,
    pub confirmations: u64,
}

/// The operator's scoring parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scoring {
    /// Confirmations after which an output counts fully.
    pub maturity_blocks: u64,
    /// Score thresholds of tiers 1, 2, ... (ascending).
    pub tiers: Vec<u64>,
}

impl Scoring {
    /// The inputs from outputs and an order history.
    pub fn inputs(&self, outputs: &[Weighed], orders: u64, settled: u64) -> ScoreInputs {
        let maturity = u128::from(self.maturity_blocks.max(1));
        let value: u128 = outputs.iter().map(|o| u128::from(o.value_sat)).sum();
        let matured: u128 = outputs
            .iter()
            .map(|o| u128::from(o.value_sat) * u128::from(o.confirmations).min(maturity) / maturity)
            .sum();
        let aged: u128 = outputs
            .iter()
            .map(|o| u128::from(o.value_sat) * u128::from(o.confirmations))
            .sum();
        let clamp = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        ScoreInputs {
            value_sat: clamp(value),
            matured_sat: clamp(matured),
            age_blocks: clamp(aged.checked_div(value).unwrap_or(0)),
            certificates: outputs.len() as u64,
            orders,
            settled: settled.min(orders),
        }
    }

    /// The score of `inputs`.
    pub fn score(&self, i: &ScoreInputs) -> u64 {
        let n = u128::from(i.certificates.clamp(1, 10));
        let (o, s) = (u128::from(i.orders), u128::from(i.settled.min(i.orders)));
        let score = u128::from(i.matured_sat) * (9 + n) * (2 + o + s) / (10 * 2 * (1 + o));
        u64::try_from(score).unwrap_or(u64::MAX)
    }

    /// The tier a score reaches.
    pub fn tier(&self, score: u64) -> u8 {
        u8::try_from(self.tiers.iter().filter(|t| score >= **t).count()).unwrap_or(u8::MAX)
    }
}

/// A rank service's signed statement of a stake key's tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    pub stake_key: XOnlyPublicKey,
    pub tier: u8,
    pub score: u64,
    pub inputs: ScoreInputs,
    /// The chain height it was computed at.
    pub height: u64,
    /// Unix time after which it no longer holds (NIP-40 `expiration`).
    pub expires_at: u64,
    /// Opaque ids of the outputs counted ([`output_id`]): a board that
    /// issues credentials per stake sees when two stake keys rest on one
    /// output, without learning the output.
    pub outputs: Vec<String>,
}

/// An output's opaque id at a rank service: the first 16 bytes, hex, of
/// `sha256("civkit-rank/output" ‖ rank secret key ‖ txid (internal byte
/// order) ‖ vout BE)`.
/// Stable for one rank service; unlinkable to the output without its key.
pub fn output_id(rank_secret: &[u8; 32], outpoint: &bitcoin::OutPoint) -> String {
    let mut engine = sha256::Hash::engine();
    engine.input(b"civkit-rank/output");
    engine.input(rank_secret);
    engine.input(outpoint.txid.as_ref());
    engine.input(&outpoint.vout.to_be_bytes());
    hex::encode(&sha256::Hash::from_engine(engine).to_byte_array()[..16])
}

impl Attestation {
    /// The event's tags.
    pub fn tags(&self) -> Vec<Tag> {
        let i = &self.inputs;
        let mut outputs = vec!["outputs".to_string()];
        outputs.extend(self.outputs.iter().cloned());
        let rows: [Vec<String>; 12] = [
            vec!["d".into(), self.stake_key.to_string()],
            vec!["tier".into(), self.tier.to_string()],
            vec!["score".into(), self.score.to_string()],
            vec!["value_sat".into(), i.value_sat.to_string()],
            vec!["matured_sat".into(), i.matured_sat.to_string()],
            vec!["age_blocks".into(), i.age_blocks.to_string()],
            vec!["certificates".into(), i.certificates.to_string()],
            vec!["orders".into(), i.orders.to_string(), i.settled.to_string()],
            vec!["height".into(), self.height.to_string()],
            vec!["expiration".into(), self.expires_at.to_string()],
            outputs,
            vec!["alt".into(), "CivKit tier attestation".into()],
        ];
        rows.into_iter()
            .filter_map(|r| Tag::parse(r).ok())
            .collect()
    }

    /// Read and check an attestation: kind, signer (`rank_key`),
    /// signature, and not expired at `now`.
    pub fn from_event(event: &Event, rank_key: &PublicKey, now: u64) -> Result<Self, String> {
        if event.kind.as_u16() != ATTESTATION_KIND {
            return Err(format!("kind {} is not an attestation", event.kind));
        }
        if event.pubkey != *rank_key {
            return Err("signed by another key than the rank service's".into());
        }
        event
            .verify()
            .map_err(|_| "the attestation's signature does not verify".to_string())?;
        let get = |name: &str, at: usize| {
            event
                .tags
                .iter()
                .map(Tag::as_slice)
                .find(|t| t.first().map(String::as_str) == Some(name))
                .and_then(|t| t.get(at))
                .ok_or_else(|| format!("no `{name}` tag"))
        };
        let num = |name: &str, at: usize| {
            get(name, at)?
                .parse::<u64>()
                .map_err(|_| format!("`{name}` is not a number"))
        };
        let a = Attestation {
            stake_key: get("d", 1)?
                .parse()
                .map_err(|_| "`d` is not a stake key".to_string())?,
            tier: u8::try_from(num("tier", 1)?).map_err(|_| "`tier` is too large".to_string())?,
            score: num("score", 1)?,
            inputs: ScoreInputs {
                value_sat: num("value_sat", 1)?,
                matured_sat: num("matured_sat", 1)?,
                age_blocks: num("age_blocks", 1)?,
                certificates: num("certificates", 1)?,
                orders: num("orders", 1)?,
                settled: num("orders", 2)?,
            },
            height: num("height", 1)?,
            expires_at: num("expiration", 1)?,
            outputs: event
                .tags
                .iter()
                .map(Tag::as_slice)
                .find(|t| t.first().map(String::as_str) == Some("outputs"))
                .map(|t| t[1..].to_vec())
                .unwrap_or_default(),
        };
        if a.expires_at <= now {
            return Err("the attestation expired".into());
        }
        Ok(a)
    }

    /// The newest valid attestation by `rank_key` for `stake` among `events`.
    pub fn newest(
        events: &[Event],
        rank_key: &PublicKey,
        stake: &XOnlyPublicKey,
        now: u64,
    ) -> Option<Attestation> {
        events
            .iter()
            .filter_map(|e| {
                Some((
                    e.created_at,
                    Attestation::from_event(e, rank_key, now).ok()?,
                ))
            })
            .filter(|(_, a)| a.stake_key == *stake)
            .max_by_key(|(at, _)| *at)
            .map(|(_, a)| a)
    }

    /// The filter that finds a stake key's attestation by `rank_key`.
    pub fn filter(rank_key: &PublicKey, stake_key: &XOnlyPublicKey) -> Filter {
        Filter::new()
            .kind(Kind::from(ATTESTATION_KIND))
            .author(*rank_key)
            .identifier(stake_key.to_string())
    }
}

/// A small bounded cache of looked-up attestations (`None`: none found).
pub struct TierCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<XOnlyPublicKey, (Instant, Option<Attestation>)>>,
}

impl TierCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TierCache {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<XOnlyPublicKey, (Instant, Option<Attestation>)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh entry, if any.
    pub fn get(&self, key: &XOnlyPublicKey) -> Option<Option<Attestation>> {
        let entries = self.entries();
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, a)| a.clone())
    }

    /// Remember an answer; when full, stale entries go first, then all.
    pub fn put(&self, key: XOnlyPublicKey, answer: Option<Attestation>) {
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), answer));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_score_weighs_value_age_diversity_and_history() {
        let scoring = Scoring {
            maturity_blocks: 100,
            tiers: vec![100_000, 1_000_000],
        };
        let out = |value_sat, confirmations| Weighed {
            value_sat,
            confirmations,
        };
        // Half matured: half the value counts.
        let i = scoring.inputs(&[out(1_000_000, 50)], 0, 0);
        assert_eq!((i.matured_sat, i.age_blocks), (500_000, 50));
        assert_eq!(scoring.score(&i), 500_000);
        assert_eq!(scoring.tier(scoring.score(&i)), 1);
        // Two outputs: a tenth more.
        let i = scoring.inputs(&[out(500_000, 100), out(500_000, 300)], 0, 0);
        assert_eq!(i.age_blocks, 200);
        assert_eq!(scoring.score(&i), 1_100_000);
        assert_eq!(scoring.tier(scoring.score(&i)), 2);
        // Orders that never settle pull the score toward half.
        let idle = scoring.inputs(&[out(1_000_000, 100)], 9, 0);
        assert_eq!(scoring.score(&idle), 1_000_000 * 11 / 20);
        let good = scoring.inputs(&[out(1_000_000, 100)], 9, 9);
        assert_eq!(scoring.score(&good), 1_000_000);
        // Settled orders never exceed published ones; nothing overflows.
        let odd = scoring.inputs(&[out(u64::MAX, u64::MAX), out(u64::MAX, 1)], 1, 7);
        assert_eq!(odd.settled, 1);
        assert!(scoring.score(&odd) > 0);
        assert_eq!(scoring.tier(0), 0);
    }
}
