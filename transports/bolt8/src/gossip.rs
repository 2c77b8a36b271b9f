//! The staking-credentials gossip extension (civkit/staking-credentials-spec,
//! `64-gossips-extensions.md`, version 0.0.1): a board's `credential_policy`
//! (type 37563) and `service_policy` (type 37564), signed by its Lightning
//! node key, sent to its BOLT8 peers and relayed by them.
//!
//! Where the spec is silent or inconsistent, this is what civkit does (also
//! in `docs/PROTOCOL.md`):
//! - Both messages carry the origin's `node_id` (33 bytes) right after the
//!   signature: the spec signs "with the key given by `node_id`" but lists
//!   no such field, and a relayed message must name its origin.
//! - `credential_policy` lists a third `u16 flen` with no list after it;
//!   it is left out.
//! - Feature lists are BOLT9-style bitfields, big-endian (bit 0 is the low
//!   bit of the last byte); civkit sets odd ("supported") bits.
//! - `serviceids` are the Nostr event kinds served against credentials, as
//!   big-endian `u16`s; `pubkeys` are 33-byte compressed keys.
//! - Peers that want the gossip say so with the optional init feature bit
//!   [`GOSSIP_FEATURE_BIT`]; 37564 is even, and a peer that does not know
//!   it would have to disconnect, so only those peers get the messages.

use std::collections::HashMap;

use lightning::bitcoin::hashes::{sha256d, Hash};
use lightning::bitcoin::secp256k1::{ecdsa, Message, PublicKey, Secp256k1, SecretKey};

/// Message type of `credential_policy`.
pub const CREDENTIAL_POLICY: u16 = 37563;
/// Message type of `service_policy`.
pub const SERVICE_POLICY: u16 = 37564;
/// Optional init feature bit: "send me credential and service policies".
pub const GOSSIP_FEATURE_BIT: usize = 729;
/// Largest policy message body accepted.
pub const MAX_POLICY_BYTES: usize = 4096;

/// `assetproof_features` bits (odd: supported).
pub mod assets {
    /// Lightning payment of an invoice.
    pub const LIGHTNING_PAYMENT: usize = 1;
    /// A Lightning channel stake certificate.
    pub const CHANNEL_STAKE: usize = 3;
    /// A UTXO stake certificate (BIP-322 proof of funds).
    pub const UTXO_STAKE: usize = 5;
}

/// `credentials_features` bits (odd: supported).
pub mod credentials {
    /// Blind Diffie-Hellman tokens over secp256k1 with DLEQ proofs (Cashu NUT-00, NUT-12).
    pub const BLIND_DH: usize = 1;
}

/// A BOLT9-style bitfield with `bits` set, shortest big-endian form.
pub fn bitfield(bits: &[usize]) -> Vec<u8> {
    let len = bits.iter().max().map_or(0, |b| b / 8 + 1);
    let mut out = vec![0u8; len];
    for b in bits {
        out[len - 1 - b / 8] |= 1 << (b % 8);
    }
    out
}

/// The bits set in a BOLT9-style bitfield.
pub fn bits_of(field: &[u8]) -> Vec<usize> {
    let len = field.len();
    (0..len * 8)
        .filter(|b| field[len - 1 - b / 8] & (1 << (b % 8)) != 0)
        .collect()
}

/// What the two messages say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    Credential {
        issuance_pubkey: PublicKey,
        assetproof_features: Vec<u8>,
        credentials_features: Vec<u8>,
        asset_to_credential: u32,
    },
    Service {
        pubkeys: Vec<PublicKey>,
        service_ids: Vec<u16>,
        credentials_to_service: u32,
    },
}

/// A signed policy message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPolicy {
    pub signature: ecdsa::Signature,
    pub node_id: PublicKey,
    pub timestamp: u32,
    pub policy: Policy,
    pub expiration_height: u32,
}

/// Why a policy message is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("the signature does not verify")]
    Signature,
    #[error("expired at height {0}")]
    Expired(u32),
    #[error("not newer than the one held")]
    Duplicate,
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], Dropped> {
    if b.len() < n {
        return Err(Dropped::Malformed("short".into()));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}
fn u16_of(b: &mut &[u8]) -> Result<u16, Dropped> {
    Ok(u16::from_be_bytes(
        take(b, 2)?
            .try_into()
            .map_err(|_| Dropped::Malformed("u16".into()))?,
    ))
}
fn u32_of(b: &mut &[u8]) -> Result<u32, Dropped> {
    Ok(u32::from_be_bytes(
        take(b, 4)?
            .try_into()
            .map_err(|_| Dropped::Malformed("u32".into()))?,
    ))
}
fn point(b: &mut &[u8]) -> Result<PublicKey, Dropped> {
    PublicKey::from_slice(take(b, 33)?).map_err(|_| Dropped::Malformed("not a point".into()))
}
fn len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..bytes.len().min(usize::from(u16::MAX))]);
}

