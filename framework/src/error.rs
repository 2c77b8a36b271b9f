//! The one error type of the framework crate.

use std::fmt;

/// What a caller can do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input (config, message, argument) was wrong; fix it and retry.
    BadInput,
    /// The store failed; the operation may or may not have happened.
    Storage,
    /// A network or I/O problem; retrying later may work.
    Io,
    /// The component does not support the request.
    Unsupported,
    /// The node is shutting down or gone.
    Shutdown,
}

/// Errors raised by the framework and by components that implement its traits.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config value is missing or wrong. `key` is the full dotted path.
    #[error("config error at `{key}`: {message}")]
    Config { key: String, message: String },
    /// A persister failed.
    #[error("store error ({backend}): {message}")]
    Store {
        backend: &'static str,
        message: String,
    },
    /// A transport failed to start or run.
    #[error("transport `{instance}` failed: {message}")]
    Transport { instance: String, message: String },
    /// A service failed.
    #[error("service `{instance}` failed: {message}")]
    Service { instance: String, message: String },
    /// The component does not support this request.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Bad input from a caller.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Shutdown,
    /// I/O error with context.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// What the caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } | Error::Invalid(_) => ErrorKind::BadInput,
            Error::Store { .. } => ErrorKind::Storage,
            Error::Transport { .. } | Error::Io { .. } | Error::Service { .. } => ErrorKind::Io,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Shutdown => ErrorKind::Shutdown,
        }
    }

    /// Build a config error for a dotted key.
    pub fn config(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Config {
            key: key.into(),
            message: message.to_string(),
        }
    }

    /// Build an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the framework.
pub type Result<T, E = Error> = std::result::Result<T, E>;
