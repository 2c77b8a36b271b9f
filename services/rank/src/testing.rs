//! Channels for tests (feature `testing`): a real 2-of-2 P2WSH funding
//! transaction mined on the stand-in chain, and a `channel_announcement`
//! built with LDK's types and signed over LDK's encoding.

use bitcoin::constants::ChainHash;
use bitcoin::hashes::{sha256d, Hash};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::{Amount, Network, OutPoint, ScriptBuf, TxOut, Txid};
use civkit_chain::stand_in::{self, StandInChain};
use lightning::ln::msgs::{ChannelAnnouncement, UnsignedChannelAnnouncement};
use lightning::routing::gossip::NodeId;
use lightning::types::features::ChannelFeatures;
use lightning::util::ser::Writeable;

/// Mine a funding output of `sats` to the 2-of-2 of `funding`; its short
/// channel id and outpoint.
pub fn fund_channel(
    chain: &StandInChain,
    funding: (PublicKey, PublicKey),
    sats: u64,
) -> (u64, OutPoint) {
    let script = lightning::ln::chan_utils::make_funding_redeemscript(&funding.0, &funding.1);
    let seed = funding.0.serialize();
    let tx = stand_in::spending(
        OutPoint::new(
            Txid::from_byte_array(seed[1..].try_into().unwrap_or([0; 32])),
            0,
        ),
        vec![TxOut {
            value: Amount::from_sat(sats),
            script_pubkey: ScriptBuf::new_p2wsh(&script.wscript_hash()),
        }],
    );
    let (height, _) = chain.mine(vec![tx.clone()]);
    let scid = lightning::util::scid_utils::scid_from_parts(height, 1, 0).unwrap_or(0);
    (scid, OutPoint::new(tx.compute_txid(), 0))
}

/// A `channel_announcement` of node keys `keys[0..2]` and funding keys
/// `keys[2..4]`, signed by `signers` in the same order (pass `keys` for
/// an honest one).
pub fn announcement(
    scid: u64,
    network: Network,
    keys: [&SecretKey; 4],
    signers: [&SecretKey; 4],
) -> ChannelAnnouncement {
    let secp = Secp256k1::new();
    let id = |k: &SecretKey| NodeId::from_pubkey(&k.public_key(&secp));
    let contents = UnsignedChannelAnnouncement {
        features: ChannelFeatures::empty(),
        chain_hash: ChainHash::using_genesis_block(network),
        short_channel_id: scid,
        node_id_1: id(keys[0]),
        node_id_2: id(keys[1]),
        bitcoin_key_1: id(keys[2]),
        bitcoin_key_2: id(keys[3]),
        excess_data: Vec::new(),
    };
    let digest = Message::from_digest(sha256d::Hash::hash(&contents.encode()).to_byte_array());
    let sign = |k: &SecretKey| secp.sign_ecdsa(&digest, k);
    ChannelAnnouncement {
        node_signature_1: sign(signers[0]),
        node_signature_2: sign(signers[1]),
        bitcoin_signature_1: sign(signers[2]),
        bitcoin_signature_2: sign(signers[3]),
        contents,
    }
}

/// The announcement's hex, as a channel certificate carries it.
pub fn announcement_hex(a: &ChannelAnnouncement) -> String {
    hex::encode(a.encode())
}

/// A channel on the stand-in chain, with the keys to prove it.
pub struct Channel {
    pub scid: u64,
    pub outpoint: OutPoint,
    /// Node keys, then funding keys.
    pub keys: [SecretKey; 4],
}

/// Keys from a seed byte: node keys `seed`, `seed+1`, funding `seed+2`, `seed+3`.
fn seeded(seed: u8) -> [SecretKey; 4] {
    [0u8, 1, 2, 3].map(|i| {
        SecretKey::from_slice(&[seed.wrapping_add(i).max(1); 32]).unwrap_or_else(|_| {
            SecretKey::from_slice(&[1; 32]).unwrap_or_else(|_| unreachable!("1 is a valid key"))
        })
    })
}

/// Open (mine) a channel of `sats` with keys from `seed`.
pub fn open_channel(chain: &StandInChain, seed: u8, sats: u64) -> Channel {
    let keys = seeded(seed);
    let secp = Secp256k1::new();
    let (scid, outpoint) = fund_channel(
        chain,
        (keys[2].public_key(&secp), keys[3].public_key(&secp)),
        sats,
    );
    Channel {
        scid,
        outpoint,
        keys,
    }
}

impl Channel {
    /// The statement of `stake` for the rank service `rank`, on regtest.
    pub fn statement(
        stake: &nostr::Keys,
        rank: &nostr::PublicKey,
        expiry_height: u32,
    ) -> crate::statement::StakeStatement {
        let x = |k: &nostr::PublicKey| {
            bitcoin::key::XOnlyPublicKey::from_slice(&k.to_bytes())
                .unwrap_or_else(|_| unreachable!("nostr keys are x-only keys"))
        };
        crate::statement::StakeStatement {
            stake_key: x(&stake.public_key()),
            rank_key: x(rank),
            expiry_height,
            network: Network::Regtest,
        }
    }

    /// Its honest announcement, hex.
    pub fn announcement_hex(&self) -> String {
        let k = &self.keys;
        announcement_hex(&announcement(
            self.scid,
            Network::Regtest,
            [&k[0], &k[1], &k[2], &k[3]],
            [&k[0], &k[1], &k[2], &k[3]],
        ))
    }

    /// The certificate event (side 1) of `stake` for `rank`.
    pub fn certificate_event(
        &self,
        stake: &nostr::Keys,
        rank: &nostr::PublicKey,
        expiry_height: u32,
    ) -> nostr::Event {
        let statement = Self::statement(stake, rank, expiry_height);
        let body = crate::certificate::channel_certificate(
            &self.announcement_hex(),
            1,
            &self.keys[2],
            &statement,
        );
        crate::certificate::certificate_event(stake, rank, &statement, body)
            .unwrap_or_else(|e| unreachable!("encrypting to a valid key: {e}"))
    }

    /// A block that spends the funding output: the channel closes.
    pub fn close(&self, chain: &StandInChain) {
        chain.mine(vec![stand_in::spending(
            self.outpoint,
            vec![TxOut {
                value: Amount::from_sat(1_000),
                script_pubkey: ScriptBuf::new_op_return([]),
            }],
        )]);
    }
}
