//! Stake certificates in general: what every kind shares (the statement's
//! checks, what a certificate weighs, why one is refused), the
//! [`StakeVerifier`] trait a certificate kind implements, and the two kinds
//! civkit reads: Lightning channels ([`crate::channel`]) and UTXOs shown
//! with a BIP-322 proof of funds ([`UtxoCertificate`]).
//!
//! A new kind of ownership proof (for example a zero-knowledge proof that
//! a key is in a set of taproot outputs, such as aut-ct's curve trees)
//! plugs in as one more [`StakeVerifier`]: the rank service hands it the
//! certificate's JSON and the statement, and counts what it returns. A
//! verifier that runs as a separate process implements the trait by
//! calling it.

use std::str::FromStr;

use async_trait::async_trait;
use bitcoin::key::XOnlyPublicKey;
use bitcoin::{Amount, Network, OutPoint};
use civkit_chain::ChainSource;
use serde_json::Value;

use crate::bip322::{self, Bip322Error, Format};
use crate::channel::ChannelCertificate;
use crate::statement::StakeStatement;

/// Why a certificate does not count.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("malformed certificate: {0}")]
    Malformed(String),
    #[error("the channel announcement does not verify: {0}")]
    Announcement(String),
    #[error("the statement names another rank service")]
    OtherRankService,
    #[error("the certificate is for another network")]
    OtherNetwork,
    #[error("the statement expired at height {expiry} (the tip is {tip})")]
    Expired { expiry: u32, tip: u64 },
    #[error("the funding key's signature over the statement does not verify")]
    StatementSignature,
    #[error("the proof of funds does not verify: {0}")]
    ProofOfFunds(String),
    #[error("this rank service cannot check it: {0}")]
    Unsupported(String),
    #[error("the short channel id points at nothing on the chain: {0}")]
    NotOnChain(String),
    #[error("the output at the short channel id is not the 2-of-2 of the announced funding keys")]
    NotFunding,
    #[error("output {0} is not the chain's: its script or value differ")]
    NotTheChains(OutPoint),
    #[error("output {0} is unconfirmed")]
    Unconfirmed(OutPoint),
    #[error("the output is spent (or never existed)")]
    Spent,
    #[error(transparent)]
    Chain(civkit_chain::Error),
}

/// One output a verified certificate weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stake {
    /// The output: the certificate counts while it is unspent.
    pub outpoint: OutPoint,
    pub value: Amount,
    /// The height of the block that confirmed it.
    pub confirmed_at: u64,
}

impl Stake {
    /// Its confirmations when the tip is at `tip`.
    pub fn confirmations(&self, tip: u64) -> u64 {
        (tip + 1).saturating_sub(self.confirmed_at)
    }
}

/// The checks every certificate's statement passes: it names this rank
/// service and network, and has not expired. Returns the chain's tip.
pub async fn check_statement(
    statement: &StakeStatement,
    rank_key: &XOnlyPublicKey,
    network: Network,
    chain: &dyn ChainSource,
) -> Result<u64, Refusal> {
    if statement.rank_key != *rank_key {
        return Err(Refusal::OtherRankService);
    }
    if statement.network != network {
        return Err(Refusal::OtherNetwork);
    }
    let tip = chain.tip_height().await.map_err(Refusal::Chain)?;
    if u64::from(statement.expiry_height) <= tip {
        return Err(Refusal::Expired {
            expiry: statement.expiry_height,
            tip,
        });
    }
    Ok(tip)
}

/// What a verifier checks against.
pub struct VerifyContext<'a> {
    pub rank_key: XOnlyPublicKey,
    pub network: Network,
    pub chain: &'a dyn ChainSource,
}

/// A kind of stake certificate.
#[async_trait]
pub trait StakeVerifier: Send + Sync {
    /// The certificate's `type` in its JSON.
    fn kind(&self) -> &'static str;
    /// Check `certificate` (its JSON object) for `statement`; what it weighs.
    async fn verify(
        &self,
        certificate: &Value,
        statement: &StakeStatement,
        cx: &VerifyContext<'_>,
    ) -> Result<Vec<Stake>, Refusal>;
}

fn field<'a>(certificate: &'a Value, name: &str) -> Result<&'a str, Refusal> {
    certificate[name]
        .as_str()
        .ok_or_else(|| Refusal::Malformed(format!("`{name}` is missing or not a string")))
}

/// `{"type":"channel","announcement":<hex>,"side":1|2,"signature":<DER hex>}`.
pub struct ChannelVerifier;

#[async_trait]
impl StakeVerifier for ChannelVerifier {
    fn kind(&self) -> &'static str {
        "channel"
    }
    async fn verify(
        &self,
        certificate: &Value,
        statement: &StakeStatement,
        cx: &VerifyContext<'_>,
    ) -> Result<Vec<Stake>, Refusal> {
        let side = certificate["side"]
            .as_u64()
            .and_then(|s| u8::try_from(s).ok())
            .ok_or_else(|| Refusal::Malformed("`side` is 1 or 2".into()))?;
        let c = ChannelCertificate::parse(
            field(certificate, "announcement")?,
            side,
            field(certificate, "signature")?,
        )?;
        Ok(vec![
            c.verify(statement, &cx.rank_key, cx.network, cx.chain)
                .await?,
        ])
    }
}

