//! The memory transport: in-process clients, one hub per test (no globals).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use super::client::MemoryClient;
use crate::{Node, Origin, Result, SessionLimits, Shutdown, Source, Transport};

struct HubInner {
    node: watch::Sender<Option<Node>>,
    limits: SessionLimits,
    next: AtomicU64,
    name: Mutex<String>,
}

/// Connects in-process clients to one node. Create one per test.
#[derive(Clone)]
pub struct MemoryHub(Arc<HubInner>);

impl std::fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryHub")
    }
}

impl Default for MemoryHub {
    fn default() -> Self {
        Self::with_limits(SessionLimits::default())
    }
}

impl MemoryHub {
    /// A hub with default limits.
    pub fn new() -> Self {
        Self::default()
    }
    /// A hub whose sessions use `limits`.
    pub fn with_limits(limits: SessionLimits) -> Self {
        MemoryHub(Arc::new(HubInner {
            node: watch::channel(None).0,
            limits,
            next: AtomicU64::new(1),
            name: Mutex::new("memory".to_string()),
        }))
    }
    /// The transport side, for a node built from config or by hand.
    pub fn transport(&self, name: &str) -> MemoryTransport {
        if let Ok(mut n) = self.0.name.lock() {
            *n = name.to_string();
        }
        MemoryTransport { hub: self.clone() }
    }
    pub(crate) fn attach(&self, node: Node) {
        self.0.node.send_replace(Some(node));
    }
    /// Open a client session; waits until a node is attached.
    pub async fn connect(&self) -> MemoryClient {
        let mut rx = self.0.node.subscribe();
        let node = loop {
            if let Some(n) = rx.borrow_and_update().clone() {
                break n;
            }
            if rx.changed().await.is_err() {
                // The hub itself is alive (we hold it), so this cannot happen.
                continue;
            }
        };
        let client = self.0.next.fetch_add(1, Ordering::Relaxed);
        let name = self.0.name.lock().map(|n| n.clone()).unwrap_or_default();
        let origin = Origin::new(name, Source::Memory { client });
        let (mut session, outbox) = node.open_session(origin, self.0.limits.clone());
        let (tx, mut rx) = mpsc::channel::<String>(64);
        tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                session.handle_text(&text).await;
            }
        });
        MemoryClient::new(tx, outbox)
    }
}

/// The memory transport, as the registry would build it.
#[derive(Debug)]
pub struct MemoryTransport {
    hub: MemoryHub,
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn run(self: Box<Self>, node: Node, mut shutdown: Shutdown) -> Result<()> {
        self.hub.attach(node.clone());
        node.set_endpoint("memory", "memory://hub");
        shutdown.wait().await;
        Ok(())
    }
}
