//! The in-memory persister: the reference implementation of the contract.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use nostr::filter::MatchEventOptions;
use nostr::{Event, EventId, Filter, PublicKey, Timestamp};

use crate::kinds::{self, Address};
use crate::persister::{
    apply_claims, apply_import, apply_save, merge_results, Claim, EventTable, Export, Record,
};
use crate::{Persister, Result, SaveOutcome, StoreStats};

#[derive(Default)]
struct Tables {
    events: HashMap<EventId, Event>,
    ordered: BTreeSet<(Reverse<Timestamp>, EventId)>,
    addresses: HashMap<Address, EventId>,
    id_tombstones: HashMap<EventId, PublicKey>,
    address_tombstones: HashMap<Address, Timestamp>,
    kv: BTreeMap<(String, Vec<u8>), Vec<u8>>,
}

impl EventTable for Tables {
    fn get(&self, id: &EventId) -> Result<Option<Event>> {
        Ok(self.events.get(id).cloned())
    }
    fn at_address(&self, address: &Address) -> Result<Option<EventId>> {
        Ok(self.addresses.get(address).copied())
    }
    fn id_tombstone(&self, id: &EventId) -> Result<Option<PublicKey>> {
        Ok(self.id_tombstones.get(id).copied())
    }
    fn address_tombstone(&self, address: &Address) -> Result<Option<Timestamp>> {
        Ok(self.address_tombstones.get(address).copied())
    }
    fn insert(&mut self, event: &Event) -> Result<()> {
        self.events.insert(event.id, event.clone());
        self.ordered.insert((Reverse(event.created_at), event.id));
        if let Some(a) = kinds::address_of(event) {
            self.addresses.insert(a, event.id);
        }
        Ok(())
    }
    fn remove(&mut self, event: &Event) -> Result<()> {
        self.events.remove(&event.id);
        self.ordered.remove(&(Reverse(event.created_at), event.id));
        if let Some(a) = kinds::address_of(event) {
            if self.addresses.get(&a) == Some(&event.id) {
                self.addresses.remove(&a);
            }
        }
        Ok(())
    }
    fn put_id_tombstone(&mut self, id: &EventId, author: &PublicKey) -> Result<()> {
        self.id_tombstones.insert(*id, *author);
        Ok(())
    }
    fn put_address_tombstone(&mut self, address: &Address, until: Timestamp) -> Result<()> {
        self.address_tombstones.insert(address.clone(), until);
        Ok(())
    }
    fn kv_exists(&self, namespace: &str, key: &[u8]) -> Result<bool> {
        Ok(self.kv.contains_key(&(namespace.to_string(), key.to_vec())))
    }
    fn kv_set(&mut self, namespace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.kv
            .insert((namespace.to_string(), key.to_vec()), value.to_vec());
        Ok(())
    }
}

impl Tables {
    fn matching<'a>(
        &'a self,
        filter: &'a Filter,
        now: Timestamp,
    ) -> impl Iterator<Item = &'a Event> + 'a {
        self.ordered
            .iter()
            .filter_map(|(_, id)| self.events.get(id))
            .filter(move |e| {
                filter.match_event(e, MatchEventOptions::default()) && !kinds::is_expired(e, now)
            })
    }
}

/// Events and state in memory; gone when dropped.
#[derive(Default)]
pub struct MemoryPersister {
    tables: Mutex<Tables>,
}

impl std::fmt::Debug for MemoryPersister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryPersister")
    }
}