/// Most outputs one UTXO certificate may show: each costs chain lookups.
pub const MAX_UTXOS: usize = 32;

/// A UTXO certificate: a BIP-322 proof of funds (`pof`) by `address` over
/// the statement's hex; the proof's extra inputs are the outputs it weighs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtxoCertificate {
    pub address: String,
    pub signature: String,
}

impl UtxoCertificate {
    /// The message a UTXO certificate signs: the statement's bytes as
    /// lowercase hex, so that any wallet can sign it as text.
    pub fn message(statement: &StakeStatement) -> String {
        hex::encode(statement.to_bytes())
    }

    /// Check the certificate for `statement` against the chain.
    pub async fn verify(
        &self,
        statement: &StakeStatement,
        rank_key: &XOnlyPublicKey,
        network: Network,
        chain: &dyn ChainSource,
    ) -> Result<Vec<Stake>, Refusal> {
        let address = bitcoin::Address::from_str(&self.address)
            .map_err(|e| Refusal::Malformed(format!("address: {e}")))?
            .require_network(network)
            .map_err(|_| Refusal::OtherNetwork)?;
        let proof = bip322::verify(
            &address.script_pubkey(),
            Self::message(statement).as_bytes(),
            &self.signature,
        )
        .map_err(|e| match e {
            Bip322Error::Inconclusive(m) => Refusal::Unsupported(m),
            e => Refusal::ProofOfFunds(e.to_string()),
        })?;
        if proof.format != Format::ProofOfFunds || proof.funds.is_empty() {
            return Err(Refusal::Malformed(
                "a UTXO certificate is a proof of funds (`pof`) with at least one output".into(),
            ));
        }
        if proof.funds.len() > MAX_UTXOS {
            return Err(Refusal::Malformed(format!(
                "at most {MAX_UTXOS} outputs per certificate"
            )));
        }
        let tip = check_statement(statement, rank_key, network, chain).await?;
        let mut stakes = Vec::with_capacity(proof.funds.len());
        for (outpoint, claimed) in proof.funds {
            let out = chain
                .unspent_output(&outpoint)
                .await
                .map_err(Refusal::Chain)?
                .ok_or(Refusal::Spent)?;
            if out != claimed {
                return Err(Refusal::NotTheChains(outpoint));
            }
            let confirmations = chain
                .confirmations(&outpoint.txid)
                .await
                .map_err(Refusal::Chain)?;
            if confirmations == 0 {
                return Err(Refusal::Unconfirmed(outpoint));
            }
            stakes.push(Stake {
                outpoint,
                value: out.value,
                confirmed_at: (tip + 1).saturating_sub(confirmations),
            });
        }
        Ok(stakes)
    }
}

/// `{"type":"utxo","address":<address>,"signature":"pof..."}`.
pub struct UtxoVerifier;

#[async_trait]
impl StakeVerifier for UtxoVerifier {
    fn kind(&self) -> &'static str {
        "utxo"
    }
    async fn verify(
        &self,
        certificate: &Value,
        statement: &StakeStatement,
        cx: &VerifyContext<'_>,
    ) -> Result<Vec<Stake>, Refusal> {
        UtxoCertificate {
            address: field(certificate, "address")?.to_string(),
            signature: field(certificate, "signature")?.to_string(),
        }
        .verify(statement, &cx.rank_key, cx.network, cx.chain)
        .await
    }
}

/// A channel certificate's JSON: the announcement (hex, without the
/// message type), the side, and that side's funding key's signature over
/// the statement.
pub fn channel_certificate(
    announcement_hex: &str,
    side: u8,
    funding_key: &bitcoin::secp256k1::SecretKey,
    statement: &StakeStatement,
) -> Value {
    let secp = bitcoin::secp256k1::Secp256k1::signing_only();
    let sig = secp.sign_ecdsa(
        &bitcoin::secp256k1::Message::from_digest(statement.digest()),
        funding_key,
    );
    serde_json::json!({
        "type": "channel",
        "announcement": announcement_hex,
        "side": side,
        "signature": hex::encode(sig.serialize_der()),
    })
}

/// A UTXO certificate's JSON.
pub fn utxo_certificate(certificate: &UtxoCertificate) -> Value {
    serde_json::json!({
        "type": "utxo",
        "address": certificate.address,
        "signature": certificate.signature,
    })
}

/// The event that hands a certificate to the rank service `rank`: kind
/// [`crate::tier::CERTIFICATE_KIND`], signed by the stake key, its content
/// the certificate with its statement, NIP-44 encrypted to the rank service.
pub fn certificate_event(
    stake: &nostr::Keys,
    rank: &nostr::PublicKey,
    statement: &StakeStatement,
    mut certificate: Value,
) -> Result<nostr::Event, String> {
    certificate["statement"] = Value::String(hex::encode(statement.to_bytes()));
    let content = nostr::nips::nip44::encrypt(
        stake.secret_key(),
        rank,
        certificate.to_string(),
        nostr::nips::nip44::Version::V2,
    )
    .map_err(|e| e.to_string())?;
    nostr::EventBuilder::new(nostr::Kind::from(crate::tier::CERTIFICATE_KIND), content)
        .tag(nostr::Tag::public_key(*rank))
        .sign_with_keys(stake)
        .map_err(|e| e.to_string())
}
