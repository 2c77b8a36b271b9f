//! # civkit-framework
//!
//! The core of civkit: a Nostr relay engine that any wire can feed, and the
//! plug-in traits that the rest of the workspace implements. In the picture of
//! `ARCHITECTURE.md` this crate is the box in the middle:
//!
//! - [`Transport`]: a wire adapter (websocket, BOLT8, onion messages) that
//!   opens a [`Session`] per connection and speaks NIP-01 text into it;
//! - [`Node`]: the one event pipeline (id and signature check, duplicate
//!   drop, kind semantics, admission chain, durable write, `OK`, fan-out,
//!   post-store hooks) and the subscription registry;
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

pub mod clock;
pub mod control;
pub mod error;
pub mod keyfile;
pub mod kinds;
pub mod node;
pub mod origin;
pub mod persister;
pub mod registry;
pub mod service;
pub mod session;
pub mod transport;

#[cfg(feature = "testing")]
pub mod testing;

pub use clock::{Clock, SystemClock};
pub use control::Control;
pub use error::{Error, ErrorKind, Result};
pub use node::{ConnectionInfo, Node, NodeBuilder, NodeInfo, OkReply};
pub use origin::{Origin, Source};
pub use persister::{EventTable, Persister, SaveOutcome, StoreStats};
pub use registry::{BuildContext, ComponentConfig, ComponentInfo, ComponentKind, Registry, Shared};
pub use service::{Admission, Prefix, Rejection, Service, ServiceContext};
pub use session::{Outgoing, Session, SessionLimits, SessionOutbox};
pub use transport::{Shutdown, ShutdownTrigger, Transport};

/// Re-exported so components use the same protocol types.
pub use nostr;
