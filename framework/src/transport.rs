//! The [`Transport`] trait: a thin adapter between a wire and NIP-01 sessions.
//!
//! # For implementers
//!
//! A transport frames and unframes NIP-01 messages, and that is all. For each
//! connection, peer or sender it calls [`crate::Node::open_session`] with an
//! [`crate::Origin`] that says who is talking, feeds every client message to
//! [`crate::Session::handle_text`], and writes every message it drains from the
//! [`crate::SessionOutbox`] back to the wire.
//!
//! It never validates events, applies policy, stores or fans out: the node
//! does that once for all transports.
//!
//! Read and write concurrently. `handle_text` waits while the outbox is full,
//! so a transport that drains the outbox only between reads deadlocks on a
//! large `REQ`:
//!
//! ```ignore
//! // Wrong: one task both feeds and drains.
//! loop { let m = ws.next().await; session.handle_text(&m).await; flush(&mut outbox).await; }
//! // Right: a writer task drains the outbox while the reader feeds the session.
//! tokio::spawn(async move { while let Some(out) = outbox.next().await { ws_tx.send(out).await; } });
//! while let Some(m) = ws_rx.next().await { session.handle_text(&m).await; }
//! ```
//!
//! When [`crate::SessionOutbox::next`] yields [`crate::Outgoing::Kick`], the
//! node wants the connection closed (a subscriber too slow to keep up).
//!
//! `run` returns when `shutdown` fires, after closing its listeners. It should
//! report where it listens with [`crate::Node::set_endpoint`].

use crate::{Node, Result, Shutdown};
use async_trait::async_trait;

/// A wire adapter, built from its config section by the registry.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Serve until `shutdown` fires.
    async fn run(self: Box<Self>, node: Node, shutdown: Shutdown) -> Result<()>;
}
