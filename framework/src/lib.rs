//! # civkit-framework
//!
//! The core of civkit: a Nostr relay engine that any wire can feed, and the
//! plug-in traits that the rest of the workspace implements. In the picture of
//! `docs/ARCHITECTURE.md` this crate is the box in the middle:
//!
//! - [`Transport`]: a wire adapter (websocket, BOLT8, onion messages) that
//!   opens a [`Session`] per connection and speaks NIP-01 text into it;
//! - [`Session`]: the one door for events from outside, with its per-session
//!   checks, in both directions (a client's `EVENT`s, a federated peer's
//!   answers to an import subscription);
//! - the pipeline (`pipeline`, crate-private): id and signature check,
//!   duplicate drop, kind semantics, admission chain, durable write, fan-out
//!   through the indexed subscription registry (`hub`), post-store hooks;
//! - [`Node`]: the public handle to all of it, for transports, binaries and
//!   the node's own origins ([`LocalOrigin`]);
//! - [`Service`]: policy and state (market board, credentials, notary),
//!   seeing an [`Origin`], never a socket;
//! - [`Persister`]: durable storage of events and per-service key-value state;
//! - [`Registry`]: explicit map from config `type` names to constructors.
//!
//! The crate depends on no transport, service or storage engine. The
//! `testing` feature adds an in-memory persister, a memory transport with one
//! hub per test, a manual clock, a [`testing::TestNode`] harness and the
//! conformance suites every Persister and Transport runs.

#![forbid(unsafe_code)]

pub mod board_secrets;
pub mod canonical;
pub mod clock;
pub mod control;
pub mod error;
mod hub;
pub mod keyfile;
pub mod kinds;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod persister;
mod pipeline;
pub mod rate;
pub mod registry;
pub mod service;
pub mod session;
pub mod shutdown;
pub mod stored;
pub mod stream;
pub mod transport;
pub mod wire;

#[cfg(feature = "testing")]
pub mod testing;

pub use clock::{Clock, SystemClock};
pub use control::Control;
pub use error::{Error, ErrorKind, Result};
pub use hub::{ConnectionInfo, FanOut, Scope};
pub use metrics::{Metrics, ScopedMetrics};
pub use node::{Node, NodeBuilder};
pub use origin::{LocalOrigin, Origin, Source};
pub use persister::{
    Claim, EventTable, Export, Persister, Record, SaveOutcome, StoreStats, StoredEvent,
};
pub use pipeline::NodeInfo;
pub use registry::{BuildContext, ComponentConfig, ComponentInfo, ComponentKind, Registry};
pub use service::{Admission, OkReply, Prefix, Rejection, Service, ServiceContext};
pub use session::{Imported, Outgoing, Session, SessionLimits, SessionOutbox};
pub use shutdown::{Shutdown, ShutdownTrigger};
pub use transport::Transport;

/// Re-exported so components use the same protocol types.
pub use nostr;
