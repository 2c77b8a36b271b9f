//! The [`Node`]: a handle to one node's pipeline, sessions and services.
//!
//! The pipeline itself lives in [`crate::pipeline`] and the session and
//! subscription registry in [`crate::hub`]; this module is the public face,
//! grouped by who uses it:
//!
//! - **transports**: [`Node::open_session`], [`Node::open_scoped_session`],
//!   [`Node::set_endpoint`], [`Node::register_control`],
//!   [`Node::unregister_control`], [`Node::set_stream_sink`] and
//!   [`Node::set_dialer`] (see [`crate::stream`]), and the NIP-11 parts ([`Node::info`],
//!   [`Node::supported_nips`], [`Node::service_limitations`],
//!   [`Node::service_nip11`]);
//! - **the node's own origins** (the admin API, through which local tools
//!   such as `civkit-cli` publish): [`Node::submit`],
//!   which takes a [`LocalOrigin`] only;
//! - **binaries and the admin API**: [`Node::spawn_background`], status and
//!   counters, controls and service commands, the persister for operator
//!   queries, [`Node::handle_count`] for a clean shutdown.
//!
//! Services never hold a `Node`: they get a [`crate::ServiceContext`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nostr::{Event, Keys, Timestamp};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use crate::hub::{ConnectionInfo, FanOut, Hub, Scope, SessionTx};
use crate::metrics::{Metrics, TransportLabel};
use crate::origin::{LocalOrigin, Origin};
use crate::persister::Persister;
use crate::pipeline::{lock, Core, CoreParts, NodeInfo};
use crate::service::{OkReply, Service};
use crate::session::{Session, SessionLimits, SessionOutbox};
use crate::shutdown::Shutdown;
use crate::{Clock, SystemClock};

/// Builds a [`Node`].
pub struct NodeBuilder {
    parts: CoreParts,
}

impl NodeBuilder {
    /// A node on `persister`, signing with `keys`.
    pub fn new(persister: Arc<dyn Persister>, keys: Keys) -> Self {
        NodeBuilder {
            parts: CoreParts {
                persister,
                keys,
                clock: Arc::new(SystemClock),
                info: NodeInfo::default(),
                services: Vec::new(),
                hub: Hub::new(FanOut::Indexed),
                outbox_capacity: 1024,
                sweep_interval: Duration::from_secs(60),
                lease_ttl: Duration::from_secs(10),
                metrics: Metrics::new(),
            },
        }
    }
    /// Record metrics in this registry (the one the components were built
    /// with; see [`crate::BuildContext::metrics`]).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.parts.metrics = metrics;
        self
    }
    /// Use another clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.parts.clock = clock;
        self
    }
    /// Describe the node.
    pub fn info(mut self, info: NodeInfo) -> Self {
        self.parts.info = info;
        self
    }
    /// Append a service to the admission chain (order matters).
    pub fn service(mut self, name: impl Into<String>, service: Arc<dyn Service>) -> Self {
        self.parts.services.push((name.into(), service));
        self
    }
    /// Messages queued per session before a slow subscriber is disconnected.
    pub fn outbox_capacity(mut self, n: usize) -> Self {
        self.parts.outbox_capacity = n.max(16);
        self
    }
    /// How often expired events are swept.
    pub fn sweep_interval(mut self, d: Duration) -> Self {
        self.parts.sweep_interval = d;
        self
    }
    /// How long the board lease lasts without renewal (default 10 s): on a
    /// store several nodes share, the board-wide work moves to another
    /// node within this time (plus one renewal interval, a fifth of it)
    /// after the node doing it dies.
    pub fn lease_ttl(mut self, d: Duration) -> Self {
        self.parts.lease_ttl = d.max(Duration::from_millis(100));
        self
    }
    /// How fan-out finds matching subscriptions (default: indexed).
    pub fn fan_out(mut self, mode: FanOut) -> Self {
        self.parts.hub = Hub::new(mode);
        self
    }
    /// Build the node.
    pub fn build(self) -> Node {
        Node(Core::new(self.parts))
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The name of the lease that decides which node does the board-wide work.
const BOARD_LEASE: &str = "board";

/// A handle to the node core. Cheap to clone.
#[derive(Clone)]
pub struct Node(Arc<Core>);

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.0.info.name)
            .finish()
    }
}

/// For transports.
impl Node {
    /// Open a session for a connection, peer or sender. Everything the
    /// session's remote end sends goes through it, and through nothing else.
    pub fn open_session(&self, origin: Origin, limits: SessionLimits) -> (Session, SessionOutbox) {
        self.open_scoped_session(origin, limits, Scope::Everything)
    }

    /// Open a session that may only receive what `scope` allows (history
    /// and live alike). Transports use it for what a federated peer may
    /// subscribe to.
    pub fn open_scoped_session(
        &self,
        origin: Origin,
        limits: SessionLimits,
        scope: Scope,
    ) -> (Session, SessionOutbox) {
        let (tx, rx) = mpsc::channel(self.0.outbox_capacity.max(limits.max_limit + 16));
        let kick = Arc::new(Notify::new());
        let out = SessionTx {
            tx: tx.clone(),
            kick: kick.clone(),
        };
        let id = self
            .0
            .hub
            .open(origin.clone(), self.now(), scope.clone(), out);
        debug!(session = id, %origin, "session opened");
        let session = Session::new(self.0.clone(), id, origin, limits, scope, tx);
        (session, SessionOutbox::new(rx, kick))
    }