impl SignedPolicy {
    /// The message type.
    pub fn type_id(&self) -> u16 {
        match self.policy {
            Policy::Credential { .. } => CREDENTIAL_POLICY,
            Policy::Service { .. } => SERVICE_POLICY,
        }
    }

    /// Everything after the signature: what it signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = self.node_id.serialize().to_vec();
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        match &self.policy {
            Policy::Credential {
                issuance_pubkey,
                assetproof_features,
                credentials_features,
                asset_to_credential,
            } => {
                // The spec's order: flen, issuance_pubkey, then the list.
                let n = assetproof_features.len().min(usize::from(u16::MAX));
                out.extend_from_slice(&(n as u16).to_be_bytes());
                out.extend_from_slice(&issuance_pubkey.serialize());
                out.extend_from_slice(&assetproof_features[..n]);
                len_prefixed(&mut out, credentials_features);
                out.extend_from_slice(&asset_to_credential.to_be_bytes());
            }
            Policy::Service {
                pubkeys,
                service_ids,
                credentials_to_service,
            } => {
                let keys: Vec<u8> = pubkeys.iter().flat_map(|k| k.serialize()).collect();
                len_prefixed(&mut out, &keys);
                let ids: Vec<u8> = service_ids.iter().flat_map(|k| k.to_be_bytes()).collect();
                len_prefixed(&mut out, &ids);
                out.extend_from_slice(&credentials_to_service.to_be_bytes());
            }
        }
        out.extend_from_slice(&self.expiration_height.to_be_bytes());
        out
    }

    /// The message body (after the 2-byte type).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signature.serialize_compact().to_vec();
        out.extend(self.signed_bytes());
        out
    }

    /// Read a body of type `msg_type`; the signature is not checked here.
    pub fn decode(msg_type: u16, body: &[u8]) -> Result<Self, Dropped> {
        if body.len() > MAX_POLICY_BYTES {
            return Err(Dropped::Malformed("too long".into()));
        }
        let mut b = body;
        let signature = ecdsa::Signature::from_compact(take(&mut b, 64)?)
            .map_err(|_| Dropped::Malformed("signature".into()))?;
        let node_id = point(&mut b)?;
        let timestamp = u32_of(&mut b)?;
        let policy = match msg_type {
            CREDENTIAL_POLICY => {
                let n = usize::from(u16_of(&mut b)?);
                let issuance_pubkey = point(&mut b)?;
                let assetproof_features = take(&mut b, n)?.to_vec();
                let m = usize::from(u16_of(&mut b)?);
                let credentials_features = take(&mut b, m)?.to_vec();
                Policy::Credential {
                    issuance_pubkey,
                    assetproof_features,
                    credentials_features,
                    asset_to_credential: u32_of(&mut b)?,
                }
            }
            SERVICE_POLICY => {
                let n = usize::from(u16_of(&mut b)?);
                let keys = take(&mut b, n)?;
                if n % 33 != 0 {
                    return Err(Dropped::Malformed("pubkeys are 33 bytes each".into()));
                }
                let pubkeys = keys
                    .chunks(33)
                    .map(PublicKey::from_slice)
                    .collect::<Result<_, _>>()
                    .map_err(|_| Dropped::Malformed("a pubkey is not a point".into()))?;
                let m = usize::from(u16_of(&mut b)?);
                let ids = take(&mut b, m)?;
                if m % 2 != 0 {
                    return Err(Dropped::Malformed("service ids are 2 bytes each".into()));
                }
                Policy::Service {
                    pubkeys,
                    service_ids: ids
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                    credentials_to_service: u32_of(&mut b)?,
                }
            }
            other => return Err(Dropped::Malformed(format!("type {other}"))),
        };
        let expiration_height = u32_of(&mut b)?;
        if !b.is_empty() {
            return Err(Dropped::Malformed("trailing bytes".into()));
        }
        Ok(SignedPolicy {
            signature,
            node_id,
            timestamp,
            policy,
            expiration_height,
        })
    }

    /// Sign `policy` with the node key `secret`.
    pub fn sign(
        secret: &SecretKey,
        timestamp: u32,
        policy: Policy,
        expiration_height: u32,
    ) -> Self {
        let secp = Secp256k1::new();
        let mut m = SignedPolicy {
            signature: ecdsa::Signature::from_compact(&[1u8; 64])
                .unwrap_or_else(|_| unreachable!("a valid compact encoding")),
            node_id: secret.public_key(&secp),
            timestamp,
            policy,
            expiration_height,
        };
        m.signature = secp.sign_ecdsa(&Self::digest(&m.signed_bytes()), secret);
        m
    }

    fn digest(bytes: &[u8]) -> Message {
        Message::from_digest(sha256d::Hash::hash(bytes).to_byte_array())
    }

    /// The signature, by `node_id`, over the double SHA-256 of the rest.
    pub fn verify(&self) -> Result<(), Dropped> {
        Secp256k1::verification_only()
            .verify_ecdsa(
                &Self::digest(&self.signed_bytes()),
                &self.signature,
                &self.node_id,
            )
            .map_err(|_| Dropped::Signature)
    }
}

