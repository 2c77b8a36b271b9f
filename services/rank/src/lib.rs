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
//! Work in progress (issue 14): the UTXO certificate (BIP-322 proof of
//! funds), the rank service, tiers and the board's use of them.

#![forbid(unsafe_code)]

pub mod bip322;
pub mod certificate;
pub mod channel;
pub mod statement;
pub mod watch;
