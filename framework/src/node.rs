//! The [`Node`]: the event pipeline that every transport feeds.
//!
//! `ingest` runs id check, duplicate drop, signature check, expiration, the
//! service admission chain and the durable write; `distribute` fans out to
//! every matching subscription on every transport and runs post-store hooks.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nostr::filter::MatchEventOptions;
use nostr::{Event, EventId, Filter, JsonUtil, Keys, SubscriptionId, Timestamp};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use crate::kinds::{self, KindClass};
use crate::origin::Origin;
use crate::persister::{Persister, SaveOutcome};
use crate::service::{Admission, Rejection, Service, ServiceContext};
use crate::session::{Session, SessionLimits, SessionOutbox};
use crate::transport::Shutdown;
use crate::{Clock, SystemClock};

/// What the node says about itself (NIP-11 and the admin API).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub description: String,
    pub contact: Option<String>,
    /// The public websocket URL clients use; NIP-42 checks `relay` tags against it.
    pub relay_url: Option<String>,
}

/// The answer to an `EVENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkReply {
    pub event_id: EventId,
    pub accepted: bool,
    pub message: String,
}

/// One open session, as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionInfo {
    pub id: u64,
    pub transport: String,
    pub origin: String,
    /// The peer address, unredacted, for the operator.
    pub address: Option<String>,
    pub authenticated: Option<String>,
    pub subscriptions: usize,
    pub connected_at: u64,
}

pub(crate) struct SessionEntry {
    origin: Origin,
    connected_at: Timestamp,
    subs: HashMap<SubscriptionId, Arc<[Filter]>>,
    /// Events this session may receive (empty: all). See [`Node::open_scoped_session`].
    scope: Arc<[Filter]>,
    tx: mpsc::Sender<String>,
    kick: Arc<Notify>,
}

struct ServiceSlot {
    name: Arc<str>,
    service: Arc<dyn Service>,
    ctx: ServiceContext,
}

/// Ids of recent ephemeral events, to drop duplicates that are never stored.
#[derive(Default)]
struct RecentIds {
    set: HashSet<EventId>,
    order: VecDeque<EventId>,
}

