//! The session and subscription registry, and the fan-out that reads it.
//!
//! Every open [`crate::Session`] has an entry here: its origin, its outbox
//! sender, its scope and its subscriptions. Subscriptions are indexed by the
//! most selective field of each filter (`ids`, then `authors`, then one tag,
//! then `kinds`), so a new event is tested only against the subscriptions that
//! could match it, not against all of them. [`FanOut::Linear`] keeps the
//! plain scan of every subscription, as the reference the index is tested and
//! benchmarked against.
//!
//! The registry lock is held only to find the targets; messages are queued
//! after it is released, so a slow subscriber never holds it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use nostr::filter::MatchEventOptions;
use nostr::{Event, EventId, Filter, Kind, PublicKey, SingleLetterTag, SubscriptionId, Timestamp};
use tokio::sync::{mpsc, Notify};
use tracing::warn;

use crate::origin::Origin;
use crate::stored::StoredEvent;
use crate::wire;

/// How the hub finds the subscriptions an event matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FanOut {
    /// Subscriptions indexed by ids, authors, tag values and kinds (the default).
    #[default]
    Indexed,
    /// Every filter of every subscription is tested (the reference, for benchmarks).
    Linear,
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

/// The relay-to-client queue of one session.
#[derive(Clone)]
pub(crate) struct SessionTx {
    pub tx: mpsc::Sender<String>,
    pub kick: Arc<Notify>,
}

struct SessionEntry {
    origin: Origin,
    connected_at: Timestamp,
    /// Subscription id to its key in `Registry::subs`.
    subs: HashMap<SubscriptionId, u64>,
    scope: Scope,
    out: SessionTx,
}

struct SubRecord {
    session: u64,
    id: SubscriptionId,
    filters: Arc<[Filter]>,
    /// Live events held back while the subscription's stored events are
    /// being read and sent (`Some`), so that none is sent twice or before
    /// `EOSE`; `None` once [`Hub::primed`] has released them.
    held: Held,
}

/// Live events held back for one subscription (see `SubRecord::held`).
type Held = Arc<Mutex<Option<Vec<(EventId, String)>>>>;

/// Most live events held back for one subscription while its stored events
/// are sent; a subscription that gathers more is treated as a slow reader.
const MAX_HELD: usize = 1024;

/// Where one filter is indexed.
#[derive(Debug, PartialEq, Eq, Hash, Clone)]
enum IndexKey {
    Id(EventId),
    Author(PublicKey),
    Tag(SingleLetterTag, String),
    Kind(Kind),
    Any,
}

/// The keys under which a filter is indexed. An event can match the filter
/// only if it has one of them, because each key comes from a field the
/// filter requires. Empty sets are "no constraint" in NIP-01 (nostr's
/// `match_event`), except for tags, where an empty value set matches nothing.
fn index_keys(filter: &Filter) -> Vec<IndexKey> {
    fn set<T>(s: &Option<BTreeSet<T>>) -> Option<&BTreeSet<T>> {
        s.as_ref().filter(|s| !s.is_empty())
    }
    if let Some(ids) = set(&filter.ids) {
        return ids.iter().map(|i| IndexKey::Id(*i)).collect();
    }
    if let Some(authors) = set(&filter.authors) {
        return authors.iter().map(|a| IndexKey::Author(*a)).collect();
    }
    if let Some((letter, values)) = filter.generic_tags.iter().min_by_key(|(_, v)| v.len()) {
        return values
            .iter()
            .map(|v| IndexKey::Tag(*letter, v.clone()))
            .collect();
    }
    if let Some(kinds) = set(&filter.kinds) {
        return kinds.iter().map(|k| IndexKey::Kind(*k)).collect();
    }
    vec![IndexKey::Any]
}

#[derive(Default)]
struct Index(HashMap<IndexKey, HashSet<u64>>);

