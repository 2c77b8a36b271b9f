//! The testing kit (feature `testing`): in-memory persister, memory transport
//! with one hub per test, a manual clock, the [`TestNode`] harness and the
//! conformance suites.
//!
//! Nothing here is used by a running node unless a test asks for it. Its
//! helpers panic on failure on purpose: they are assertions.

#![allow(clippy::unwrap_used)]

mod client;
pub mod conformance;
mod memory_store;
mod memory_transport;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nostr::{Keys, Timestamp};

pub use client::{MemoryClient, TestClient, WireClient};
pub use memory_store::MemoryPersister;
pub use memory_transport::{MemoryHub, MemoryTransport};

use crate::{
    Clock, Node, NodeBuilder, NodeInfo, Persister, Service, SessionLimits, Shutdown,
    ShutdownTrigger,
};

/// A clock moved by hand.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Starts at `secs`.
    pub fn new(secs: u64) -> Self {
        ManualClock(AtomicU64::new(secs))
    }
    /// Set the time.
    pub fn set(&self, secs: u64) {
        self.0.store(secs, Ordering::SeqCst);
    }
    /// Move forward.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// A node on a memory persister and a memory hub, with a manual clock set to
/// the real time at creation.
pub struct TestNode {
    pub node: Node,
    pub clock: Arc<ManualClock>,
    pub hub: MemoryHub,
    _shutdown: ShutdownTrigger,
    shutdown: Shutdown,
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode").finish()
    }
}

/// Builds a [`TestNode`].
pub struct TestNodeBuilder {
    persister: Arc<dyn Persister>,
    services: Vec<(String, Arc<dyn Service>)>,
    limits: SessionLimits,
    info: NodeInfo,
    keys: Keys,
}

impl TestNodeBuilder {
    /// Use another persister.
    pub fn persister(mut self, p: Arc<dyn Persister>) -> Self {
        self.persister = p;
        self
    }
    /// Add a service to the admission chain.
    pub fn service(mut self, name: &str, s: Arc<dyn Service>) -> Self {
        self.services.push((name.to_string(), s));
        self
    }
    /// Limits for memory clients.
    pub fn limits(mut self, l: SessionLimits) -> Self {
        self.limits = l;
        self
    }
    /// The node's keys (a random key otherwise).
    pub fn keys(mut self, k: Keys) -> Self {
        self.keys = k;
        self
    }
    /// Node info (e.g. a relay URL for NIP-42).
    pub fn info(mut self, i: NodeInfo) -> Self {
        self.info = i;
        self
    }
    /// Build and start the node's background work.
    pub fn build(self) -> TestNode {
        let clock = Arc::new(ManualClock::new(Timestamp::now().as_secs()));
        let mut b = NodeBuilder::new(self.persister, self.keys)
            .clock(clock.clone())
            .info(self.info);
        for (name, s) in self.services {
            b = b.service(name, s);
        }
        let node = b.build();
        let (trigger, shutdown) = Shutdown::new();
        node.spawn_background(shutdown.clone());
        let hub = MemoryHub::with_limits(self.limits);
        hub.attach(node.clone());
        TestNode {
            node,
            clock,
            hub,
            _shutdown: trigger,
            shutdown,
        }
    }
}

impl TestNode {
    /// A builder with the memory persister and no services.
    pub fn builder() -> TestNodeBuilder {
        TestNodeBuilder {
            persister: Arc::new(MemoryPersister::new()),
            services: Vec::new(),
            limits: SessionLimits::default(),
            info: NodeInfo::default(),
            keys: Keys::generate(),
        }
    }
    /// A plain test node.
    pub fn new() -> Self {
        Self::builder().build()
    }
    /// A new in-memory client session.
    pub async fn client(&self) -> MemoryClient {
        self.hub.connect().await
    }
    /// The shutdown signal (for transports under test).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }
}

impl Default for TestNode {
    fn default() -> Self {
        Self::new()
    }
}