    /// Record where a transport instance listens (admin API, board policy).
    /// `name` is the instance name, or `<instance>/<what>` for a second endpoint.
    pub fn set_endpoint(&self, name: &str, endpoint: impl Into<String>) {
        lock(&self.0.endpoints).insert(name.to_string(), endpoint.into());
    }
    /// Say that the transport `name` runs although it has no endpoint of
    /// its own to announce (one that serves only streams handed to it).
    pub fn set_running_unannounced(&self, name: &str) {
        lock(&self.0.unannounced).insert(name.to_string());
    }
    /// Whether the transport `name` runs: it announced an endpoint, or
    /// said it has none.
    pub fn transport_running(&self, name: &str) -> bool {
        lock(&self.0.endpoints).contains_key(name) || lock(&self.0.unannounced).contains(name)
    }
    /// Offer operator commands under `name` (see [`crate::Control`]). Use the
    /// instance name, so two instances of one transport do not collide.
    pub fn register_control(&self, name: &str, control: Arc<dyn crate::Control>) {
        lock(&self.0.controls).insert(name.to_string(), control);
    }
    /// Withdraw the commands registered under `name` (a transport stopping).
    pub fn unregister_control(&self, name: &str) {
        lock(&self.0.controls).remove(name);
    }
    /// Serve streams from elsewhere (an onion service's) with `sink`, under
    /// the transport instance name `name` (see [`crate::stream`]).
    pub fn set_stream_sink(&self, name: &str, sink: Arc<dyn crate::stream::StreamSink>) {
        lock(&self.0.stream_sinks).insert(name.to_string(), sink);
    }
    /// The stream sink of the transport instance `name`, once it runs.
    pub fn stream_sink(&self, name: &str) -> Option<Arc<dyn crate::stream::StreamSink>> {
        lock(&self.0.stream_sinks).get(name).cloned()
    }
    /// Dial through `dialer` (Tor) from now on (see [`crate::stream`]).
    pub fn set_dialer(&self, dialer: Arc<dyn crate::stream::Dialer>) {
        *lock(&self.0.dialer) = Some(dialer);
    }
    /// The dialer, once a transport set one.
    pub fn dialer(&self) -> Option<Arc<dyn crate::stream::Dialer>> {
        lock(&self.0.dialer).clone()
    }
    /// Current time from the node's clock.
    pub fn now(&self) -> Timestamp {
        self.0.now()
    }
    /// What the node says about itself.
    pub fn info(&self) -> &NodeInfo {
        &self.0.info
    }
    /// The node's keys.
    pub fn keys(&self) -> &Keys {
        &self.0.keys
    }
    /// NIPs supported by the core plus every service.
    pub fn supported_nips(&self) -> Vec<u16> {
        let mut nips: Vec<u16> = vec![1, 9, 11, 40, 42, 45];
        for slot in &self.0.services {
            nips.extend(slot.service.supported_nips());
        }
        nips.sort_unstable();
        nips.dedup();
        nips
    }
    /// NIP-11 `limitation` fields contributed by services.
    pub fn service_limitations(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        for slot in &self.0.services {
            map.extend(slot.service.nip11_limitation());
        }
        map
    }
    /// NIP-11 top-level fields contributed by services.
    pub fn service_nip11(&self) -> serde_json::Map<String, serde_json::Value> {
        self.0.service_nip11()
    }
}

/// For the node's own origins.
impl Node {
    /// Run the whole pipeline for an event of the operator or a service:
    /// admission, storage, fan-out and hooks. Events from outside
    /// go through a [`Session`] instead; [`LocalOrigin`] cannot name them.
    pub async fn submit(&self, origin: LocalOrigin, event: Event) -> OkReply {
        self.0.process(origin.origin(), &event).await.0
    }
}

