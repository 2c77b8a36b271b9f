//! The [`Service`] trait: policy and state that plug into the node pipeline.
//!
//! # For implementers
//!
//! A service is built by the [`crate::Registry`] from its config section and
//! handed to the node. Every hook has a no-op default, so a service overrides
//! only what it needs:
//!
//! - [`Service::admit_event`] runs in admission order (civkitd: by each
//!   service table's `order` key) for every event that passed
//!   the id/signature/duplicate/expiration checks, before it is stored. The
//!   first rejection wins and becomes the client's `OK false`. A service
//!   that must record something only if the event is stored (a spent
//!   credential) does not write during admission: it returns
//!   [`Admission::AcceptClaiming`], and the node takes the keys in the same
//!   atomic write as the event.
//! - [`Service::admit_query`] runs for every `REQ` and `COUNT`; a rejection
//!   becomes `CLOSED`.
//! - [`Service::on_stored`] runs after the event is durable, `OK` was sent and
//!   subscribers got it. Slow work here delays the sender's next message, so
//!   spawn if it is long.
//! - [`Service::run`] is spawned once at start for background work (sweeps,
//!   polling). Return when `shutdown` fires.
//! - [`Service::admin`] answers `POST /services/<instance>/<command>` on the
//!   admin API.
//!
//! Hooks get a [`ServiceContext`]: publish signed events, read and write the
//! service's own key-value namespace, read the clock, use the node's keys.
//!
//! Rejections carry a NIP-01 prefix, chosen through [`Rejection`]'s
//! constructors, so clients can act on them:
//!
//! ```ignore
//! // Wrong: free text the client cannot interpret.
//! Admission::Reject("too fast".into())
//! // Right:
//! Admission::Reject(Rejection::rate_limited("at most 10 events per minute"))
//! ```
//!
//! A service must never panic on input: events and filters come from strangers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use nostr::{Event, EventBuilder, Filter, Keys, Timestamp};

use crate::clock::Clock;
use crate::origin::{LocalOrigin, Origin};
use crate::shutdown::Shutdown;
use crate::stored::StoredEvent;
use crate::{Error, Persister, Result};

/// NIP-01 machine-readable prefixes for `OK false` and `CLOSED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Duplicate,
    Pow,
    Blocked,
    RateLimited,
    Invalid,
    Restricted,
    PaymentRequired,
    AuthRequired,
    Unsupported,
    Error,
}

impl Prefix {
    /// The wire spelling, without the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::Duplicate => "duplicate",
            Prefix::Pow => "pow",
            Prefix::Blocked => "blocked",
            Prefix::RateLimited => "rate-limited",
            Prefix::Invalid => "invalid",
            Prefix::Restricted => "restricted",
            Prefix::PaymentRequired => "payment-required",
            Prefix::AuthRequired => "auth-required",
            Prefix::Unsupported => "unsupported",
            Prefix::Error => "error",
        }
    }
}

/// A refusal with its NIP-01 prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub prefix: Prefix,
    pub reason: String,
}

macro_rules! rejection_ctor {
    ($($name:ident => $prefix:ident),* $(,)?) => {
        impl Rejection {
            $(
                #[doc = concat!("A `", stringify!($name), "` rejection.")]
                pub fn $name(reason: impl Into<String>) -> Self {
                    Rejection { prefix: Prefix::$prefix, reason: reason.into() }
                }
            )*
        }
    };
}

rejection_ctor!(
    blocked => Blocked,
    rate_limited => RateLimited,
    restricted => Restricted,
    invalid => Invalid,
    pow => Pow,
    payment_required => PaymentRequired,
    auth_required => AuthRequired,
    unsupported => Unsupported,
    error => Error,
    duplicate => Duplicate,
);

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.prefix.as_str(), self.reason)
    }
}

/// A service's verdict on an event or query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Accept,
    /// Accept only if these keys of the service's own namespace are still
    /// free. They are written with the event's durable write, atomically: if
    /// a later service or the store refuses the event, or the node crashes
    /// before the write, nothing is claimed. If a key is taken by then, the
    /// event is refused with `taken`. (A credential's spend is a claim.)
    /// For queries this is the same as `Accept`.
    AcceptClaiming {
        /// `(key, value)` pairs.
        keys: Vec<(Vec<u8>, Vec<u8>)>,
        taken: Rejection,
    },
    Reject(Rejection),
    /// Tell the sender `OK true` but neither store nor deliver the event
    /// (strfry's `shadowReject`: a spammer is not told to try elsewhere).
    /// Later services are not asked.
    ShadowReject,
}

