//! The event pipeline: the one path every event takes through the node.
//!
//! [`Core::ingest`] runs the id check, duplicate drop, signature check,
//! expiration, the service admission chain and the durable write;
//! [`Core::distribute`] fans the stored event out through the [`Hub`] and
//! runs post-store hooks. Both are crate-private: events from outside reach
//! them only through a [`crate::Session`] (after its per-session checks), and
//! the node's own events through [`crate::Node::submit`].

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nostr::{Event, EventId, Filter, Keys, Kind, Timestamp};
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::control::Control;
use crate::hub::Hub;
use crate::kinds::{self, KindClass};
use crate::metrics::{EventLabels, Metrics, RejectLabels};
use crate::origin::{LocalOrigin, Origin};
use crate::persister::{Claim, Persister, SaveOutcome};
use crate::service::{Admission, OkReply, Prefix, Rejection, Service, ServiceContext, ServiceHost};
use crate::stored::StoredEvent;

/// What the node says about itself (NIP-11 and the admin API).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub description: String,
    pub contact: Option<String>,
    /// The public websocket URL clients use; NIP-42 checks `relay` tags against it.
    pub relay_url: Option<String>,
}

pub(crate) struct ServiceSlot {
    pub name: Arc<str>,
    pub service: Arc<dyn Service>,
    pub ctx: ServiceContext,
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The state of one node, shared by its [`crate::Node`] handles and sessions.
pub(crate) struct Core {
    pub persister: Arc<dyn Persister>,
    pub keys: Keys,
    pub clock: Arc<dyn Clock>,
    pub info: NodeInfo,
    pub services: Vec<ServiceSlot>,
    pub hub: Hub,
    recent_ephemeral: Mutex<RecentIds>,
    pub started: Instant,
    pub endpoints: Mutex<BTreeMap<String, String>>,
    /// Transports that said they run without announcing an endpoint.
    pub unannounced: Mutex<std::collections::BTreeSet<String>>,
    pub controls: Mutex<BTreeMap<String, Arc<dyn Control>>>,
    pub stream_sinks: Mutex<BTreeMap<String, Arc<dyn crate::stream::StreamSink>>>,
    pub dialer: Mutex<Option<Arc<dyn crate::stream::Dialer>>>,
    accepted: AtomicU64,
    rejected: AtomicU64,
    pub outbox_capacity: usize,
    pub sweep_interval: Duration,
    pub lease_ttl: Duration,
    pub metrics: Metrics,
    /// Whether this node holds the board lease (see `Node::is_leader`).
    pub leader: std::sync::atomic::AtomicBool,
}

/// The parts [`Core::new`] takes.
pub(crate) struct CoreParts {
    pub persister: Arc<dyn Persister>,
    pub keys: Keys,
    pub clock: Arc<dyn Clock>,
    pub info: NodeInfo,
    pub services: Vec<(String, Arc<dyn Service>)>,
    pub hub: Hub,
    pub outbox_capacity: usize,
    pub sweep_interval: Duration,
    pub lease_ttl: Duration,
    pub metrics: Metrics,
}

enum Ingested {
    New,
    Duplicate,
    /// Answered `OK true`, not stored or delivered (a shadow rejection).
    Shadowed,
}

impl Core {
    pub fn new(p: CoreParts) -> Arc<Core> {
        Arc::new_cyclic(|weak: &std::sync::Weak<Core>| {
            let host: std::sync::Weak<dyn ServiceHost> = weak.clone();
            Core {
                services: p
                    .services
                    .into_iter()
                    .map(|(name, service)| {
                        let name: Arc<str> = name.into();
                        ServiceSlot {
                            ctx: ServiceContext {
                                name: name.clone(),
                                host: host.clone(),
                                clock: p.clock.clone(),
                                last_replacing: Arc::default(),
                            },
                            name,
                            service,
                        }
                    })
                    .collect(),
                persister: p.persister,
                keys: p.keys,
                clock: p.clock,
                info: p.info,
                hub: p.hub,
                recent_ephemeral: Mutex::default(),
                started: Instant::now(),
                endpoints: Mutex::default(),
                unannounced: Mutex::default(),
                controls: Mutex::default(),
                stream_sinks: Mutex::default(),
                dialer: Mutex::default(),
                accepted: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                outbox_capacity: p.outbox_capacity,
                sweep_interval: p.sweep_interval,
                lease_ttl: p.lease_ttl,
                metrics: p.metrics,
                leader: std::sync::atomic::AtomicBool::new(false),
            }
        })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Events accepted and rejected since start.
    pub fn event_counters(&self) -> (u64, u64) {
        (
            self.accepted.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }

    /// Count a refusal made before the pipeline (by a session's own
    /// checks); `kind` is `None` when the message was not an event.
    pub fn count_rejected(&self, origin: &Origin, kind: Option<Kind>, prefix: Prefix) {
        let class = kind.map_or("unknown", |k| kinds::classify(k).as_str());
        self.count(origin, class, Some(prefix.as_str()));
    }

    /// Count one event received: accepted, or refused with `refused` (the
    /// `OK` message's prefix, or `shadow`).
    fn count(&self, origin: &Origin, kind_class: &'static str, refused: Option<&'static str>) {
        let core = self.metrics.core();
        let labels = EventLabels {
            transport: origin.transport.to_string(),
            kind_class,
        };
        core.received.get_or_create(&labels).inc();
        match refused {
            None => {
                core.accepted.get_or_create(&labels).inc();
                self.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Some(reason) => {
                core.rejected
                    .get_or_create(&RejectLabels {
                        transport: labels.transport,
                        kind_class,
                        reason,
                    })
                    .inc();
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Validate, admit and durably store an event. Returns the `OK` reply and
    /// whether the event is new (and must be distributed).
    pub async fn ingest(&self, origin: &Origin, event: &Event) -> (OkReply, bool) {
        let started = Instant::now();
        let result = self.ingest_inner(origin, event).await;
        self.metrics
            .core()
            .ingest_seconds
            .observe(started.elapsed().as_secs_f64());
        // `refused`: the reason label of a refusal, shadow ones included.
        let (accepted, message, fresh, refused) = match result {
            Ok(Ingested::New) => (true, String::new(), true, None),
            Ok(Ingested::Shadowed) => (true, String::new(), false, Some("shadow")),
            Ok(Ingested::Duplicate) => (
                true,
                "duplicate: already have this event".to_string(),
                false,
                None,
            ),
            Err(rejection) => (
                false,
                rejection.to_string(),
                false,
                Some(rejection.prefix.as_str()),
            ),
        };
        self.count(origin, kinds::classify(event.kind).as_str(), refused);
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
        if !crate::canonical::verify_id(event) {
            return Err(Rejection::invalid(
                "event id does not match the event's hash",
            ));
        }
        let class = kinds::classify(event.kind);
        let seen = if class == KindClass::Ephemeral {
            !lock(&self.recent_ephemeral).insert(event.id)
        } else {
            self.persister.event_exists(&event.id).await.map_err(|e| {
                warn!(error = %e, "store lookup failed");
                Rejection::error("could not read the store")
            })?
        };
        if seen {
            return Ok(Ingested::Duplicate);
        }
        if !crate::canonical::verify_signature(event) {
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
        let mut claims = Vec::new();
        let mut taken = Vec::new();
        for slot in &self.services {
            match slot.service.admit_event(&slot.ctx, origin, event).await {
                Admission::Accept => {}
                Admission::AcceptClaiming { keys, taken: t } => {
                    claims.extend(keys.into_iter().map(|(key, value)| Claim {
                        namespace: slot.name.to_string(),
                        key,
                        value,
                    }));
                    taken.push((slot.name.clone(), t));
                }
                Admission::Reject(r) => {
                    debug!(service = %slot.name, id = %event.id, reason = %r, "event rejected");
                    return Err(r);
                }
                Admission::ShadowReject => {
                    debug!(service = %slot.name, id = %event.id, "event shadow-rejected");
                    return Ok(Ingested::Shadowed);
                }
            }
        }
        let refuse_claim = |c: Claim| {
            if let Some(slot) = self.services.iter().find(|s| *s.name == *c.namespace) {
                slot.service.on_claim_taken(&slot.ctx, event);
            }
            taken
                .iter()
                .find(|(name, _)| **name == *c.namespace)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| Rejection::blocked("already claimed"))
        };
        let store_failed = |e: crate::Error| {
            warn!(error = %e, id = %event.id, "store write failed");
            Rejection::error("could not store the event")
        };
        if class == KindClass::Ephemeral {
            if claims.is_empty() {
                return Ok(Ingested::New);
            }
            return match self.persister.kv_claim(&claims).await {
                Ok(None) => Ok(Ingested::New),
                Ok(Some(c)) => Err(refuse_claim(c)),
                Err(e) => Err(store_failed(e)),
            };
        }
        match self.persister.save_event(event, &claims).await {
            Ok(SaveOutcome::Stored { .. }) => Ok(Ingested::New),
            Ok(SaveOutcome::Claimed(c)) => Err(refuse_claim(c)),
            Ok(SaveOutcome::Duplicate) => Ok(Ingested::Duplicate),
            Ok(SaveOutcome::Stale) => Err(Rejection::duplicate(
                "a newer version of this replaceable event is already stored",
            )),
            Ok(SaveOutcome::Deleted) => {
                Err(Rejection::blocked("this event was deleted by its author"))
            }
            Err(e) => Err(store_failed(e)),
        }
    }

    /// Fan out a new event to every matching subscription, then run post-store hooks.
    pub async fn distribute(&self, origin: &Origin, event: &Event) {
        let started = Instant::now();
        self.hub.fan_out(event);
        self.metrics
            .core()
            .fanout_seconds
            .observe(started.elapsed().as_secs_f64());
        if kinds::classify(event.kind) == KindClass::Ephemeral {
            // Stored events reach other nodes through the store itself.
            if let Err(e) = self.persister.share_ephemeral(event).await {
                warn!(error = %e, id = %event.id, "could not pass an ephemeral event to other nodes");
            }
        }
        for slot in &self.services {
            slot.service.on_stored(&slot.ctx, origin, event).await;
        }
    }

    /// The whole pipeline: ingest, then distribute when new. Returns the
    /// `OK` reply and whether the event was new. (A session that answers
    /// `OK` before the fan-out calls `ingest` and `distribute` itself.)
    pub async fn process(&self, origin: &Origin, event: &Event) -> (OkReply, bool) {
        let (reply, fresh) = self.ingest(origin, event).await;
        if fresh {
            self.distribute(origin, event).await;
        }
        (reply, fresh)
    }

    /// Services' verdict on a query.
    pub async fn admit_query(&self, origin: &Origin, filters: &[Filter]) -> Result<(), Rejection> {
        for slot in &self.services {
            if let Admission::Reject(r) = slot.service.admit_query(&slot.ctx, origin, filters).await
            {
                return Err(r);
            }
        }
        Ok(())
    }

    /// Whether every service still serves this stored event at `now`.
    pub fn serves(&self, event: &StoredEvent, now: Timestamp) -> bool {
        self.services.iter().all(|s| s.service.serves(event, now))
    }

    /// Names of the transports that run (announced or not; endpoints of
    /// riders such as `tor.relay` are not transports).
    pub fn transport_names(&self) -> std::collections::BTreeSet<String> {
        let mut names = lock(&self.unannounced).clone();
        names.extend(
            lock(&self.endpoints)
                .keys()
                .filter(|k| !k.contains('.'))
                .cloned(),
        );
        names
    }

    /// NIP-11 top-level fields contributed by services.
    pub fn service_nip11(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        for slot in &self.services {
            map.extend(slot.service.nip11_extra(self.now()));
        }
        map
    }
}

#[async_trait]
impl ServiceHost for Core {
    fn keys(&self) -> &Keys {
        &self.keys
    }
    fn endpoints(&self) -> BTreeMap<String, String> {
        lock(&self.endpoints).clone()
    }
    fn relay_url(&self) -> Option<String> {
        self.info.relay_url.clone()
    }
    fn service_nip11(&self) -> serde_json::Map<String, serde_json::Value> {
        Core::service_nip11(self)
    }
    fn persister(&self) -> &Arc<dyn Persister> {
        &self.persister
    }
    fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }
    async fn submit(&self, origin: LocalOrigin, event: Event) -> OkReply {
        self.process(origin.origin(), &event).await.0
    }
}
