//! The stake statement: what every stake certificate's key signs.
//!
//! Its bytes, 87 in all:
//!
//! | bytes | field |
//! |---|---|
//! | 15 | the ASCII tag `civkit-stake/v1` |
//! | 4 | the network's magic (`f9beb4d9` mainnet, `0b110907` testnet3, `1c163f28` testnet4, `0a03cf40` signet, `fabfb5da` regtest) |
//! | 32 | the rank service's key (x-only) |
//! | 32 | the stake key (x-only) |
//! | 4 | the expiry height, big-endian: the certificate counts only while the chain's tip is below it |
//!
//! A Lightning funding key signs it with ECDSA over its double SHA-256
//! ([`StakeStatement::digest`]), as BOLT7 signs announcements.

use bitcoin::hashes::{sha256d, Hash};
use bitcoin::key::XOnlyPublicKey;
use bitcoin::Network;

/// The tag that starts every statement.
pub const TAG: &[u8; 15] = b"civkit-stake/v1";

/// Length of [`StakeStatement::to_bytes`].
pub const LEN: usize = 15 + 4 + 32 + 32 + 4;

/// What a stake certificate's key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StakeStatement {
    /// The key the maker signs orders with.
    pub stake_key: XOnlyPublicKey,
    /// The rank service that may count the certificate.
    pub rank_key: XOnlyPublicKey,
    /// The certificate counts while the tip is below this height.
    pub expiry_height: u32,
    pub network: Network,
}

impl StakeStatement {
    /// The statement's bytes (see the module documentation).
    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[..15].copy_from_slice(TAG);
        out[15..19].copy_from_slice(&self.network.magic().to_bytes());
        out[19..51].copy_from_slice(&self.rank_key.serialize());
        out[51..83].copy_from_slice(&self.stake_key.serialize());
        out[83..].copy_from_slice(&self.expiry_height.to_be_bytes());
        out
    }

    /// Parse statement bytes; `None` unless they are exactly a statement.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != LEN || &bytes[..15] != TAG {
            return None;
        }
        let magic = bitcoin::p2p::Magic::from_bytes(bytes[15..19].try_into().ok()?);
        Some(StakeStatement {
            network: Network::from_magic(magic)?,
            rank_key: XOnlyPublicKey::from_slice(&bytes[19..51]).ok()?,
            stake_key: XOnlyPublicKey::from_slice(&bytes[51..83]).ok()?,
            expiry_height: u32::from_be_bytes(bytes[83..].try_into().ok()?),
        })
    }

    /// The double SHA-256 of the bytes: what ECDSA signatures sign.
    pub fn digest(&self) -> [u8; 32] {
        sha256d::Hash::hash(&self.to_bytes()).to_byte_array()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bytes_round_trip_and_refuse_anything_else() {
        let key = |b: u8| {
            let secp = bitcoin::secp256k1::Secp256k1::new();
            bitcoin::secp256k1::SecretKey::from_slice(&[b; 32])
                .unwrap()
                .x_only_public_key(&secp)
                .0
        };
        let s = StakeStatement {
            stake_key: key(1),
            rank_key: key(2),
            expiry_height: 900_000,
            network: Network::Signet,
        };
        let bytes = s.to_bytes();
        assert_eq!(hex::encode(&bytes[15..19]), "0a03cf40");
        assert_eq!(&bytes[83..], &900_000u32.to_be_bytes());
        assert_eq!(StakeStatement::from_bytes(&bytes), Some(s));
        assert_eq!(StakeStatement::from_bytes(&bytes[..LEN - 1]), None);
        let mut other = bytes;
        other[0] = b'C';
        assert_eq!(StakeStatement::from_bytes(&other), None);
        let mut unknown = bytes;
        unknown[15..19].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(StakeStatement::from_bytes(&unknown), None);
        // Every field changes the digest.
        let moved = StakeStatement {
            expiry_height: 900_001,
            ..s
        };
        assert_ne!(moved.digest(), s.digest());
    }
}
