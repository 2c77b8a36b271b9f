//! The credential scheme: blind Diffie-Hellman tokens (Cashu NUT-00) with
//! DLEQ proofs (NUT-12), per-epoch keys, and redemption bound to an event.
//!
//! - The board's key for epoch `n` is `k_n = sha256("civkit-credentials/epoch" || master || n)`.
//! - A credential's secret is the x-only hex of a fresh "spend key" `P`
//!   chosen by the maker; the board signs `B_ = hash_to_curve(secret) + r·G`
//!   blindly, the maker unblinds `C = C_ - r·K_n`.
//! - To spend, the order carries `["credential", n, P, C, sig]` where `sig`
//!   is `P`'s BIP-340 signature over [`binding_message`]: the author, kind,
//!   `created_at` and `d` of the order. Someone who copies a credential from
//!   an order cannot spend it on an event of their own.

use std::str::FromStr;

use cashu::dhke::{blind_message, hash_to_curve, sign_message, unblind_message};
use cashu::nuts::nut00::BlindSignature;
use cashu::nuts::{Id, PublicKey, SecretKey};
use cashu::Amount;
use nostr::hashes::{sha256, Hash};
use nostr::Event;

use crate::error::{answer, crypto, Result};

/// A credential as a maker holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credential {
    pub epoch: u64,
    /// Secret key of the spend key `P` (hex).
    pub spend_secret: String,
    /// Unblinded signature `C` (hex).
    pub signature: String,
}

/// Why a presented credential is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Malformed(String),
    Forged,
    WrongBinding,
    Expired(u64),
}

/// The board's secret for epoch `epoch`.
pub fn epoch_key(master: &[u8; 32], epoch: u64) -> SecretKey {
    let mut data = b"civkit-credentials/epoch".to_vec();
    data.extend_from_slice(master);
    data.extend_from_slice(&epoch.to_be_bytes());
    let digest = sha256::Hash::hash(&data);
    // A sha256 output is a valid secret key except with negligible probability.
    SecretKey::from_slice(digest.as_byte_array()).unwrap_or_else(|_| SecretKey::generate())
}

fn keyset_id(pubkey: &PublicKey) -> Id {
    let digest = sha256::Hash::hash(&pubkey.to_bytes());
    let mut bytes = [0u8; 8];
    bytes[1..].copy_from_slice(&digest.as_byte_array()[..7]);
    Id::from_str(&hex::encode(bytes))
        .unwrap_or_else(|_| Id::from_str("0000000000000000").expect("a valid id"))
}

/// Board side: sign one blinded message, with a DLEQ proof. Returns `C_`, `e`, `s` (hex).
pub fn issue(key: &SecretKey, blinded: &PublicKey) -> Result<(String, String, String)> {
    let c = sign_message(key, blinded).map_err(crypto)?;
    let sig = BlindSignature::new(
        Amount::from(1),
        c,
        keyset_id(&key.public_key()),
        blinded,
        key,
    )
    .map_err(crypto)?;
    let dleq = sig.dleq.ok_or_else(|| crypto("no DLEQ proof"))?;
    Ok((c.to_hex(), dleq.e.to_secret_hex(), dleq.s.to_secret_hex()))
}

/// Maker side: a fresh spend key and its blinded message. Returns (spend secret, blinding factor, `B_`).
pub fn blind() -> Result<(SecretKey, SecretKey, PublicKey)> {
    let spend = SecretKey::generate();
    let secret = spend_secret_message(&spend.public_key());
    let (b, r) = blind_message(secret.as_bytes(), None).map_err(crypto)?;
    Ok((spend, r, b))
}

/// Maker side: check the board's DLEQ proof against its announced key, then unblind.
pub fn unblind(
    board_key: &PublicKey,
    blinded: &PublicKey,
    r: &SecretKey,
    c_blinded: &str,
    e: &str,
    s: &str,
) -> Result<PublicKey> {
    let c = PublicKey::from_hex(c_blinded).map_err(crypto)?;
    let dleq = cashu::nuts::BlindSignatureDleq {
        e: SecretKey::from_hex(e).map_err(crypto)?,
        s: SecretKey::from_hex(s).map_err(crypto)?,
    };
    let sig = BlindSignature {
        amount: Amount::from(1),
        keyset_id: keyset_id(board_key),
        c,
        dleq: Some(dleq),
    };
    sig.verify_dleq(*board_key, *blinded)
        .map_err(|_| answer("the board's DLEQ proof does not verify against its announced key"))?;
    unblind_message(&c, r, board_key).map_err(crypto)
}

/// The message whose curve point the board signs: the spend key, x-only hex.
fn spend_secret_message(spend: &PublicKey) -> String {
    hex::encode(spent_id(spend))
}