impl Index {
    fn insert(&mut self, key: u64, filters: &[Filter]) {
        for k in filters.iter().flat_map(index_keys) {
            self.0.entry(k).or_default().insert(key);
        }
    }
    fn remove(&mut self, key: u64, filters: &[Filter]) {
        for k in filters.iter().flat_map(index_keys) {
            if let Some(set) = self.0.get_mut(&k) {
                set.remove(&key);
                if set.is_empty() {
                    self.0.remove(&k);
                }
            }
        }
    }
    /// Keys of the subscriptions that could match `event`, each once.
    fn candidates(&self, event: &Event) -> Vec<u64> {
        let mut out = Vec::new();
        let mut take = |k: &IndexKey| {
            if let Some(set) = self.0.get(k) {
                out.extend(set.iter().copied());
            }
        };
        take(&IndexKey::Id(event.id));
        take(&IndexKey::Author(event.pubkey));
        take(&IndexKey::Kind(event.kind));
        take(&IndexKey::Any);
        if !event.tags.is_empty() {
            for (letter, values) in event.tags.indexes() {
                for v in values {
                    take(&IndexKey::Tag(*letter, v.clone()));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<u64, SessionEntry>,
    subs: HashMap<u64, SubRecord>,
    index: Index,
    next_sub: u64,
}

impl Registry {
    fn remove_sub(&mut self, key: u64) {
        if let Some(rec) = self.subs.remove(&key) {
            self.index.remove(key, &rec.filters);
        }
    }
}

/// A matching subscription: its session, id, queue and held-back events.
type Target = (u64, SubscriptionId, SessionTx, Held);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registry of sessions and subscriptions of one node.
pub(crate) struct Hub {
    reg: RwLock<Registry>,
    next_session: AtomicU64,
    mode: FanOut,
}

/// What a session may receive (history and live alike).
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every event.
    Everything,
    /// Events matching one of these filters; none: nothing at all.
    Only(Arc<[Filter]>),
}

impl Scope {
    /// Events matching one of `filters` (an empty list allows nothing).
    pub fn only(filters: Vec<Filter>) -> Self {
        Scope::Only(filters.into())
    }
    /// True when a session with this scope may receive the event.
    pub fn allows(&self, event: &Event) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Only(filters) => matches_any(filters, event),
        }
    }
    /// [`Self::allows`] for a stored event, decoded only when the scope
    /// has filters (one that does not decode is not allowed).
    pub fn allows_stored(&self, stored: &StoredEvent) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Only(filters) => stored.event().is_ok_and(|e| matches_any(filters, e)),
        }
    }
}

/// True when one of `filters` matches the event (none: false).
pub(crate) fn matches_any(filters: &[Filter], event: &Event) -> bool {
    let opts = MatchEventOptions::default();
    filters.iter().any(|f| f.match_event(event, opts))
}

