//! The one error type of the credentials library (the scheme and the
//! maker's wallet). The service itself answers with NIP-01 rejections, and
//! its payment backends with the framework's error, at that boundary.

/// What a caller can do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Points, scalars, proofs or an answer that do not verify: never retry.
    Invalid,
    /// The board refused; its reason carries a NIP-01 prefix
    /// (`payment-required:` means pay, then ask again).
    Refused,
}

/// Why a credentials operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A blind-signature operation failed on the given points or scalars.
    #[error("{0}")]
    Crypto(String),
    /// A board's answer is malformed, or does not verify against what it announced.
    #[error("{0}")]
    Answer(String),
    /// A request could not be built (signing, encryption, the OS random source).
    #[error("{0}")]
    Request(String),
    /// The board refused the request.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Refused(_) => ErrorKind::Refused,
            Error::Crypto(_) | Error::Answer(_) | Error::Request(_) => ErrorKind::Invalid,
        }
    }
}

pub(crate) fn crypto(e: impl std::fmt::Display) -> Error {
    Error::Crypto(e.to_string())
}

pub(crate) fn answer(e: impl std::fmt::Display) -> Error {
    Error::Answer(e.to_string())
}

pub(crate) fn request(e: impl std::fmt::Display) -> Error {
    Error::Request(e.to_string())
}

/// Result alias for the credentials library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
