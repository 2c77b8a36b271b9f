//! # civkit-rank
//!
//! Web-of-Stakes (section 7 of the CivKit paper): a maker proves economic
//! weight without a persistent identity. Stake certificates show that the
//! maker controls Lightning channels or UTXOs; each certificate's key signs
//! a [`statement::StakeStatement`] that names the maker's *stake key*, the
//! rank service that may count it, an expiry height and the network. The
//! weight follows the chain: a certificate counts while its output is
//! unspent.
//!
//! - [`statement`]: the exact bytes every certificate signs;
//! - [`channel`]: the Lightning channel certificate, a BOLT7
//!   `channel_announcement` (LDK's types and signature checks) plus the
//!   funding key's signature over the statement, checked against the
//!   funding output on the chain (`civkit-chain`);
//! - [`watch`]: pruning, at each new block, the certificates whose outputs
//!   were spent.
//!
//! - [`bip322`]: BIP-322 2.0.0 signatures, for the UTXO certificate;
//! - [`certificate`]: what certificates share, the [`certificate::StakeVerifier`]
//!   seam, and the UTXO certificate;
//! - [`tier`]: the `stake` tag on orders, the score, tiers and the signed
//!   tier attestation;
//! - [`service`]: the rank service (`type = "rank"`);
//! - [`lookup`]: how a board finds a stake key's tier (local store or a
//!   remote rank service), checked against the rank key.

#![forbid(unsafe_code)]

pub mod bip322;
pub mod certificate;
pub mod channel;
pub mod lookup;
pub mod service;
pub mod statement;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tier;
pub mod watch;

pub use service::{register, Rank, RankConfig};