impl Hub {
    pub fn new(mode: FanOut) -> Self {
        Hub {
            reg: RwLock::default(),
            next_session: AtomicU64::new(1),
            mode,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.reg.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.reg.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a session; returns its id.
    pub fn open(&self, origin: Origin, now: Timestamp, scope: Scope, out: SessionTx) -> u64 {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let entry = SessionEntry {
            origin,
            connected_at: now,
            subs: HashMap::new(),
            scope,
            out,
        };
        self.write().sessions.insert(id, entry);
        id
    }

    pub fn close(&self, id: u64) {
        let mut reg = self.write();
        if let Some(entry) = reg.sessions.remove(&id) {
            for key in entry.subs.into_values() {
                reg.remove_sub(key);
            }
        }
    }

    pub fn set_origin(&self, id: u64, origin: &Origin) {
        if let Some(e) = self.write().sessions.get_mut(&id) {
            e.origin = origin.clone();
        }
    }

    /// Add or replace a subscription, unless the session already holds `max`
    /// others. Returns `false` when refused.
    pub fn subscribe(
        &self,
        session: u64,
        sub: SubscriptionId,
        filters: Arc<[Filter]>,
        max: usize,
    ) -> bool {
        let mut reg = self.write();
        let reg = &mut *reg;
        let Some(entry) = reg.sessions.get_mut(&session) else {
            return false;
        };
        let old = entry.subs.get(&sub).copied();
        if old.is_none() && entry.subs.len() >= max {
            return false;
        }
        reg.next_sub += 1;
        let key = reg.next_sub;
        entry.subs.insert(sub.clone(), key);
        if let Some(old) = old {
            reg.remove_sub(old);
        }
        reg.index.insert(key, &filters);
        reg.subs.insert(
            key,
            SubRecord {
                session,
                id: sub,
                filters,
                held: Arc::new(Mutex::new(Some(Vec::new()))),
            },
        );
        true
    }

    pub fn unsubscribe(&self, session: u64, sub: &SubscriptionId) {
        let mut reg = self.write();
        if let Some(key) = reg
            .sessions
            .get_mut(&session)
            .and_then(|e| e.subs.remove(sub))
        {
            reg.remove_sub(key);
        }
    }

    /// Total subscriptions open on the node.
    pub fn subscription_count(&self) -> usize {
        self.read().subs.len()
    }

    /// Open sessions per transport.
    pub fn connection_counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in self.read().sessions.values() {
            *out.entry(e.origin.transport.to_string()).or_default() += 1;
        }
        out
    }

    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut list: Vec<ConnectionInfo> = self
            .read()
            .sessions
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

    /// The subscriptions `event` matches, as (session, subscription id, queue).
    fn targets(&self, event: &Event) -> Vec<Target> {
        let reg = self.read();
        let mut out = Vec::new();
        let mut push = |rec: &SubRecord, entry: &SessionEntry| {
            if entry.scope.allows(event) && matches_any(&rec.filters, event) {
                out.push((
                    rec.session,
                    rec.id.clone(),
                    entry.out.clone(),
                    rec.held.clone(),
                ));
            }
        };
        match self.mode {
            FanOut::Indexed => {
                for key in reg.index.candidates(event) {
                    if let Some(rec) = reg.subs.get(&key) {
                        if let Some(entry) = reg.sessions.get(&rec.session) {
                            push(rec, entry);
                        }
                    }
                }
            }
            FanOut::Linear => {
                for (session, entry) in &reg.sessions {
                    for (sub, key) in &entry.subs {
                        if let Some(rec) = reg.subs.get(key) {
                            debug_assert_eq!((rec.session, &rec.id), (*session, sub));
                            push(rec, entry);
                        }
                    }
                }
            }
        }
        out
    }

    /// Queue `["EVENT", sub, event]` for every matching subscription. The
    /// event is serialized once, and only when something matches. A session
    /// whose queue is full is kicked.
    pub fn fan_out(&self, event: &Event) {
        let targets = self.targets(event);
        if targets.is_empty() {
            return;
        }
        let json = crate::canonical::event_json(event);
        let mut kicked: Vec<u64> = Vec::new();
        for (session, sub, out, held) in targets {
            if kicked.contains(&session) {
                continue;
            }
            let message = wire::event_message(sub.as_str(), &json);
            let mut held = lock(&held);
            let sent = match held.as_mut() {
                Some(queue) if queue.len() < MAX_HELD => {
                    queue.push((event.id, message));
                    true
                }
                Some(_) => false,
                None => !matches!(
                    out.tx.try_send(message),
                    Err(mpsc::error::TrySendError::Full(_))
                ),
            };
            if !sent {
                warn!(session, "subscriber too slow; disconnecting");
                out.kick.notify_one();
                kicked.push(session);
            }
        }
    }

    /// The stored events of a subscription are queued (through `EOSE`):
    /// send the live events held back meanwhile, leaving out those that
    /// were among the stored ones, and deliver the next ones directly.
    pub fn primed(&self, session: u64, sub: &SubscriptionId, stored: impl Fn(&EventId) -> bool) {
        let (held, out) = {
            let reg = self.read();
            let Some(entry) = reg.sessions.get(&session) else {
                return;
            };
            let Some(rec) = entry.subs.get(sub).and_then(|k| reg.subs.get(k)) else {
                return;
            };
            (rec.held.clone(), entry.out.clone())
        };
        let mut held = lock(&held);
        for (id, message) in held.take().into_iter().flatten() {
            if stored(&id) {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = out.tx.try_send(message) {
                warn!(session, "subscriber too slow; disconnecting");
                out.kick.notify_one();
                return;
            }
        }
    }

    /// The (session, subscription) pairs `event` matches; for the test that
    /// compares the index with the linear scan.
    #[cfg(test)]
    fn matching(&self, event: &Event) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = self
            .targets(event)
            .into_iter()
            .map(|(s, id, _, _)| (s, id.to_string()))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nostr::{EventBuilder, JsonUtil, Keys, Tag};

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn hub_pair() -> (Hub, Hub) {
        (Hub::new(FanOut::Indexed), Hub::new(FanOut::Linear))
    }

    fn open(hub: &Hub, scope: Scope) -> u64 {
        let (tx, _rx) = mpsc::channel(1);
        // The receiver is dropped: sends fail with Closed, which fan_out ignores.
        open_to(hub, scope, tx, Arc::default())
    }

    fn open_to(hub: &Hub, scope: Scope, tx: mpsc::Sender<String>, kick: Arc<Notify>) -> u64 {
        hub.open(
            Origin::new("t", crate::Source::Memory { client: 0 }),
            Timestamp::from_secs(0),
            scope,
            SessionTx { tx, kick },
        )
    }

    #[test]
    fn live_events_during_a_history_read_come_after_it_each_once() {
        let hub = Hub::new(FanOut::Indexed);
        let (tx, mut rx) = mpsc::channel(64);
        let s = open_to(&hub, Scope::Everything, tx, Arc::default());
        let sub = SubscriptionId::new("s");
        let f: Arc<[Filter]> = vec![Filter::new().kind(Kind::TextNote)].into();
        assert!(hub.subscribe(s, sub.clone(), f, 10));
        let k = Keys::generate();
        let note = |c: &str| EventBuilder::text_note(c).sign_with_keys(&k).unwrap();
        let (in_history, after_read, live) = (note("1"), note("2"), note("3"));
        // Published while the history is read: held back.
        hub.fan_out(&in_history);
        hub.fan_out(&after_read);
        assert!(rx.try_recv().is_err(), "nothing before the history");
        // The history held the first one: only the second is sent.
        hub.primed(s, &sub, |id| *id == in_history.id);
        hub.fan_out(&live);
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let want: Vec<String> = [&after_read, &live]
            .iter()
            .map(|e| wire::event_message("s", &e.as_json()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_subscription_that_holds_back_too_much_is_a_slow_reader() {
        let hub = Hub::new(FanOut::Indexed);
        let (tx, _rx) = mpsc::channel(64);
        let kick = Arc::new(Notify::new());
        let s = open_to(&hub, Scope::Everything, tx, kick.clone());
        let f: Arc<[Filter]> = vec![Filter::new()].into();
        assert!(hub.subscribe(s, SubscriptionId::new("s"), f, 10));
        let k = Keys::generate();
        for i in 0..=MAX_HELD {
            hub.fan_out(
                &EventBuilder::text_note(i.to_string())
                    .sign_with_keys(&k)
                    .unwrap(),
            );
        }
        // The kick was signalled: the session is closed as too slow.
        let kicked = kick.notified();
        tokio::pin!(kicked);
        assert!(futures_poll_ready(kicked.as_mut()), "kicked");
    }

    fn futures_poll_ready<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        f.poll(&mut cx).is_ready()
    }

    /// Random filters and events over a small universe, so that matches
    /// happen: the index must find exactly what the linear scan finds.
    #[test]
    fn the_index_finds_exactly_what_the_linear_scan_finds() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let keys: Vec<Keys> = (0..4).map(|_| Keys::generate()).collect();
        let kinds = [1u16, 7, 38383, 20001];
        let tags = ["a", "b", "c"];
        let events: Vec<Event> = (0..60)
            .map(|i| {
                let mut b =
                    EventBuilder::new(Kind::from(kinds[rng.below(4) as usize]), format!("e{i}"))
                        .custom_created_at(Timestamp::from_secs(1000 + rng.below(100)));
                for _ in 0..rng.below(3) {
                    let letter = ["t", "d", "p"][rng.below(3) as usize];
                    b = b.tag(Tag::parse([letter, tags[rng.below(3) as usize]]).unwrap());
                }
                b.sign_with_keys(&keys[rng.below(4) as usize]).unwrap()
            })
            .collect();
        let filter = |rng: &mut Rng| {
            let mut f = Filter::new();
            if rng.below(5) == 0 {
                f = f.id(events[rng.below(60) as usize].id);
            }
            if rng.below(3) == 0 {
                f = f.author(keys[rng.below(4) as usize].public_key());
            }
            if rng.below(3) == 0 {
                f = f.kind(Kind::from(kinds[rng.below(4) as usize]));
            }
            if rng.below(3) == 0 {
                let letter = [nostr::Alphabet::T, nostr::Alphabet::D][rng.below(2) as usize];
                f = f.custom_tag(
                    SingleLetterTag::lowercase(letter),
                    tags[rng.below(3) as usize],
                );
            }
            if rng.below(4) == 0 {
                f = f.since(Timestamp::from_secs(1050));
            }
            f
        };
        let (indexed, linear) = hub_pair();
        for _ in 0..40 {
            let scope = if rng.below(4) == 0 {
                Scope::only(vec![filter(&mut rng)])
            } else {
                Scope::Everything
            };
            let a = open(&indexed, scope.clone());
            let b = open(&linear, scope);
            assert_eq!(a, b);
            for s in 0..rng.below(4) {
                let filters: Vec<Filter> =
                    (0..1 + rng.below(3)).map(|_| filter(&mut rng)).collect();
                let id = SubscriptionId::new(format!("s{s}"));
                assert!(indexed.subscribe(a, id.clone(), filters.clone().into(), 10));
                assert!(linear.subscribe(b, id, filters.into(), 10));
            }
            // Replace and close some, so removal from the index is exercised.
            if rng.below(3) == 0 {
                let f: Arc<[Filter]> = vec![filter(&mut rng)].into();
                indexed.subscribe(a, SubscriptionId::new("s0"), f.clone(), 10);
                linear.subscribe(b, SubscriptionId::new("s0"), f, 10);
            }
            if rng.below(5) == 0 {
                indexed.unsubscribe(a, &SubscriptionId::new("s1"));
                linear.unsubscribe(b, &SubscriptionId::new("s1"));
            }
        }
        let mut matched = 0;
        for e in &events {
            let want = linear.matching(e);
            matched += want.len();
            assert_eq!(indexed.matching(e), want, "event {}", e.content);
        }
        assert!(
            matched > 20,
            "the universe is small enough to match: {matched}"
        );
        // Closing every session leaves the index empty.
        for id in 1..=40 {
            indexed.close(id);
        }
        assert_eq!(indexed.subscription_count(), 0);
        assert!(indexed.read().index.0.is_empty());
    }

    #[test]
    fn the_subscription_cap_holds_and_replacing_does_not_count() {
        let hub = Hub::new(FanOut::Indexed);
        let s = open(&hub, Scope::Everything);
        let f: Arc<[Filter]> = vec![Filter::new().kind(Kind::TextNote)].into();
        assert!(hub.subscribe(s, SubscriptionId::new("a"), f.clone(), 2));
        assert!(hub.subscribe(s, SubscriptionId::new("b"), f.clone(), 2));
        assert!(!hub.subscribe(s, SubscriptionId::new("c"), f.clone(), 2));
        assert!(hub.subscribe(s, SubscriptionId::new("a"), f, 2));
        assert_eq!(hub.subscription_count(), 2);
    }
}
