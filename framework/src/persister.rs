//! The [`Persister`] trait: where events and service state live.
//!
//! # For implementers
//!
//! A persister stores events and answers NIP-01 filters. It also gives each
//! service a private key-value namespace.
//!
//! **Durable** means: when a future returned by [`Persister::save_event`],
//! [`Persister::delete_events`] or a `kv_*` write resolves `Ok`, the change
//! survives a crash of the process (SIGKILL) and of the machine, as far as the
//! operating system's `fsync` promises. The node sends `OK true` only after
//! that future resolves, so a persister that acknowledges early breaks the
//! node's promise to its clients.
//!
//! **Atomic** means: the changes of one `save_event` (the event, its indexes,
//! the versions it replaces or deletes, tombstones and claims) are applied all
//! or none, across a crash too.
//!
//! **Only durable state is reported as present**: [`Persister::event_exists`]
//! answers `true` only once the event's write is durable, because the node
//! acknowledges a second copy (`OK true "duplicate:"`) on that answer. After a
//! failed write or flush, a persister refuses writes (`Err`) until it is
//! healthy again, and says so in [`StoreStats`].
//!
//! Batch writes (group commit): many concurrent `save_event` calls should
//! share one fsync. Each caller still waits for the batch that holds its
//! write.
//!
//! **Semantics** come from the shared algorithm [`apply_save`]: implement
//! [`EventTable`] over your storage and call it under your write lock (or from
//! your single writer task). Do not re-implement replacement or deletion
//! rules; the conformance suite (`civkit_framework::persister_conformance!`)
//! checks them.
//!
//! **Queries**: each filter's `limit` applies to that filter (newest first,
//! ties by lowest id); results of several filters are OR'd, de-duplicated and
//! returned newest first ([`crate::kinds::result_order`]). `limit: None` means
//! no limit: the node caps limits before it calls you. Events expired at `now`
//! (NIP-40) are never returned or counted.
//!
//! **Key alphabet**: namespaces are `[a-z0-9_-]{1,64}` (checked by the node);
//! keys and values are arbitrary bytes.
//!
//! ```ignore
//! // Wrong: answering before the write is durable.
//! async fn save_event(&self, e: &Event) -> Result<SaveOutcome> {
//!     self.queue.push(e.clone());       // fsync happens "later"
//!     Ok(SaveOutcome::Stored { .. })    // client already told OK
//! }
//! // Right: queue, and resolve when the batch holding it has been flushed.
//! async fn save_event(&self, e: &Event) -> Result<SaveOutcome> {
//!     let (tx, rx) = oneshot::channel();
//!     self.writer.send((e.clone(), tx)).await?;
//!     rx.await?                          // resolved after flush
//! }
//! ```

use async_trait::async_trait;
use nostr::{Event, EventId, Filter, PublicKey, Timestamp};

use crate::kinds::{self, Address};
pub use crate::stored::StoredEvent;
use crate::Result;

/// The result of saving one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    /// Stored. `replaced` lists older versions at the same address that were
    /// removed; `deleted` lists events removed by a NIP-09 request.
    Stored {
        replaced: Vec<EventId>,
        deleted: Vec<EventId>,
    },
    /// The same id is already stored.
    Duplicate,
    /// A newer version at the same address is stored; nothing changed.
    Stale,
    /// The author deleted this event (or this address) earlier; nothing changed.
    Deleted,
    /// One of the event's [`Claim`]s is already taken; nothing changed.
    Claimed(Claim),
}

/// A key a service claims in its own key-value namespace for an event (a
/// spent credential, for instance). It is written only if absent, in the same
/// atomic, durable write as the event: either the event is stored and every
/// claim is taken, or nothing changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Sizes reported by `civkit-cli status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Stored events.
    pub events: u64,
    /// Bytes on disk (0 for memory stores).
    pub size_bytes: u64,
    /// Why writes are refused, when the last write or flush failed and no
    /// flush has succeeded since. `None` when healthy.
    pub write_error: Option<String>,
}