impl RecentIds {
    const CAPACITY: usize = 16_384;
    /// `true` if newly inserted.
    fn insert(&mut self, id: EventId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

pub(crate) struct Inner {
    persister: Arc<dyn Persister>,
    keys: Keys,
    clock: Arc<dyn Clock>,
    info: NodeInfo,
    services: Vec<ServiceSlot>,
    sessions: RwLock<HashMap<u64, SessionEntry>>,
    next_session: AtomicU64,
    recent_ephemeral: Mutex<RecentIds>,
    started: Instant,
    endpoints: Mutex<BTreeMap<String, String>>,
    controls: Mutex<BTreeMap<String, Arc<dyn crate::Control>>>,
    accepted: AtomicU64,
    rejected: AtomicU64,
    outbox_capacity: usize,
    sweep_interval: Duration,
}

/// Builds a [`Node`].
pub struct NodeBuilder {
    persister: Arc<dyn Persister>,
    keys: Keys,
    clock: Arc<dyn Clock>,
    info: NodeInfo,
    services: Vec<(String, Arc<dyn Service>)>,
    outbox_capacity: usize,
    sweep_interval: Duration,
}

impl NodeBuilder {
    /// A node on `persister`, signing with `keys`.
    pub fn new(persister: Arc<dyn Persister>, keys: Keys) -> Self {
        NodeBuilder {
            persister,
            keys,
            clock: Arc::new(SystemClock),
            info: NodeInfo::default(),
            services: Vec::new(),
            outbox_capacity: 1024,
            sweep_interval: Duration::from_secs(60),
        }
    }
    /// Use another clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Describe the node.
    pub fn info(mut self, info: NodeInfo) -> Self {
        self.info = info;
        self
    }
    /// Append a service to the admission chain (order matters).
    pub fn service(mut self, name: impl Into<String>, service: Arc<dyn Service>) -> Self {
        self.services.push((name.into(), service));
        self
    }
    /// Messages queued per session before a slow subscriber is disconnected.
    pub fn outbox_capacity(mut self, n: usize) -> Self {
        self.outbox_capacity = n.max(16);
        self
    }
    /// How often expired events are swept.
    pub fn sweep_interval(mut self, d: Duration) -> Self {
        self.sweep_interval = d;
        self
    }
    /// Build the node.
    pub fn build(self) -> Node {
        let inner = Arc::new_cyclic(|weak| Inner {
            services: self
                .services
                .into_iter()
                .map(|(name, service)| {
                    let name: Arc<str> = name.into();
                    ServiceSlot {
                        ctx: ServiceContext {
                            name: name.clone(),
                            node: weak.clone(),
                            last_replacing: Arc::default(),
                        },
                        name,
                        service,
                    }
                })
                .collect(),
            persister: self.persister,
            keys: self.keys,
            clock: self.clock,
            info: self.info,
            sessions: RwLock::default(),
            next_session: AtomicU64::new(1),
            recent_ephemeral: Mutex::default(),
            started: Instant::now(),
            endpoints: Mutex::default(),
            controls: Mutex::default(),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            outbox_capacity: self.outbox_capacity,
            sweep_interval: self.sweep_interval,
        });
        Node(inner)
    }
}

/// A handle to the node core. Cheap to clone.
#[derive(Clone)]
pub struct Node(Arc<Inner>);

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.0.info.name)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Node(inner)
    }
    /// The node's keys.
    pub fn keys(&self) -> &Keys {
        &self.0.keys
    }
    /// The node's persister.
    pub fn persister(&self) -> &Arc<dyn Persister> {
        &self.0.persister
    }
    /// Current time.
    pub fn now(&self) -> Timestamp {
        self.0.clock.now()
    }
    /// What the node says about itself.
    pub fn info(&self) -> &NodeInfo {
        &self.0.info
    }
    /// Time since the node was built.
    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }
    /// Events accepted and rejected since start.
    pub fn event_counters(&self) -> (u64, u64) {
        (
            self.0.accepted.load(Ordering::Relaxed),
            self.0.rejected.load(Ordering::Relaxed),
        )
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
        let mut map = serde_json::Map::new();
        for slot in &self.0.services {
            map.extend(slot.service.nip11_extra());
        }
        map
    }
    /// Whether every service still serves this stored event at `now`.
    pub fn serves(&self, event: &Event, now: Timestamp) -> bool {
        self.0.services.iter().all(|s| s.service.serves(event, now))
    }
    /// Names of the configured services, in admission order.
    pub fn service_names(&self) -> Vec<String> {
        self.0.services.iter().map(|s| s.name.to_string()).collect()
    }
    /// Record where a transport listens (shown by the admin API).
    pub fn set_endpoint(&self, transport: &str, endpoint: impl Into<String>) {
        lock(&self.0.endpoints).insert(transport.to_string(), endpoint.into());
    }
    /// Offer operator commands under `name` (see [`crate::Control`]).
    pub fn register_control(&self, name: &str, control: Arc<dyn crate::Control>) {
        lock(&self.0.controls).insert(name.to_string(), control);
    }
    /// `status()` of every registered control that has one.
    pub fn control_statuses(&self) -> BTreeMap<String, serde_json::Value> {
        lock(&self.0.controls)
            .iter()
            .filter_map(|(name, c)| c.status().map(|s| (name.clone(), s)))
            .collect()
    }
    /// Withdraw the commands registered under `name` (a transport stopping).
    pub fn unregister_control(&self, name: &str) {
        lock(&self.0.controls).remove(name);
    }
    /// How many handles to this node exist (sessions, transports, the owner).
    /// An owner that wants the store closed waits for this to reach 1.
    pub fn handle_count(&self) -> usize {
        Arc::strong_count(&self.0)
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
    /// Where each transport listens.
    pub fn endpoints(&self) -> BTreeMap<String, String> {
        lock(&self.0.endpoints).clone()
    }

    /// Open a session for a connection, peer or sender.
    pub fn open_session(&self, origin: Origin, limits: SessionLimits) -> (Session, SessionOutbox) {
        self.open_scoped_session(origin, limits, Vec::new())
    }

    /// Open a session that may only receive events matching one of `scope`
    /// (history and live alike); an empty scope allows everything. Transports
    /// use it for what a federated peer may subscribe to.
    pub fn open_scoped_session(
        &self,
        origin: Origin,
        limits: SessionLimits,
        scope: Vec<Filter>,
    ) -> (Session, SessionOutbox) {
        let scope: Arc<[Filter]> = scope.into();
        let id = self.0.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.0.outbox_capacity.max(limits.max_limit + 16));
        let kick = Arc::new(Notify::new());
        let entry = SessionEntry {
            origin: origin.clone(),
            connected_at: self.now(),
            subs: HashMap::new(),
            scope: scope.clone(),
            tx: tx.clone(),
            kick: kick.clone(),
        };
        self.sessions_write().insert(id, entry);
        debug!(session = id, %origin, "session opened");
        let session = Session::new(self.clone(), id, origin, limits, scope, tx);
        (session, SessionOutbox::new(rx, kick))
    }

    fn sessions_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, SessionEntry>> {
        self.0.sessions.write().unwrap_or_else(|p| p.into_inner())
    }
    fn sessions_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, SessionEntry>> {
        self.0.sessions.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn close_session(&self, id: u64) {
        self.sessions_write().remove(&id);
        debug!(session = id, "session closed");
    }

    pub(crate) fn update_session_origin(&self, id: u64, origin: &Origin) {
        if let Some(e) = self.sessions_write().get_mut(&id) {
            e.origin = origin.clone();
        }
    }

    /// Add or replace a subscription; returns the session's subscription count.
    pub(crate) fn subscribe(
        &self,
        session: u64,
        sub: SubscriptionId,
        filters: Arc<[Filter]>,
    ) -> usize {
        let mut sessions = self.sessions_write();
        match sessions.get_mut(&session) {
            Some(e) => {
                e.subs.insert(sub, filters);
                e.subs.len()
            }
            None => 0,
        }
    }

    pub(crate) fn has_subscription(&self, session: u64, sub: &SubscriptionId) -> (bool, usize) {
        let sessions = self.sessions_read();
        sessions
            .get(&session)
            .map_or((false, 0), |e| (e.subs.contains_key(sub), e.subs.len()))
    }

    pub(crate) fn unsubscribe(&self, session: u64, sub: &SubscriptionId) {
        if let Some(e) = self.sessions_write().get_mut(&session) {
            e.subs.remove(sub);
        }
    }

    /// Open sessions per transport.
    pub fn connection_counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in self.sessions_read().values() {
            *out.entry(e.origin.transport.to_string()).or_default() += 1;
        }
        out
    }

    /// Every open session.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut list: Vec<ConnectionInfo> = self
            .sessions_read()
            .iter()
            .map(|(id, e)| ConnectionInfo {
                id: *id,
                transport: e.origin.transport.to_string(),
                origin: e.origin.to_string(),
                address: crate::origin::unredacted_address(&e.origin),
                authenticated: e.origin.authenticated.map(|p| p.to_hex()),
                subscriptions: e.subs.len(),
                connected_at: e.connected_at.as_secs(),
            })
            .collect();
        list.sort_by_key(|c| c.id);
        list
    }

    /// Run the whole pipeline for an event from a local source (a service, the
    /// operator): admission, storage, fan-out and hooks.
    pub async fn submit(&self, origin: &Origin, event: Event) -> OkReply {
        let (reply, stored) = self.ingest(origin, &event).await;
        if stored {
            self.distribute(origin, &event).await;
        }
        reply
    }

    /// Validate, admit and durably store an event. Returns the `OK` reply and
    /// whether the event is new (and must be distributed).
    pub async fn ingest(&self, origin: &Origin, event: &Event) -> (OkReply, bool) {
        let result = self.ingest_inner(origin, event).await;
        let (accepted, message, fresh) = match result {
            Ok(Ingested::New) => (true, String::new(), true),
            Ok(Ingested::Duplicate) => (
                true,
                "duplicate: already have this event".to_string(),
                false,
            ),
            Err(rejection) => (false, rejection.to_string(), false),
        };
        let counter = if accepted {
            &self.0.accepted
        } else {
            &self.0.rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
        (
            OkReply {
                event_id: event.id,
                accepted,
                message,
            },
            fresh,
        )
    }

    async fn ingest_inner(&self, origin: &Origin, event: &Event) -> Result<Ingested, Rejection> {
        if !event.verify_id() {
            return Err(Rejection::invalid(
                "event id does not match the event's hash",
            ));
        }
        let class = kinds::classify(event.kind);
        let seen = if class == KindClass::Ephemeral {
            !lock(&self.0.recent_ephemeral).insert(event.id)
        } else {
            self.0
                .persister
                .event_exists(&event.id)
                .await
                .map_err(|e| {
                    warn!(error = %e, "store lookup failed");
                    Rejection::error("could not read the store")
                })?
        };
        if seen {
            return Ok(Ingested::Duplicate);
        }
        if !event.verify_signature() {
            return Err(Rejection::invalid("signature verification failed"));
        }
        if event.kind.as_u16() == kinds::CLIENT_AUTH {
            return Err(Rejection::invalid(
                "kind 22242 is sent with AUTH, not EVENT",
            ));
        }
        if kinds::is_expired(event, self.now()) {
            return Err(Rejection::invalid("event has expired (NIP-40)"));
        }
        for slot in &self.0.services {
            if let Admission::Reject(r) = slot.service.admit_event(&slot.ctx, origin, event).await {
                debug!(service = %slot.name, id = %event.id, reason = %r, "event rejected");
                return Err(r);
            }
        }
        if class == KindClass::Ephemeral {
            return Ok(Ingested::New);
        }
        match self.0.persister.save_event(event).await {
            Ok(SaveOutcome::Stored { .. }) => Ok(Ingested::New),
            Ok(SaveOutcome::Duplicate) => Ok(Ingested::Duplicate),
            Ok(SaveOutcome::Stale) => Err(Rejection::duplicate(
                "a newer version of this replaceable event is already stored",
            )),
            Ok(SaveOutcome::Deleted) => {
                Err(Rejection::blocked("this event was deleted by its author"))
            }
            Err(e) => {
                warn!(error = %e, id = %event.id, "store write failed");
                Err(Rejection::error("could not store the event"))
            }
        }
    }

    /// Fan out a new event to every matching subscription, then run post-store hooks.
    pub async fn distribute(&self, origin: &Origin, event: &Event) {
        self.fan_out(event);
        for slot in &self.0.services {
            slot.service.on_stored(&slot.ctx, origin, event).await;
        }
    }

    fn fan_out(&self, event: &Event) {
        let mut json: Option<String> = None;
        let opts = MatchEventOptions::default();
        for (id, entry) in self.sessions_read().iter() {
            if !in_scope(&entry.scope, event) {
                continue;
            }
            for (sub, filters) in &entry.subs {
                if !filters.iter().any(|f| f.match_event(event, opts)) {
                    continue;
                }
                let body = json.get_or_insert_with(|| event.as_json());
                let msg = event_message(sub, body);
                if let Err(mpsc::error::TrySendError::Full(_)) = entry.tx.try_send(msg) {
                    warn!(session = id, "subscriber too slow; disconnecting");
                    entry.kick.notify_one();
                    break;
                }
            }
        }
    }

    /// Services' verdict on a query.
    pub async fn admit_query(&self, origin: &Origin, filters: &[Filter]) -> Result<(), Rejection> {
        for slot in &self.0.services {
            if let Admission::Reject(r) = slot.service.admit_query(&slot.ctx, origin, filters).await
            {
                return Err(r);
            }
        }
        Ok(())
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

    /// Spawn the expiry sweeper and every service's background work.
    pub fn spawn_background(&self, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        let node = self.clone();
        let mut sd = shutdown.clone();
        handles.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(node.0.sweep_interval);
            loop {
                tokio::select! {
                    _ = sd.wait() => break,
                    _ = tick.tick() => {
                        match node.0.persister.remove_expired(node.now()).await {
                            Ok(0) => {}
                            Ok(n) => debug!(removed = n, "expired events swept"),
                            Err(e) => warn!(error = %e, "expiry sweep failed"),
                        }
                    }
                }
            }
        }));
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

enum Ingested {
    New,
    Duplicate,
}

/// True when a session with this scope may receive the event.
pub(crate) fn in_scope(scope: &[Filter], event: &Event) -> bool {
    let opts = MatchEventOptions::default();
    scope.is_empty() || scope.iter().any(|f| f.match_event(event, opts))
}

/// `["EVENT", <sub>, <event json>]` from a pre-serialized event.
pub(crate) fn event_message(sub: &SubscriptionId, event_json: &str) -> String {
    let sub = serde_json::to_string(sub.as_str()).unwrap_or_else(|_| "\"\"".to_string());
    let mut s = String::with_capacity(event_json.len() + sub.len() + 12);
    s.push_str("[\"EVENT\",");
    s.push_str(&sub);
    s.push(',');
    s.push_str(event_json);
    s.push(']');
    s
}
