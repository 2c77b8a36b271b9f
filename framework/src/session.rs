//! A [`Session`] is one remote party's conversation with the node: its
//! subscriptions, its NIP-42 state and its limits. It is the one door for
//! events from outside: transports feed it text and drain its
//! [`SessionOutbox`].
//!
//! A session works in both directions. A client sends client messages
//! ([`Session::handle_text`]). A federated peer is also a relay, on which
//! this node subscribes ([`Session::import_request`]); the events it sends
//! back ([`Session::handle_relay_text`]) pass the same per-session checks as
//! a client's `EVENT`s (rate, `created_at` window, size, auth), must match
//! the filters this node asked for, and then take the same pipeline.

use std::collections::HashMap;
use std::sync::Arc;

use nostr::{Event, EventId, Filter, JsonUtil, RelayMessage, SubscriptionId, Timestamp};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, Notify};

use crate::hub::{matches_any, Scope};
use crate::kinds;
use crate::origin::Origin;
use crate::pipeline::Core;
use crate::rate::TokenBucket;
use crate::service::Rejection;
use crate::wire::{self, ClientMessage};

/// Per-session limits. Transports take them from their config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionLimits {
    /// Open subscriptions per connection.
    pub max_subscriptions: usize,
    /// Filters in one `REQ` or `COUNT`.
    pub max_filters: usize,
    /// Largest `limit` honoured; bigger ones are lowered to this.
    pub max_limit: usize,
    /// `limit` used when a filter has none.
    pub default_limit: usize,
    /// Longest subscription id.
    pub max_subid_length: usize,
    /// Oldest accepted `created_at`, in seconds before now (0: no bound).
    pub created_at_lower_limit: u64,
    /// Newest accepted `created_at`, in seconds after now (0: no bound).
    pub created_at_upper_limit: u64,
    /// Sustained `EVENT`s per second per connection (0: unlimited).
    pub events_per_second: f64,
    /// Burst of `EVENT`s allowed above the sustained rate.
    pub event_burst: u32,
    /// Require NIP-42 authentication before `EVENT`, `REQ` and `COUNT`.
    pub auth_required: bool,
    /// Largest event, in bytes of its JSON (0: no bound beyond the transport's).
    pub max_event_bytes: usize,
    /// Most values in one filter's `ids`, `authors`, `kinds` or any one tag list.
    pub max_filter_values: usize,
    /// Sustained `REQ`s and `COUNT`s per second per connection (0: unlimited).
    pub queries_per_second: f64,
    /// Burst of `REQ`s and `COUNT`s allowed above the sustained rate.
    pub query_burst: u32,
    /// `EVENT`s of one connection checked and stored at the same time, so
    /// that a client that pipelines fills the store's group commits. Their
    /// `OK`s may come back in another order than the `EVENT`s; every other
    /// message waits until the connection's `EVENT`s before it are done.
    /// 1: one at a time, in order.
    pub events_in_flight: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_subscriptions: 20,
            max_filters: 10,
            max_limit: 500,
            default_limit: 500,
            max_subid_length: 64,
            created_at_lower_limit: 0,
            created_at_upper_limit: 900,
            events_per_second: 0.0,
            event_burst: 50,
            auth_required: false,
            max_event_bytes: 65_536,
            max_filter_values: 1_000,
            queries_per_second: 0.0,
            query_burst: 50,
            events_in_flight: 1,
        }
    }
}

impl SessionLimits {
    /// Read a limits table over a transport's own `defaults`: the keys it
    /// leaves out keep the transport's values, not [`SessionLimits::default`]
    /// (so setting one limit does not quietly lift the others). For
    /// `#[serde(deserialize_with = ...)]` on a transport's `limits` field.
    pub fn deserialize_over<'de, D: serde::Deserializer<'de>>(
        d: D,
        defaults: SessionLimits,
    ) -> std::result::Result<SessionLimits, D::Error> {
        use serde::de::Error as _;
        use serde::Deserialize as _;
        let given = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut table = match serde_json::to_value(defaults) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err(D::Error::custom("session limits are not a table")),
        };
        table.extend(given);
        serde_json::from_value(serde_json::Value::Object(table)).map_err(D::Error::custom)
    }
}