/// Storage and query of events, plus per-service key-value state.
#[async_trait]
pub trait Persister: Send + Sync + 'static {
    /// A short name for logs (`sled`, `memory`).
    fn backend(&self) -> &'static str;
    /// Store an event with NIP-01 replacement and NIP-09 deletion semantics,
    /// and take its `claims`, in one atomic durable write. Ephemeral events
    /// are never passed here.
    async fn save_event(&self, event: &Event, claims: &[Claim]) -> Result<SaveOutcome>;
    /// True when an event with this id is stored.
    async fn event_exists(&self, id: &EventId) -> Result<bool>;
    /// Events matching any filter, newest first; expired events left out.
    async fn query(&self, filters: &[Filter], now: Timestamp) -> Result<Vec<Event>>;
    /// [`Self::query`], each event with its JSON as stored, so that a `REQ`
    /// is answered without serializing events again. The default serializes.
    async fn query_stored(&self, filters: &[Filter], now: Timestamp) -> Result<Vec<StoredEvent>> {
        Ok(self
            .query(filters, now)
            .await?
            .into_iter()
            .map(StoredEvent::from)
            .collect())
    }
    /// How many stored events match any filter (limits ignored).
    async fn count(&self, filters: &[Filter], now: Timestamp) -> Result<u64>;
    /// Remove events by id (operator action; leaves no tombstone). Returns how many were removed.
    async fn delete_events(&self, ids: &[EventId]) -> Result<u64>;
    /// Remove every event whose NIP-40 expiration is at or before `now`.
    async fn remove_expired(&self, now: Timestamp) -> Result<u64>;
    /// Read a key of a service namespace.
    async fn kv_get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Change one key, atomically and durably: with `value`, set it (only
    /// when absent if `only_new`; `true` when written); without, remove it
    /// (`true` when it existed). `kv_put`, `kv_insert_new` and `kv_delete`
    /// are this.
    async fn kv_write(
        &self,
        namespace: &str,
        key: &[u8],
        value: Option<&[u8]>,
        only_new: bool,
    ) -> Result<bool>;
    /// Write a key, durably.
    async fn kv_put(&self, namespace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.kv_write(namespace, key, Some(value), false)
            .await
            .map(drop)
    }
    /// Write a key only if absent, atomically and durably. `true` when written.
    async fn kv_insert_new(&self, namespace: &str, key: &[u8], value: &[u8]) -> Result<bool> {
        self.kv_write(namespace, key, Some(value), true).await
    }
    /// Take every claim or none, atomically and durably (for events that are
    /// not stored, such as ephemeral ones). `None` when all were taken, else
    /// the first claim that was already taken.
    async fn kv_claim(&self, claims: &[Claim]) -> Result<Option<Claim>>;
    /// Remove a key, durably. `true` when it existed.
    async fn kv_delete(&self, namespace: &str, key: &[u8]) -> Result<bool> {
        self.kv_write(namespace, key, None, false).await
    }
    /// All pairs whose key starts with `prefix`, in key order.
    async fn kv_scan(&self, namespace: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Counts and sizes.
    async fn stats(&self) -> Result<StoreStats>;
    /// Make everything written so far durable (called at shutdown).
    async fn flush(&self) -> Result<()>;
    /// Whether several nodes may share this store (and so must hold the
    /// same board secrets, see [`crate::board_secrets`]). `false` (the
    /// default) for a store that one node owns.
    fn shared(&self) -> bool {
        false
    }
    /// For a store that several nodes share: the events other nodes
    /// accepted (stored or ephemeral), in the order they were committed, for
    /// this node to fan out to its own subscribers. Taken once, when the
    /// node starts its background work; `None` (the default) for a store
    /// that one node owns.
    fn peer_events(&self) -> Option<tokio::sync::mpsc::Receiver<Event>> {
        None
    }
    /// Pass an accepted ephemeral event (never stored) to the other nodes
    /// sharing this store. The default, for a store one node owns, does
    /// nothing.
    async fn share_ephemeral(&self, _event: &Event) -> Result<()> {
        Ok(())
    }
    /// Up to `max` records of the store's whole content, from the start
    /// (`cursor` `None`) or after the cursor an earlier call returned, and
    /// the cursor to go on from (`None` once everything was returned). For
    /// moving a store to another backend (`civkitd migrate`); the store
    /// keeps serving meanwhile, and records written during an export may
    /// or may not be in it.
    async fn export(&self, cursor: Option<Vec<u8>>, max: usize) -> Result<Export>;
    /// Write records exported from another store, in one atomic durable
    /// write (see [`apply_import`]).
    async fn import(&self, records: &[Record]) -> Result<()>;
    /// For a store that several nodes share: take the board-wide lease
    /// `name` for `ttl` when it is free or expired, or renew it when this
    /// node holds it. `true` while this node holds it: the work it guards
    /// (expiry sweeps, service rounds) then runs here and on no other node.
    /// A store one node owns always answers `true`.
    async fn hold_lease(&self, _name: &str, _ttl: std::time::Duration) -> Result<bool> {
        Ok(true)
    }
}

/// The storage primitives [`apply_save`] needs. A backend implements this over
/// its own tables and calls `apply_save` with writes serialized.
pub trait EventTable {
    /// Look up a stored event.
    fn get(&self, id: &EventId) -> Result<Option<Event>>;
    /// The id currently stored at an address.
    fn at_address(&self, address: &Address) -> Result<Option<EventId>>;
    /// The author of a deletion request that named this id, if any.
    fn id_tombstone(&self, id: &EventId) -> Result<Option<PublicKey>>;
    /// The newest `created_at` up to which this address was deleted.
    fn address_tombstone(&self, address: &Address) -> Result<Option<Timestamp>>;
    /// Store an event with all its indexes (and its address, if any).
    fn insert(&mut self, event: &Event) -> Result<()>;
    /// Remove an event with all its indexes (and its address entry if it points at it).
    fn remove(&mut self, event: &Event) -> Result<()>;
    /// Remember that `author` asked to delete `id`.
    fn put_id_tombstone(&mut self, id: &EventId, author: &PublicKey) -> Result<()>;
    /// Remember that `address` was deleted up to `until`.
    fn put_address_tombstone(&mut self, address: &Address, until: Timestamp) -> Result<()>;
    /// True when a key of a service namespace is set.
    fn kv_exists(&self, namespace: &str, key: &[u8]) -> Result<bool>;
    /// Set a key of a service namespace.
    fn kv_set(&mut self, namespace: &str, key: &[u8], value: &[u8]) -> Result<()>;
}

/// The first claim that is taken already, or repeated in `claims`.
pub fn taken_claim<T: EventTable + ?Sized>(table: &T, claims: &[Claim]) -> Result<Option<Claim>> {
    for (i, c) in claims.iter().enumerate() {
        let repeated = claims[..i]
            .iter()
            .any(|o| o.namespace == c.namespace && o.key == c.key);
        if repeated || table.kv_exists(&c.namespace, &c.key)? {
            return Ok(Some(c.clone()));
        }
    }
    Ok(None)
}

/// One piece of a store's content, as [`Persister::export`] gives it and
/// [`Persister::import`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A stored event, as its JSON.
    Event(String),
    /// A deleted event id and who deleted it (NIP-09): the event is not
    /// stored again.
    IdTombstone { id: EventId, author: PublicKey },
    /// An address deleted (NIP-09 `a` tag) up to `until`.
    AddressTombstone { address: Address, until: Timestamp },
    /// One key of a service's key-value namespace.
    Kv {
        namespace: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
}

/// One page of an export: its records, and where the next page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    pub records: Vec<Record>,
    /// `None` when this was the last page.
    pub next: Option<Vec<u8>>,
}