/// For binaries and the admin API.
impl Node {
    /// The node's persister (operator queries, flushing at shutdown).
    pub fn persister(&self) -> &Arc<dyn Persister> {
        &self.0.persister
    }
    /// Time since the node was built.
    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }
    /// Events accepted and rejected since start.
    pub fn event_counters(&self) -> (u64, u64) {
        self.0.event_counters()
    }
    /// The node's metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
    /// Every metric, read now, in the OpenMetrics text format (what the
    /// `/metrics` endpoint answers).
    pub async fn scrape_metrics(&self) -> String {
        let core = self.0.metrics.core();
        match self.0.persister.stats().await {
            Ok(stats) => {
                core.store_events.set(saturating_i64(stats.events));
                core.store_bytes.set(saturating_i64(stats.size_bytes));
            }
            Err(e) => tracing::debug!(error = %e, "store stats unavailable for metrics"),
        }
        core.connections.clear();
        core.subscriptions.clear();
        for name in self.0.transport_names() {
            let label = TransportLabel { transport: name };
            core.connections.get_or_create(&label).set(0);
            core.subscriptions.get_or_create(&label).set(0);
        }
        for c in self.connections() {
            let label = TransportLabel {
                transport: c.transport,
            };
            core.connections.get_or_create(&label).inc();
            core.subscriptions
                .get_or_create(&label)
                .inc_by(saturating_i64(c.subscriptions as u64));
        }
        self.0.metrics.encode()
    }
    /// Names of the configured services, in admission order.
    pub fn service_names(&self) -> Vec<String> {
        self.0.services.iter().map(|s| s.name.to_string()).collect()
    }
    /// Where each transport listens.
    pub fn endpoints(&self) -> BTreeMap<String, String> {
        lock(&self.0.endpoints).clone()
    }
    /// `status()` of every registered control that has one.
    pub fn control_statuses(&self) -> BTreeMap<String, serde_json::Value> {
        lock(&self.0.controls)
            .iter()
            .filter_map(|(name, c)| c.status().map(|s| (name.clone(), s)))
            .collect()
    }
    /// Run an operator command registered under `name`.
    pub async fn control(
        &self,
        name: &str,
        command: &str,
        args: serde_json::Value,
    ) -> crate::Result<serde_json::Value> {
        let c = lock(&self.0.controls)
            .get(name)
            .cloned()
            .ok_or_else(|| crate::Error::Unsupported(format!("no control named `{name}`")))?;
        c.command(command, args).await
    }
    /// Answer an admin command addressed to a service instance.
    pub async fn service_admin(
        &self,
        service: &str,
        command: &str,
        args: serde_json::Value,
    ) -> crate::Result<serde_json::Value> {
        let slot = self
            .0
            .services
            .iter()
            .find(|s| &*s.name == service)
            .ok_or_else(|| crate::Error::Unsupported(format!("no service named `{service}`")))?;
        slot.service.admin(&slot.ctx, command, args).await
    }
    /// Open sessions per transport.
    pub fn connection_counts(&self) -> BTreeMap<String, usize> {
        self.0.hub.connection_counts()
    }
    /// Every open session.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.0.hub.connections()
    }
    /// Subscriptions open on the node, over all sessions.
    pub fn subscription_count(&self) -> usize {
        self.0.hub.subscription_count()
    }
    /// How many handles to this node exist (sessions, transports, the owner).
    /// An owner that wants the store closed waits for this to reach 1.
    pub fn handle_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Whether this node does the board-wide work (expiry sweeps, service
    /// rounds): always with a store of its own; with a store several nodes
    /// share, while it holds the board lease.
    pub fn is_leader(&self) -> bool {
        self.0.leader.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Spawn the board lease, the expiry sweeper and every service's
    /// background work.
    pub fn spawn_background(&self, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        let core = self.0.clone();
        let mut sd = shutdown.clone();
        handles.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(core.lease_ttl / 5);
            loop {
                tokio::select! {
                    _ = sd.wait() => break,
                    _ = tick.tick() => {
                        // In doubt (the store failed), not the leader: better
                        // no node doing the work for a moment than two.
                        let held = core.persister.hold_lease(BOARD_LEASE, core.lease_ttl).await;
                        let held = held.unwrap_or_else(|e| {
                            warn!(error = %e, "board lease check failed");
                            false
                        });
                        let was = core.leader.swap(held, std::sync::atomic::Ordering::Relaxed);
                        if was != held {
                            tracing::info!(leader = held, "board lease changed hands");
                        }
                    }
                }
            }
        }));
        let core = self.0.clone();
        let mut sd = shutdown.clone();
        handles.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(core.sweep_interval);
            loop {
                tokio::select! {
                    _ = sd.wait() => break,
                    _ = tick.tick() => {
                        if !core.leader.load(std::sync::atomic::Ordering::Relaxed) {
                            continue;
                        }
                        match core.persister.remove_expired(core.now()).await {
                            Ok(0) => {}
                            Ok(n) => debug!(removed = n, "expired events swept"),
                            Err(e) => warn!(error = %e, "expiry sweep failed"),
                        }
                    }
                }
            }
        }));
        if let Some(mut peer_events) = self.0.persister.peer_events() {
            // Events other nodes on a shared store accepted reach this
            // node's subscribers; their post-store hooks ran on the node
            // that accepted them.
            let core = self.0.clone();
            let mut sd = shutdown.clone();
            handles.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = sd.wait() => break,
                        event = peer_events.recv() => match event {
                            Some(event) => core.hub.fan_out(&event),
                            None => break,
                        },
                    }
                }
            }));
        }
        for slot in &self.0.services {
            let service = slot.service.clone();
            let ctx = slot.ctx.clone();
            let name = slot.name.clone();
            let sd = shutdown.clone();
            handles.push(tokio::spawn(async move {
                if let Err(e) = service.run(ctx, sd).await {
                    warn!(service = %name, error = %e, "service background task failed");
                }
            }));
        }
        handles
    }
}