/// Something for the transport to send, or a request to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A NIP-01 relay message, as JSON text.
    Message(String),
    /// The node wants this connection closed (subscriber too slow).
    Kick,
}

/// The relay-to-client side of a session.
#[derive(Debug)]
pub struct SessionOutbox {
    rx: mpsc::Receiver<String>,
    kick: Arc<Notify>,
}

impl SessionOutbox {
    pub(crate) fn new(rx: mpsc::Receiver<String>, kick: Arc<Notify>) -> Self {
        SessionOutbox { rx, kick }
    }
    /// The next message if one is queued right now, without waiting. Lets a
    /// transport write a burst (a `REQ`'s history) with one flush.
    pub fn try_next(&mut self) -> Option<String> {
        self.rx.try_recv().ok()
    }
    /// The next thing to send; `None` once the session is gone and drained.
    pub async fn next(&mut self) -> Option<Outgoing> {
        tokio::select! {
            biased;
            _ = self.kick.notified() => Some(Outgoing::Kick),
            m = self.rx.recv() => m.map(Outgoing::Message),
        }
    }
}

/// Most messages [`Session::send_burst`] queues at once.
const BURST: usize = 64;

/// What became of one relay message that a federated peer sent this node.
#[derive(Debug, Clone, PartialEq)]
pub enum Imported {
    /// A new event, stored and distributed.
    Stored(EventId),
    /// An event this node already had.
    Duplicate(EventId),
    /// An event refused by the session's checks, the import filters or the
    /// pipeline; nothing was stored. The reason carries a NIP-01 prefix.
    Dropped(String),
    /// Not an event of an import subscription (`EOSE`, `CLOSED`, `NOTICE`, ...).
    Other(Box<RelayMessage<'static>>),
}

/// The `CLOSED` reason for a failed store query: a query the store refuses
/// (too broad, unsupported) says why; a store failure says only that.
fn query_failed(e: crate::Error) -> Rejection {
    match e {
        crate::Error::Invalid(m) => Rejection::invalid(m),
        crate::Error::Unsupported(m) => Rejection::unsupported(m),
        e => {
            tracing::warn!(error = %e, "query failed");
            Rejection::error("could not read the store")
        }
    }
}

/// One remote party's conversation with the node.
pub struct Session {
    core: Arc<Core>,
    id: u64,
    origin: Origin,
    limits: SessionLimits,
    challenge: String,
    relay_urls: Vec<url::Url>,
    scope: Scope,
    tx: mpsc::Sender<String>,
    bucket: TokenBucket,
    query_bucket: TokenBucket,
    /// Permits for the connection's `EVENT`s in flight (`events_in_flight`).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Subscriptions this node holds on the remote relay, with their filters.
    imports: HashMap<SubscriptionId, Vec<Filter>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.core.hub.close(self.id);
        tracing::debug!(session = self.id, "session closed");
    }
}

/// `events_in_flight` within 1..=4096, whatever the config says.
fn in_flight_permits(limits: &SessionLimits) -> u32 {
    limits.events_in_flight.clamp(1, 4096) as u32
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // A failing OS RNG leaves zeros; the challenge then is still unique per time.
    if getrandom::getrandom(&mut buf).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        buf.iter_mut()
            .zip(t.to_le_bytes())
            .for_each(|(b, t)| *b = t);
    }
    hex::encode(buf)
}