/// Write `records` into `table` as they are (the shared algorithm behind
/// [`Persister::import`]). The store they come from already applied
/// replacement and deletion, so events are not checked against each other;
/// each is parsed and its id and signature verified, so that a damaged or
/// tampered source is refused rather than copied. Events already in the
/// table are left as they are.
pub fn apply_import<T: EventTable + ?Sized>(table: &mut T, records: &[Record]) -> Result<()> {
    use nostr::JsonUtil;
    // Check the whole page before writing any of it.
    let mut events = Vec::new();
    for r in records {
        match r {
            Record::Event(json) => {
                let event = Event::from_json(json)
                    .map_err(|e| crate::Error::Invalid(format!("an exported event: {e}")))?;
                event.verify().map_err(|e| {
                    crate::Error::Invalid(format!("exported event {}: {e}", event.id))
                })?;
                events.push(event);
            }
            Record::Kv { namespace, .. } => check_namespace(namespace)?,
            Record::IdTombstone { .. } | Record::AddressTombstone { .. } => {}
        }
    }
    for event in &events {
        if table.get(&event.id)?.is_none() {
            table.insert(event)?;
        }
    }
    for r in records {
        match r {
            Record::Event(_) => {}
            Record::IdTombstone { id, author } => table.put_id_tombstone(id, author)?,
            Record::AddressTombstone { address, until } => {
                table.put_address_tombstone(address, *until)?
            }
            Record::Kv {
                namespace,
                key,
                value,
            } => table.kv_set(namespace, key, value)?,
        }
    }
    Ok(())
}

