//! # civkit-mainstay
//!
//! Mainstay notarization for civkit boards, in the `services` column of
//! `ARCHITECTURE.md`. This crate so far holds the verification library that
//! anyone can run on a board's published proofs: slot proofs (a commitment
//! reaches the Mainstay `merkle_root` of an attestation) and sequences of
//! them (the board's history, in order, back to the staychain's first
//! attestation). The service that commits rounds and polls for proofs
//! builds on it.

#![forbid(unsafe_code)]

pub mod proof;
pub mod rounds;
