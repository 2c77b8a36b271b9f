//! The one error type of the board crate: why an order is refused.

use civkit_framework::Rejection;

/// What a caller does about an [`Error`]: a malformed order is the maker's
/// mistake (`invalid:`), a refused one breaks this board's policy (`restricted:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Malformed,
    Refused,
}

/// Why an order, or its offer, is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A tag of the order is missing or wrong.
    #[error("tag `{tag}`: {reason}")]
    Order { tag: &'static str, reason: String },
    /// The BOLT12 offer is invalid, or disagrees with the order.
    #[error("{0}")]
    Offer(String),
    /// The order is well formed, but this board's policy refuses it.
    #[error("{0}")]
    Policy(String),
}

impl Error {
    /// What kind of refusal this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Order { .. } | Error::Offer(_) => ErrorKind::Malformed,
            Error::Policy(_) => ErrorKind::Refused,
        }
    }

    /// The NIP-01 answer for the maker.
    pub fn rejection(&self) -> Rejection {
        match self {
            Error::Offer(reason) => Rejection::invalid(format!("tag `bolt12`: {reason}")),
            Error::Order { .. } => Rejection::invalid(self.to_string()),
            Error::Policy(reason) => Rejection::restricted(reason.clone()),
        }
    }
}

/// Result alias for the board crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
