//! Run-time commands a component offers the operator (for example a
//! transport's `peers connect`). Registered on the [`crate::Node`] by name and
//! reached through the admin API at `POST /v1/control/<name>/<command>`.

use async_trait::async_trait;

use crate::Result;

/// A named set of operator commands.
#[async_trait]
pub trait Control: Send + Sync + 'static {
    /// Run `command` with JSON `args`; answer JSON. Unknown commands are
    /// [`crate::Error::Unsupported`], bad arguments [`crate::Error::Invalid`].
    async fn command(&self, command: &str, args: serde_json::Value) -> Result<serde_json::Value>;
    /// Counters for `civkit-cli status` (none by default).
    fn status(&self) -> Option<serde_json::Value> {
        None
    }
}