/// A market service or policy plugged into the node.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// NIPs this service adds to NIP-11 `supported_nips`.
    fn supported_nips(&self) -> Vec<u16> {
        Vec::new()
    }
    /// Fields this service adds to NIP-11 `limitation` (for example `min_pow_difficulty`).
    fn nip11_limitation(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    /// Top-level fields this service adds to the NIP-11 document (for example
    /// a board's published policy), at `now` by the node's clock.
    fn nip11_extra(&self, _now: Timestamp) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    /// Whether a stored event is still served to new subscribers at `now`
    /// (a service can hide events that are stale by its own rules; NIP-40
    /// expiry is handled by the node). Called for every stored event a `REQ`
    /// returns; keep it cheap and free of I/O. [`StoredEvent::kind`] costs
    /// nothing; [`StoredEvent::event`] decodes the event, so look at the
    /// kind first and decode only the kinds you judge.
    fn serves(&self, _event: &StoredEvent, _now: Timestamp) -> bool {
        true
    }
    /// Accept or reject an event before it is stored.
    async fn admit_event(
        &self,
        _ctx: &ServiceContext,
        _origin: &Origin,
        _event: &Event,
    ) -> Admission {
        Admission::Accept
    }
    /// Accept or reject a `REQ` or `COUNT`.
    async fn admit_query(
        &self,
        _ctx: &ServiceContext,
        _origin: &Origin,
        _filters: &[Filter],
    ) -> Admission {
        Admission::Accept
    }
    /// An event this service admitted with [`Admission::AcceptClaiming`]
    /// was refused because one of its keys was already taken (a credential
    /// spent twice). The event was not stored; the refusal was sent.
    fn on_claim_taken(&self, _ctx: &ServiceContext, _event: &Event) {}
    /// React to an event that was stored (or, for ephemeral kinds, delivered).
    async fn on_stored(&self, _ctx: &ServiceContext, _origin: &Origin, _event: &Event) {}
    /// Background work, spawned once when the node starts.
    async fn run(&self, _ctx: ServiceContext, _shutdown: Shutdown) -> Result<()> {
        Ok(())
    }
    /// Answer an admin command.
    async fn admin(
        &self,
        _ctx: &ServiceContext,
        command: &str,
        _args: serde_json::Value,
    ) -> Result<serde_json::Value> {
        Err(Error::Unsupported(format!("admin command `{command}`")))
    }
}

/// The answer to an `EVENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkReply {
    pub event_id: nostr::EventId,
    pub accepted: bool,
    pub message: String,
}

/// What the node offers its services. The pipeline implements it; a
/// [`ServiceContext`] reaches it through a weak pointer, so this module does
/// not depend on the node.
#[async_trait]
pub(crate) trait ServiceHost: Send + Sync + 'static {
    fn keys(&self) -> &Keys;
    fn endpoints(&self) -> BTreeMap<String, String>;
    fn relay_url(&self) -> Option<String>;
    fn service_nip11(&self) -> serde_json::Map<String, serde_json::Value>;
    fn persister(&self) -> &Arc<dyn Persister>;
    fn is_leader(&self) -> bool;
    async fn submit(&self, origin: LocalOrigin, event: Event) -> OkReply;
}

/// What a service can reach of the node.
#[derive(Clone)]
pub struct ServiceContext {
    pub(crate) name: Arc<str>,
    pub(crate) host: Weak<dyn ServiceHost>,
    pub(crate) clock: Arc<dyn Clock>,
    /// `created_at` of the last event published with [`Self::publish_replacing`].
    pub(crate) last_replacing: Arc<AtomicU64>,
}

impl fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceContext")
            .field("name", &self.name)
            .finish()
    }
}

impl ServiceContext {
    fn host(&self) -> Result<Arc<dyn ServiceHost>> {
        self.host.upgrade().ok_or(Error::Shutdown)
    }
    /// This service's instance name (also its key-value namespace).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Current time from the node's clock. Services read time only here, so
    /// tests drive them with a manual clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
    /// The node's clock, for components a service builds (it outlives the node).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
    /// The node's signing keys.
    pub fn keys(&self) -> Result<Keys> {
        Ok(self.host()?.keys().clone())
    }
    /// Where each transport listens (`relay` → `ws://127.0.0.1:7777`).
    pub fn endpoints(&self) -> Result<BTreeMap<String, String>> {
        Ok(self.host()?.endpoints())
    }
    /// The configured public relay URL, if any.
    pub fn relay_url(&self) -> Result<Option<String>> {
        Ok(self.host()?.relay_url())
    }
    /// Top-level NIP-11 fields of every service (a board folds other
    /// services' announcements into its policy).
    pub fn service_nip11(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        Ok(self.host()?.service_nip11())
    }
    /// Whether this node does the board-wide work now: always on a node
    /// with a store of its own; on nodes sharing a store, on the one that
    /// holds the board lease. Check it before each round of work that must
    /// happen once per board (republishing, rotations, sweeps).
    pub fn is_leader(&self) -> bool {
        self.host().is_ok_and(|h| h.is_leader())
    }
    /// The node's persister (for queries).
    pub fn persister(&self) -> Result<Arc<dyn Persister>> {
        Ok(self.host()?.persister().clone())
    }
    /// Sign with the node's keys and publish through the whole pipeline.
    pub async fn publish(&self, builder: EventBuilder) -> Result<OkReply> {
        let host = self.host()?;
        let event = builder
            .sign_with_keys(host.keys())
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(host.submit(LocalOrigin::service(&self.name), event).await)
    }
    /// Like [`Self::publish`], for a new version of a replaceable or
    /// addressable event: its `created_at` is strictly after the previous one
    /// published this way, so it replaces the last version even when both
    /// fall in the same second.
    pub async fn publish_replacing(&self, builder: EventBuilder) -> Result<OkReply> {
        let now = self.now().as_secs();
        let mut at = now;
        let _ = self
            .last_replacing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                at = now.max(last + 1);
                Some(at)
            });
        self.publish(builder.custom_created_at(Timestamp::from_secs(at)))
            .await
    }
    /// Read a key of this service's namespace.
    pub async fn kv_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.persister()?.kv_get(&self.name, key).await
    }
    /// Write a key of this service's namespace, durably.
    pub async fn kv_put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.persister()?.kv_put(&self.name, key, value).await
    }
    /// Write a key only if absent; `true` when written.
    pub async fn kv_insert_new(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.persister()?
            .kv_insert_new(&self.name, key, value)
            .await
    }
    /// Remove a key.
    pub async fn kv_delete(&self, key: &[u8]) -> Result<bool> {
        self.persister()?.kv_delete(&self.name, key).await
    }
    /// All pairs under a prefix.
    pub async fn kv_scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.persister()?.kv_scan(&self.name, prefix).await
    }
}