/// The policies known, newest per (origin, type), bounded.
#[derive(Debug)]
pub struct PolicyTable {
    known: HashMap<(PublicKey, u16), SignedPolicy>,
    capacity: usize,
}

impl PolicyTable {
    pub fn new(capacity: usize) -> Self {
        PolicyTable {
            known: HashMap::new(),
            capacity: capacity.max(2),
        }
    }

    /// Take `m` if it verifies, is not expired at `tip`, and is newer than
    /// what is held for its origin and type. When full, expired entries go
    /// first; a new origin is refused if none did.
    pub fn offer(&mut self, m: SignedPolicy, tip: u64) -> Result<(), Dropped> {
        if u64::from(m.expiration_height) <= tip {
            return Err(Dropped::Expired(m.expiration_height));
        }
        m.verify()?;
        let key = (m.node_id, m.type_id());
        if let Some(held) = self.known.get(&key) {
            if held.timestamp >= m.timestamp {
                return Err(Dropped::Duplicate);
            }
        } else if self.known.len() >= self.capacity {
            self.known
                .retain(|_, p| u64::from(p.expiration_height) > tip);
            if self.known.len() >= self.capacity {
                return Err(Dropped::Malformed("the policy table is full".into()));
            }
        }
        self.known.insert(key, m);
        Ok(())
    }

    /// Every policy still valid at `tip`.
    pub fn valid(&self, tip: u64) -> Vec<SignedPolicy> {
        let mut all: Vec<_> = self
            .known
            .values()
            .filter(|p| u64::from(p.expiration_height) > tip)
            .cloned()
            .collect();
        all.sort_by_key(|p| (p.node_id.serialize(), p.type_id()));
        all
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_slice(&[b; 32]).unwrap()
    }

    #[test]
    fn encode_decode_verify_and_every_tamper_fails() {
        let secp = Secp256k1::new();
        let policies = [
            Policy::Credential {
                issuance_pubkey: key(2).public_key(&secp),
                assetproof_features: bitfield(&[assets::LIGHTNING_PAYMENT, assets::UTXO_STAKE]),
                credentials_features: bitfield(&[credentials::BLIND_DH]),
                asset_to_credential: 1000,
            },
            Policy::Service {
                pubkeys: vec![key(2).public_key(&secp), key(3).public_key(&secp)],
                service_ids: vec![38383, 1],
                credentials_to_service: 1,
            },
        ];
        for p in policies {
            let m = SignedPolicy::sign(&key(1), 1_700_000_000, p, 900);
            let bytes = m.encode();
            let back = SignedPolicy::decode(m.type_id(), &bytes).unwrap();
            assert_eq!(back, m);
            back.verify().unwrap();
            for i in 64..bytes.len() {
                let mut t = bytes.clone();
                t[i] ^= 1;
                if let Ok(x) = SignedPolicy::decode(m.type_id(), &t) {
                    assert!(x.verify().is_err(), "byte {i}");
                }
            }
            assert!(SignedPolicy::decode(m.type_id(), &bytes[..bytes.len() - 1]).is_err());
            let mut long = bytes.clone();
            long.push(0);
            assert!(SignedPolicy::decode(m.type_id(), &long).is_err());
        }
        assert_eq!(bits_of(&bitfield(&[1, 5, 729])), vec![1, 5, 729]);
    }

    #[test]
    fn the_table_keeps_the_newest_valid_one() {
        let secp = Secp256k1::new();
        let p = |t| {
            SignedPolicy::sign(
                &key(1),
                t,
                Policy::Service {
                    pubkeys: vec![key(2).public_key(&secp)],
                    service_ids: vec![38383],
                    credentials_to_service: 1,
                },
                100,
            )
        };
        let mut table = PolicyTable::new(2);
        table.offer(p(10), 50).unwrap();
        assert_eq!(table.offer(p(10), 50), Err(Dropped::Duplicate));
        assert_eq!(table.offer(p(9), 50), Err(Dropped::Duplicate));
        table.offer(p(11), 50).unwrap();
        assert_eq!(table.offer(p(12), 100), Err(Dropped::Expired(100)));
        let mut forged = p(13);
        forged.timestamp = 14;
        assert_eq!(table.offer(forged, 50), Err(Dropped::Signature));
        assert_eq!(table.valid(50).len(), 1);
        assert!(table.valid(100).is_empty());
    }
}