/// What identifies a credential in the spent set: the spend key's x-only
/// bytes, which is what the board signed. Both parities of one x are the
/// same credential.
pub fn spent_id(spend: &PublicKey) -> [u8; 32] {
    let mut x = [0u8; 32];
    x.copy_from_slice(&spend.to_bytes()[1..]);
    x
}

/// What a spend signature commits to: author, kind, `created_at`, `d`.
pub fn binding_message(event: &Event) -> Vec<u8> {
    binding_for(
        &event.pubkey,
        event.kind.as_u16(),
        event.created_at.as_secs(),
        civkit_framework::kinds::tag_value(event, "d").unwrap_or(""),
    )
}

/// [`binding_message`] from the fields, before the event is signed.
pub fn binding_for(author: &nostr::PublicKey, kind: u16, created_at: u64, d: &str) -> Vec<u8> {
    let mut m = b"civkit-credential/v1".to_vec();
    m.extend_from_slice(&author.to_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&created_at.to_be_bytes());
    m.extend_from_slice(d.as_bytes());
    m
}

/// Maker side: the tag that spends `cred` on `event` (whose tags must not
/// yet include it; the binding does not cover tags).
pub fn spend_tag(cred: &Credential, event_binding: &[u8]) -> Result<Vec<String>> {
    let spend = SecretKey::from_hex(&cred.spend_secret).map_err(crypto)?;
    let sig = spend.sign(event_binding).map_err(crypto)?;
    Ok(vec![
        "credential".into(),
        cred.epoch.to_string(),
        spend.public_key().to_hex(),
        cred.signature.clone(),
        sig.to_string(),
    ])
}

/// A credential presented in an event tag, parsed.
#[derive(Debug, Clone)]
pub struct Presented {
    pub epoch: u64,
    pub spend_key: PublicKey,
    pub signature: PublicKey,
    pub binding_sig: String,
}

/// Parse `["credential", epoch, P, C, sig]`.
pub fn parse_tag(values: &[String]) -> Result<Presented, Refusal> {
    let [_, epoch, p, c, sig] = values else {
        return Err(Refusal::Malformed(
            "a credential tag has epoch, key, signature and binding".into(),
        ));
    };
    Ok(Presented {
        epoch: epoch
            .parse()
            .map_err(|_| Refusal::Malformed("epoch is not a number".into()))?,
        spend_key: PublicKey::from_hex(p)
            .map_err(|_| Refusal::Malformed("bad spend key".into()))?,
        signature: PublicKey::from_hex(c)
            .map_err(|_| Refusal::Malformed("bad signature point".into()))?,
        binding_sig: sig.clone(),
    })
}

/// Board side: check a presented credential with the epoch key and the event binding.
pub fn verify(key: &SecretKey, p: &Presented, binding: &[u8]) -> Result<(), Refusal> {
    let secret = spend_secret_message(&p.spend_key);
    let y = hash_to_curve(secret.as_bytes()).map_err(|_| Refusal::Forged)?;
    let expected = sign_message(key, &y).map_err(|_| Refusal::Forged)?;
    if expected != p.signature {
        return Err(Refusal::Forged);
    }
    let sig = nostr::secp256k1::schnorr::Signature::from_str(&p.binding_sig)
        .map_err(|_| Refusal::WrongBinding)?;
    p.spend_key
        .verify(binding, &sig)
        .map_err(|_| Refusal::WrongBinding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_unblind_verify_round_trip_and_forgery() {
        let master = [7u8; 32];
        let k = epoch_key(&master, 3);
        let (spend, r, b) = blind().unwrap();
        let (c_, e, s) = issue(&k, &b).unwrap();
        let c = unblind(&k.public_key(), &b, &r, &c_, &e, &s).unwrap();
        let cred = Credential {
            epoch: 3,
            spend_secret: spend.to_secret_hex(),
            signature: c.to_hex(),
        };
        let binding = b"event binding".to_vec();
        let tag = spend_tag(&cred, &binding).unwrap();
        let p = parse_tag(&tag).unwrap();
        assert_eq!(verify(&k, &p, &binding), Ok(()));
        assert_eq!(verify(&k, &p, b"another event"), Err(Refusal::WrongBinding));
        assert_eq!(
            verify(&epoch_key(&master, 4), &p, &binding),
            Err(Refusal::Forged)
        );
        // A DLEQ proof made with another key does not verify against the announced key.
        let other = epoch_key(&master, 9);
        let (c2, e2, s2) = issue(&other, &b).unwrap();
        assert!(unblind(&k.public_key(), &b, &r, &c2, &e2, &s2).is_err());
    }
}