/// Take every claim or none (the shared algorithm behind [`Persister::kv_claim`]).
pub fn apply_claims<T: EventTable + ?Sized>(
    table: &mut T,
    claims: &[Claim],
) -> Result<Option<Claim>> {
    if let Some(taken) = taken_claim(table, claims)? {
        return Ok(Some(taken));
    }
    for c in claims {
        table.kv_set(&c.namespace, &c.key, &c.value)?;
    }
    Ok(None)
}

/// The one implementation of NIP-01 replacement and NIP-09 deletion, and of
/// claims, shared by every persister. The caller makes the table's changes
/// atomic: a persister applies them all or none.
pub fn apply_save<T: EventTable + ?Sized>(
    table: &mut T,
    event: &Event,
    claims: &[Claim],
) -> Result<SaveOutcome> {
    if table.get(&event.id)?.is_some() {
        return Ok(SaveOutcome::Duplicate);
    }
    if let Some(taken) = taken_claim(table, claims)? {
        return Ok(SaveOutcome::Claimed(taken));
    }
    if table.id_tombstone(&event.id)? == Some(event.pubkey) {
        return Ok(SaveOutcome::Deleted);
    }
    let mut replaced = Vec::new();
    if let Some(address) = kinds::address_of(event) {
        if table
            .address_tombstone(&address)?
            .is_some_and(|until| event.created_at <= until)
        {
            return Ok(SaveOutcome::Deleted);
        }
        if let Some(current_id) = table.at_address(&address)? {
            if let Some(current) = table.get(&current_id)? {
                if !kinds::supersedes(event, &current) {
                    return Ok(SaveOutcome::Stale);
                }
                table.remove(&current)?;
                replaced.push(current.id);
            }
        }
    }
    let mut deleted = Vec::new();
    if event.kind.as_u16() == kinds::DELETION {
        let targets = kinds::deletion_targets(event);
        for id in &targets.ids {
            if let Some(target) = table.get(id)? {
                // Only the author may delete, and deleting a deletion has no effect.
                if target.pubkey != event.pubkey || target.kind.as_u16() == kinds::DELETION {
                    continue;
                }
                table.remove(&target)?;
                deleted.push(target.id);
            }
            table.put_id_tombstone(id, &event.pubkey)?;
        }
        for address in &targets.addresses {
            if let Some(current_id) = table.at_address(address)? {
                if let Some(current) = table.get(&current_id)? {
                    if current.created_at <= event.created_at {
                        table.remove(&current)?;
                        deleted.push(current.id);
                    }
                }
            }
            let until = table
                .address_tombstone(address)?
                .map_or(event.created_at, |t| t.max(event.created_at));
            table.put_address_tombstone(address, until)?;
        }
    }
    table.insert(event)?;
    for c in claims {
        table.kv_set(&c.namespace, &c.key, &c.value)?;
    }
    Ok(SaveOutcome::Stored { replaced, deleted })
}

/// Merge per-filter results: de-duplicate by id and order newest first.
pub fn merge_results(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by(kinds::result_order);
    events.dedup_by(|a, b| a.id == b.id);
    events
}

/// `Ok` when a namespace name is in the allowed alphabet, else the error a
/// persister answers with.
pub fn check_namespace(ns: &str) -> Result<()> {
    if valid_namespace(ns) {
        Ok(())
    } else {
        Err(crate::Error::Invalid(format!(
            "bad key-value namespace `{ns}`"
        )))
    }
}

/// True when a namespace name is in the allowed alphabet `[a-z0-9_-]{1,64}`.
pub fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 64
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
