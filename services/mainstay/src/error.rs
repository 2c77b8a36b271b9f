//! The one error type of the mainstay crate.

use crate::proof::ProofError;
use crate::rounds::HistoryError;

/// What a caller can do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Mainstay or the chain source could not be reached: retry later.
    Unreachable,
    /// Mainstay or the chain source answered, but refused or said something
    /// unusable: retrying the same request will not help.
    BadAnswer,
    /// The data does not verify: a proof, a history, an attestation or the
    /// staychain is wrong. Never retry; report it.
    Invalid,
    /// The node's store failed or the node is shutting down.
    Node,
}

/// Why a notarization step or a check failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An HTTP request to Mainstay or a chain source failed.
    #[error(transparent)]
    Http(#[from] civkit_http::Error),
    /// Mainstay or a chain source answered something unusable, or refused.
    #[error("{0}")]
    BadAnswer(String),
    /// The chain does not show what was claimed (attestation, staychain, key).
    #[error("{0}")]
    Chain(String),
    /// A proof document or a published round is malformed or inconsistent.
    #[error("{0}")]
    Document(String),
    /// A slot proof does not verify.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// A history of rounds does not verify.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The node's store or lifecycle.
    #[error(transparent)]
    Node(#[from] civkit_framework::Error),
}

impl Error {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Http(e) if e.kind() == civkit_http::ErrorKind::Unreachable => {
                ErrorKind::Unreachable
            }
            Error::Http(_) | Error::BadAnswer(_) => ErrorKind::BadAnswer,
            Error::Chain(_) | Error::Document(_) | Error::Proof(_) | Error::History(_) => {
                ErrorKind::Invalid
            }
            Error::Node(_) => ErrorKind::Node,
        }
    }
}

impl From<civkit_chain::Error> for Error {
    fn from(e: civkit_chain::Error) -> Self {
        match e {
            civkit_chain::Error::Unreachable(e) => Error::Http(e),
            civkit_chain::Error::BadAnswer(m) => Error::BadAnswer(m),
            civkit_chain::Error::NotFound(m) => Error::Chain(format!("not on the chain: {m}")),
        }
    }
}

/// Result alias for the mainstay crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
