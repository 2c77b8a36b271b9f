//! The Lightning channel stake certificate.
//!
//! The maker presents:
//! - the channel's BOLT7 `channel_announcement` (its wire encoding, without
//!   the message type), whose four signatures are checked with LDK's
//!   `verify_channel_announcement`;
//! - which side of the channel is theirs (1 or 2, as in the announcement's
//!   `bitcoin_key_1` and `bitcoin_key_2`);
//! - that side's funding key's ECDSA signature over the stake statement's
//!   digest ([`crate::statement::StakeStatement::digest`]).
//!
//! The verifier finds the funding output from the short channel id (block
//! height, transaction index, output index) and checks that it pays the
//! P2WSH of the 2-of-2 funding script of the two announced funding keys
//! (BOLT3, LDK's `make_funding_redeemscript`) and that it is unspent. Its
//! weight is the output's value; its age, the output's confirmations.

use bitcoin::constants::ChainHash;
use bitcoin::secp256k1::{ecdsa, Message, PublicKey, Secp256k1};
use bitcoin::{Network, OutPoint, ScriptBuf};
use civkit_chain::ChainSource;
use lightning::ln::msgs::ChannelAnnouncement;
use lightning::routing::gossip::NodeId;
use lightning::util::ser::LengthReadable;

pub use crate::certificate::Refusal;
use crate::certificate::{check_statement, Stake};
use crate::statement::StakeStatement;

/// Which side of the channel the certificate's key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    First,
    Second,
}

/// A channel stake certificate, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCertificate {
    pub announcement: ChannelAnnouncement,
    pub side: Side,
    /// The side's funding key's signature over the statement.
    pub signature: ecdsa::Signature,
}

fn key(id: &NodeId) -> Result<PublicKey, Refusal> {
    PublicKey::from_slice(id.as_slice())
        .map_err(|_| Refusal::Malformed("an announced key is not a curve point".into()))
}

impl ChannelCertificate {
    /// Parse the announcement's hex (wire encoding without the type), the
    /// side (1 or 2) and the signature's hex (DER).
    pub fn parse(announcement: &str, side: u8, signature: &str) -> Result<Self, Refusal> {
        let bytes = hex::decode(announcement)
            .map_err(|_| Refusal::Malformed("the announcement is not hex".into()))?;
        let mut reader = bytes.as_slice();
        let announcement = ChannelAnnouncement::read_from_fixed_length_buffer(&mut reader)
            .map_err(|e| Refusal::Malformed(format!("not a channel_announcement: {e:?}")))?;
        // Bytes after the known fields are the announcement's signed
        // excess data (BOLT7 forward compatibility), not an error here.
        let side = match side {
            1 => Side::First,
            2 => Side::Second,
            _ => return Err(Refusal::Malformed("the side is 1 or 2".into())),
        };
        let signature = hex::decode(signature)
            .ok()
            .and_then(|b| ecdsa::Signature::from_der(&b).ok())
            .ok_or_else(|| Refusal::Malformed("the signature is not DER hex".into()))?;
        Ok(ChannelCertificate {
            announcement,
            side,
            signature,
        })
    }

    /// The certificate's funding key.
    pub fn funding_key(&self) -> Result<PublicKey, Refusal> {
        let c = &self.announcement.contents;
        key(match self.side {
            Side::First => &c.bitcoin_key_1,
            Side::Second => &c.bitcoin_key_2,
        })
    }

    /// Check the certificate for `statement`, as the rank service with key
    /// `rank_key` on `network`, against the chain.
    pub async fn verify(
        &self,
        statement: &StakeStatement,
        rank_key: &bitcoin::key::XOnlyPublicKey,
        network: Network,
        chain: &dyn ChainSource,
    ) -> Result<Stake, Refusal> {
        let c = &self.announcement.contents;
        if c.chain_hash != ChainHash::using_genesis_block(network) {
            return Err(Refusal::OtherNetwork);
        }
        let secp = Secp256k1::verification_only();
        lightning::routing::gossip::verify_channel_announcement(&self.announcement, &secp)
            .map_err(|e| Refusal::Announcement(e.err))?;
        let digest = Message::from_digest(statement.digest());
        secp.verify_ecdsa(&digest, &self.signature, &self.funding_key()?)
            .map_err(|_| Refusal::StatementSignature)?;

        check_statement(statement, rank_key, network, chain).await?;
        use lightning::util::scid_utils::{block_from_scid, tx_index_from_scid, vout_from_scid};
        let scid = c.short_channel_id;
        let height = u64::from(block_from_scid(scid));
        let (txid, tx) = civkit_chain::transaction_at(chain, height, tx_index_from_scid(scid))
            .await
            .map_err(|e| match e {
                civkit_chain::Error::NotFound(m) => Refusal::NotOnChain(m),
                e => Refusal::Chain(e),
            })?;
        let vout = u32::from(vout_from_scid(scid));
        let output = tx
            .output
            .get(vout as usize)
            .ok_or_else(|| Refusal::NotOnChain(format!("{txid} has no output {vout}")))?;
        let script = lightning::ln::chan_utils::make_funding_redeemscript(
            &key(&c.bitcoin_key_1)?,
            &key(&c.bitcoin_key_2)?,
        );
        if output.script_pubkey != ScriptBuf::new_p2wsh(&script.wscript_hash()) {
            return Err(Refusal::NotFunding);
        }
        let outpoint = OutPoint::new(txid, vout);
        let unspent = chain
            .unspent_output(&outpoint)
            .await
            .map_err(Refusal::Chain)?
            .ok_or(Refusal::Spent)?;
        Ok(Stake {
            outpoint,
            value: unspent.value,
            confirmed_at: height,
        })
    }
}