impl Session {
    pub(crate) fn new(
        core: Arc<Core>,
        id: u64,
        origin: Origin,
        limits: SessionLimits,
        scope: Scope,
        tx: mpsc::Sender<String>,
    ) -> Self {
        let relay_urls = core
            .info
            .relay_url
            .iter()
            .filter_map(|u| url::Url::parse(u).ok())
            .collect();
        Session {
            bucket: TokenBucket::new(limits.events_per_second, limits.event_burst),
            query_bucket: TokenBucket::new(limits.queries_per_second, limits.query_burst),
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                in_flight_permits(&limits) as usize
            )),
            core,
            id,
            origin,
            limits,
            challenge: random_hex(16),
            relay_urls,
            scope,
            tx,
            imports: HashMap::new(),
        }
    }

    /// The session id (unique in this node's run).
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Who this session is, including its NIP-42 pubkey once authenticated.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
    /// The NIP-42 challenge of this session.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }
    /// Queue `["AUTH", <challenge>]` for the client.
    pub async fn send_auth_challenge(&self) {
        let msg = RelayMessage::auth(self.challenge.clone()).as_json();
        self.send(msg).await;
    }
    /// Queue a `NOTICE`.
    pub async fn notice(&self, text: impl Into<String>) {
        self.send(RelayMessage::notice(text.into()).as_json()).await;
    }

    async fn send(&self, msg: String) {
        // The receiver is gone only when the transport dropped the connection.
        let _ = self.tx.send(msg).await;
    }

    /// Queue `msgs` in groups of [`BURST`]: room for a group is reserved
    /// first, so the group reaches the outbox at once and the transport can
    /// drain it before one flush. Groups stay small so that a session
    /// waiting for room does not hold back fan-out to the same outbox for
    /// long.
    async fn send_burst(&self, msgs: Vec<String>) {
        let mut msgs = msgs.into_iter().peekable();
        while msgs.peek().is_some() {
            let room = msgs.len().min(BURST).min(self.tx.max_capacity());
            // The receiver is gone only when the transport dropped the connection.
            let Ok(permits) = self.tx.reserve_many(room).await else {
                return;
            };
            for (permit, msg) in permits.zip(msgs.by_ref()) {
                permit.send(msg);
            }
        }
    }

    async fn ok(&self, id: EventId, accepted: bool, message: impl Into<String>) {
        self.send(RelayMessage::ok(id, accepted, message.into()).as_json())
            .await;
    }

    async fn closed(&self, sub: &SubscriptionId, rejection: &Rejection) {
        self.send(RelayMessage::closed(sub.clone(), rejection.to_string()).as_json())
            .await;
    }

    /// Handle one client message (a NIP-01 JSON array). Replies go to the outbox.
    pub async fn handle_text(&mut self, text: &str) {
        let parts: Vec<&RawValue> = match serde_json::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .notice(format!("invalid: message is not a JSON array: {e}"))
                    .await
            }
        };
        let verb: String = match parts
            .first()
            .map(|v| serde_json::from_str::<String>(v.get()))
        {
            Some(Ok(v)) => v,
            _ => {
                return self
                    .notice("invalid: the first element must be the message type")
                    .await
            }
        };
        if verb != "EVENT" {
            self.settle().await;
        }
        match verb.as_str() {
            "EVENT" => self.on_event(&parts).await,
            "REQ" => self.on_req(&parts, false).await,
            "COUNT" => self.on_req(&parts, true).await,
            "CLOSE" => self.on_close(&parts).await,
            "AUTH" => self.on_auth(&parts).await,
            other => {
                self.notice(format!(
                    "unsupported: message type `{}`",
                    truncate(other, 32)
                ))
                .await
            }
        }
    }

    /// Parse an event, replying `OK false` (when an id is readable) or `NOTICE`.
    async fn parse_event(&self, parts: &[&RawValue], verb: &str) -> Option<Event> {
        if parts.len() != 2 {
            self.notice(format!("invalid: {verb} takes exactly one event"))
                .await;
            return None;
        }
        match Event::from_json(parts[1].get()) {
            Ok(e) => Some(e),
            Err(err) => {
                let id = serde_json::from_str::<serde_json::Value>(parts[1].get())
                    .ok()
                    .and_then(|v| {
                        v.get("id")
                            .and_then(|i| i.as_str())
                            .and_then(|s| EventId::from_hex(s).ok())
                    });
                match id {
                    Some(id) => {
                        self.ok(id, false, format!("invalid: malformed event: {err}"))
                            .await
                    }
                    None => {
                        self.notice(format!("invalid: malformed event: {err}"))
                            .await
                    }
                }
                None
            }
        }
    }

    fn check_created_at(&self, created_at: Timestamp) -> Result<(), Rejection> {
        let now = self.core.now().as_secs();
        let t = created_at.as_secs();
        let lower = self.limits.created_at_lower_limit;
        let upper = self.limits.created_at_upper_limit;
        if lower > 0 && t < now.saturating_sub(lower) {
            return Err(Rejection::invalid(format!(
                "created_at is more than {lower} seconds in the past"
            )));
        }
        if upper > 0 && t > now.saturating_add(upper) {
            return Err(Rejection::invalid(format!(
                "created_at is more than {upper} seconds in the future"
            )));
        }
        Ok(())
    }

    /// The checks a session applies to every event from its remote end,
    /// before the pipeline: rate, auth, size and the `created_at` window.
    fn admit_remote(&mut self, event: &Event, size: usize) -> Result<(), Rejection> {
        if !self.bucket.take() {
            return Err(Rejection::rate_limited("too many events; slow down"));
        }
        if self.limits.auth_required && self.origin.authenticated.is_none() {
            return Err(Rejection::auth_required("authenticate with AUTH first"));
        }
        let max = self.limits.max_event_bytes;
        if max > 0 && size > max {
            return Err(Rejection::invalid(format!(
                "event of {size} bytes (at most {max})"
            )));
        }
        self.check_created_at(event.created_at)
    }

    async fn on_event(&mut self, parts: &[&RawValue]) {
        let Some(event) = self.parse_event(parts, "EVENT").await else {
            self.core
                .count_rejected(&self.origin, None, crate::Prefix::Invalid);
            return;
        };
        if let Err(r) = self.admit_remote(&event, parts[1].get().len()) {
            self.core
                .count_rejected(&self.origin, Some(event.kind), r.prefix);
            return self.ok(event.id, false, r.to_string()).await;
        }
        // Waits while the connection has `events_in_flight` EVENTs in the
        // pipeline: reading stops, and the client is pushed back.
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let (core, origin, tx) = (self.core.clone(), self.origin.clone(), self.tx.clone());
        let ingest = async move {
            let (reply, fresh) = core.ingest(&origin, &event).await;
            let ok = RelayMessage::ok(reply.event_id, reply.accepted, reply.message);
            // The receiver is gone only when the transport dropped the connection.
            let _ = tx.send(ok.as_json()).await;
            if fresh {
                core.distribute(&origin, &event).await;
            }
            drop(permit);
        };
        if in_flight_permits(&self.limits) > 1 {
            tokio::spawn(ingest);
        } else {
            ingest.await;
        }
    }

    /// Wait until every `EVENT` this connection sent before is done.
    async fn settle(&self) {
        drop(
            self.in_flight
                .acquire_many(in_flight_permits(&self.limits))
                .await,
        );
    }

    /// Subscribe on the remote relay (a federated peer) to `filters`: returns
    /// the `REQ` to send it. The events it sends back for `sub` are accepted
    /// by [`Self::handle_relay_text`] only if they match one of `filters`.
    pub fn import_request(&mut self, sub: &str, filters: Vec<Filter>) -> String {
        let sub = SubscriptionId::new(sub);
        let req = ClientMessage::req(sub.clone(), filters.clone()).as_json();
        self.imports.insert(sub, filters);
        req
    }

    /// Handle one relay message from the remote end (a federated peer
    /// answering an [`Self::import_request`]). An `EVENT` of an import
    /// subscription passes the session's checks and the import filters, then
    /// the pipeline; anything refused is dropped, counted as rejected, and
    /// reported in the result. Nothing is sent back: a relay gets no `OK`.
    pub async fn handle_relay_text(&mut self, text: &str) -> Imported {
        let msg = match wire::parse_relay(text) {
            Ok(m) => m,
            Err(e) => {
                self.core
                    .count_rejected(&self.origin, None, crate::Prefix::Invalid);
                return Imported::Dropped(format!("invalid: {e}"));
            }
        };
        let RelayMessage::Event {
            subscription_id,
            event,
        } = msg
        else {
            return Imported::Other(Box::new(msg));
        };
        let event = event.into_owned();
        if let Err(r) = self.admit_import(&subscription_id, &event, text.len()) {
            self.core
                .count_rejected(&self.origin, Some(event.kind), r.prefix);
            return Imported::Dropped(r.to_string());
        }
        let (reply, fresh) = self.core.process(&self.origin, &event).await;
        if fresh {
            Imported::Stored(event.id)
        } else if reply.accepted {
            Imported::Duplicate(event.id)
        } else {
            Imported::Dropped(reply.message)
        }
    }

    fn admit_import(
        &mut self,
        sub: &SubscriptionId,
        event: &Event,
        size: usize,
    ) -> Result<(), Rejection> {
        let Some(filters) = self.imports.get(sub) else {
            return Err(Rejection::invalid(format!(
                "`{}` is not an import subscription",
                truncate(sub.as_str(), 64)
            )));
        };
        if !matches_any(filters, event) {
            return Err(Rejection::blocked(
                "event outside this peer's import filters",
            ));
        }
        self.admit_remote(event, size)
    }

    async fn on_req(&mut self, parts: &[&RawValue], count: bool) {
        let verb = if count { "COUNT" } else { "REQ" };
        let sub = match parts
            .get(1)
            .map(|v| serde_json::from_str::<String>(v.get()))
        {
            Some(Ok(s)) => s,
            _ => {
                return self
                    .notice(format!("invalid: {verb} needs a subscription id string"))
                    .await
            }
        };
        let sub_id = SubscriptionId::new(&sub);
        if sub.is_empty() || sub.len() > self.limits.max_subid_length {
            let r = Rejection::invalid(format!(
                "subscription id must be 1 to {} characters",
                self.limits.max_subid_length
            ));
            return self
                .closed(&SubscriptionId::new(truncate(&sub, 64)), &r)
                .await;
        }
        let raw_filters = &parts[2..];
        if raw_filters.is_empty() || raw_filters.len() > self.limits.max_filters {
            let r = Rejection::invalid(format!(
                "{verb} takes 1 to {} filters",
                self.limits.max_filters
            ));
            return self.closed(&sub_id, &r).await;
        }
        // A query costs one token per started 8 KiB of filters: parsing a
        // thousand authors is work, whoever sends them.
        let size: usize = raw_filters.iter().map(|r| r.get().len()).sum();
        let tokens = u32::try_from(1 + size / 8192).unwrap_or(u32::MAX);
        if !self.query_bucket.take_n(tokens) {
            let r = Rejection::rate_limited(format!(
                "at most {} REQ and COUNT per second",
                self.limits.queries_per_second
            ));
            return self.closed(&sub_id, &r).await;
        }
        let mut filters = Vec::with_capacity(raw_filters.len());
        for raw in raw_filters {
            let checked = Filter::from_json(raw.get())
                .map_err(|e| Rejection::invalid(format!("malformed filter: {e}")))
                .and_then(|f| self.check_filter(f));
            match checked {
                Ok(f) => filters.push(f),
                Err(r) => return self.closed(&sub_id, &r).await,
            }
        }
        if self.limits.auth_required && self.origin.authenticated.is_none() {
            return self
                .closed(
                    &sub_id,
                    &Rejection::auth_required("authenticate with AUTH first"),
                )
                .await;
        }
        if let Err(r) = self.core.admit_query(&self.origin, &filters).await {
            return self.closed(&sub_id, &r).await;
        }
        let now = self.core.now();
        if count {
            return match self.core.persister.count(&filters, now).await {
                Ok(n) => {
                    let msg = RelayMessage::count(sub_id, n as usize).as_json();
                    self.send(msg).await
                }
                Err(e) => self.closed(&sub_id, &query_failed(e)).await,
            };
        }
        // Subscribe before reading history so nothing published meanwhile is missed.
        let max = self.limits.max_subscriptions;
        if !self
            .core
            .hub
            .subscribe(self.id, sub_id.clone(), filters.clone().into(), max)
        {
            let r = Rejection::blocked(format!("at most {max} open subscriptions per connection"));
            return self.closed(&sub_id, &r).await;
        }
        match self.core.persister.query_stored(&filters, now).await {
            Ok(events) => {
                let mut replies: Vec<String> = events
                    .iter()
                    .filter(|s| self.core.serves(s, now) && self.scope.allows_stored(s))
                    // The stored JSON, not serialized again.
                    .map(|s| wire::event_message(sub_id.as_str(), s.json()))
                    .collect();
                replies.push(RelayMessage::eose(sub_id.clone()).as_json());
                self.send_burst(replies).await;
                // Live events that arrived while the history was read go
                // out now, after EOSE, each once: one that was stored in
                // time to be in the history is not sent again.
                self.core.hub.primed(self.id, &sub_id, |id| {
                    events.iter().any(|s| s.id() == Some(*id))
                });
            }
            Err(e) => {
                self.core.hub.unsubscribe(self.id, &sub_id);
                self.closed(&sub_id, &query_failed(e)).await;
            }
        }
    }

    /// Apply the limit defaults and caps to one filter, or refuse it.
    fn check_filter(&self, mut f: Filter) -> Result<Filter, Rejection> {
        if f.search.is_some() {
            return Err(Rejection::unsupported("NIP-50 search is not supported"));
        }
        let max = self.limits.max_filter_values;
        let too_many = [
            f.ids.as_ref().map_or(0, |v| v.len()),
            f.authors.as_ref().map_or(0, |v| v.len()),
            f.kinds.as_ref().map_or(0, |v| v.len()),
        ]
        .into_iter()
        .chain(f.generic_tags.values().map(|v| v.len()))
        .any(|n| n > max);
        if too_many {
            return Err(Rejection::invalid(format!(
                "a filter takes at most {max} ids, authors, kinds or values of one tag"
            )));
        }
        let limit = f.limit.unwrap_or(self.limits.default_limit);
        f.limit = Some(limit.min(self.limits.max_limit));
        Ok(f)
    }

    async fn on_close(&mut self, parts: &[&RawValue]) {
        match (
            parts.len(),
            parts
                .get(1)
                .map(|v| serde_json::from_str::<String>(v.get())),
        ) {
            (2, Some(Ok(sub))) => self
                .core
                .hub
                .unsubscribe(self.id, &SubscriptionId::new(sub)),
            _ => {
                self.notice("invalid: CLOSE takes exactly one subscription id")
                    .await
            }
        }
    }

    async fn on_auth(&mut self, parts: &[&RawValue]) {
        let Some(event) = self.parse_event(parts, "AUTH").await else {
            return;
        };
        let verdict = self.check_auth(&event);
        match verdict {
            Ok(()) => {
                self.origin.authenticated = Some(event.pubkey);
                self.core.hub.set_origin(self.id, &self.origin);
                tracing::debug!(session = self.id, pubkey = %event.pubkey, "NIP-42 authenticated");
                self.ok(event.id, true, "").await;
            }
            Err(r) => self.ok(event.id, false, r.to_string()).await,
        }
    }

    fn check_auth(&self, event: &Event) -> Result<(), Rejection> {
        if event.kind.as_u16() != kinds::CLIENT_AUTH {
            return Err(Rejection::invalid("AUTH needs a kind 22242 event"));
        }
        if event.verify().is_err() {
            return Err(Rejection::invalid("bad id or signature"));
        }
        let now = self.core.now().as_secs();
        if now.abs_diff(event.created_at.as_secs()) > 600 {
            return Err(Rejection::invalid(
                "created_at is more than 10 minutes from now",
            ));
        }
        if kinds::tag_value(event, "challenge") != Some(self.challenge.as_str()) {
            return Err(Rejection::invalid("challenge does not match"));
        }
        let relay = kinds::tag_value(event, "relay")
            .and_then(|r| url::Url::parse(r).ok())
            .ok_or_else(|| Rejection::invalid("missing or malformed relay tag"))?;
        let same = |u: &url::Url| {
            u.host_str().map(str::to_ascii_lowercase)
                == relay.host_str().map(str::to_ascii_lowercase)
                && u.port_or_known_default() == relay.port_or_known_default()
        };
        // Only the configured public URL counts; what the client says it
        // dialed (its Host header) does not, or an AUTH signed for another
        // relay could be replayed here. With no URL configured, only
        // loopback names are accepted.
        let accepted = if self.relay_urls.is_empty() {
            is_loopback(&relay)
        } else {
            self.relay_urls.iter().any(same)
        };
        if !accepted {
            return Err(Rejection::invalid("relay tag names another relay"));
        }
        Ok(())
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