impl MemoryPersister {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Persister for MemoryPersister {
    fn backend(&self) -> &'static str {
        "memory"
    }
    async fn save_event(&self, event: &Event, claims: &[Claim]) -> Result<SaveOutcome> {
        apply_save(&mut *self.tables(), event, claims)
    }
    async fn event_exists(&self, id: &EventId) -> Result<bool> {
        Ok(self.tables().events.contains_key(id))
    }
    async fn query(&self, filters: &[Filter], now: Timestamp) -> Result<Vec<Event>> {
        let t = self.tables();
        let mut out = Vec::new();
        for f in filters {
            let limit = f.limit.unwrap_or(usize::MAX);
            out.extend(t.matching(f, now).take(limit).cloned());
        }
        Ok(merge_results(out))
    }
    async fn count(&self, filters: &[Filter], now: Timestamp) -> Result<u64> {
        let t = self.tables();
        let mut ids = BTreeSet::new();
        for f in filters {
            ids.extend(t.matching(f, now).map(|e| e.id));
        }
        Ok(ids.len() as u64)
    }
    async fn delete_events(&self, ids: &[EventId]) -> Result<u64> {
        let mut t = self.tables();
        let mut n = 0;
        for id in ids {
            if let Some(e) = t.events.get(id).cloned() {
                t.remove(&e)?;
                n += 1;
            }
        }
        Ok(n)
    }
    async fn remove_expired(&self, now: Timestamp) -> Result<u64> {
        let mut t = self.tables();
        let expired: Vec<Event> = t
            .events
            .values()
            .filter(|e| kinds::is_expired(e, now))
            .cloned()
            .collect();
        for e in &expired {
            t.remove(e)?;
        }
        Ok(expired.len() as u64)
    }
    async fn kv_get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tables()
            .kv
            .get(&(ns.to_string(), key.to_vec()))
            .cloned())
    }
    async fn kv_write(
        &self,
        ns: &str,
        key: &[u8],
        value: Option<&[u8]>,
        only_new: bool,
    ) -> Result<bool> {
        let mut t = self.tables();
        let k = (ns.to_string(), key.to_vec());
        Ok(match value {
            Some(_) if only_new && t.kv.contains_key(&k) => false,
            Some(v) => {
                t.kv.insert(k, v.to_vec());
                true
            }
            None => t.kv.remove(&k).is_some(),
        })
    }
    async fn kv_claim(&self, claims: &[Claim]) -> Result<Option<Claim>> {
        apply_claims(&mut *self.tables(), claims)
    }
    async fn kv_scan(&self, ns: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let t = self.tables();
        Ok(t.kv
            .range((ns.to_string(), prefix.to_vec())..)
            .take_while(|((n, k), _)| n == ns && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
    async fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats {
            events: self.tables().events.len() as u64,
            size_bytes: 0,
            write_error: None,
        })
    }
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
    async fn export(&self, cursor: Option<Vec<u8>>, max: usize) -> Result<Export> {
        use nostr::JsonUtil;
        // Everything in a fixed order (events oldest first); the cursor is
        // the position reached.
        let t = self.tables();
        let mut all: Vec<Record> = Vec::new();
        for (a, until) in &t.address_tombstones {
            all.push(Record::AddressTombstone {
                address: a.clone(),
                until: *until,
            });
        }
        for (id, author) in &t.id_tombstones {
            all.push(Record::IdTombstone {
                id: *id,
                author: *author,
            });
        }
        all.sort_by_key(|r| format!("{r:?}"));
        for ((namespace, key), value) in &t.kv {
            all.push(Record::Kv {
                namespace: namespace.clone(),
                key: key.clone(),
                value: value.clone(),
            });
        }
        for (_, id) in t.ordered.iter().rev() {
            all.push(Record::Event(t.events[id].as_json()));
        }
        let from = cursor
            .and_then(|c| <[u8; 8]>::try_from(c).ok())
            .map_or(0, u64::from_be_bytes) as usize;
        let to = from.saturating_add(max.max(1)).min(all.len());
        Ok(Export {
            records: all.get(from..to).unwrap_or_default().to_vec(),
            next: (to < all.len()).then(|| (to as u64).to_be_bytes().to_vec()),
        })
    }
    async fn import(&self, records: &[Record]) -> Result<()> {
        apply_import(&mut *self.tables(), records)
    }
}
