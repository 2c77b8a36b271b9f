//! Tables, index keys and the query planner.
//!
//! Key layouts (`inv` is `u64::MAX - created_at`, big-endian, so ascending
//! key order is newest first; the trailing 32-byte id breaks ties by lowest id):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `events` | id | event JSON |
//! | `by_time` | inv, id | - |
//! | `by_author` | pubkey, inv, id | - |
//! | `by_kind` | kind u16, inv, id | - |
//! | `by_author_kind` | pubkey, kind u16, inv, id | - |
//! | `by_tag` | letter, sha256(value)[..16], inv, id | - |
//! | `addresses` | pubkey, kind u16, d | id |
//! | `expiry` | expiration u64, id | - |
//! | `id_tombstones` | id | deleter pubkey |
//! | `address_tombstones` | pubkey, kind u16, d | created_at u64 |
//! | `kv` | namespace, 0x00, key | value |

use std::sync::atomic::{AtomicU64, Ordering};

use civkit_framework::kinds::{self, Address};
use civkit_framework::persister::EventTable;
use civkit_framework::Result;
use nostr::filter::MatchEventOptions;
use nostr::hashes::{sha256, Hash};
use nostr::{Event, EventId, Filter, JsonUtil, PublicKey, Timestamp};

use crate::store_err;

pub(crate) struct Trees {
    pub db: sled::Db,
    pub events: sled::Tree,
    by_time: sled::Tree,
    by_author: sled::Tree,
    by_kind: sled::Tree,
    by_author_kind: sled::Tree,
    by_tag: sled::Tree,
    addresses: sled::Tree,
    expiry: sled::Tree,
    id_tombstones: sled::Tree,
    address_tombstones: sled::Tree,
    pub kv: sled::Tree,
}

impl Drop for Trees {
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::warn!(error = %e, "flush on close failed");
        }
    }
}

fn inv(ts: Timestamp) -> [u8; 8] {
    (u64::MAX - ts.as_secs()).to_be_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn tag_hash(value: &str) -> [u8; 16] {
    let h = sha256::Hash::hash(value.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_byte_array()[..16]);
    out
}

fn address_key(a: &Address) -> Vec<u8> {
    cat(&[&a.pubkey.to_bytes(), &a.kind.to_be_bytes(), a.d.as_bytes()])
}

pub(crate) fn kv_key(ns: &str, key: &[u8]) -> Vec<u8> {
    cat(&[ns.as_bytes(), &[0], key])
}

/// Index keys of one event (without the events table).
fn index_keys<'a>(t: &'a Trees, e: &Event) -> Vec<(&'a sled::Tree, Vec<u8>)> {
    let id = e.id.as_bytes();
    let ts = inv(e.created_at);
    let pk = e.pubkey.to_bytes();
    let kind = e.kind.as_u16().to_be_bytes();
    let mut keys = vec![
        (&t.by_time, cat(&[&ts, id])),
        (&t.by_author, cat(&[&pk, &ts, id])),
        (&t.by_kind, cat(&[&kind, &ts, id])),
        (&t.by_author_kind, cat(&[&pk, &kind, &ts, id])),
    ];
    for tag in e.tags.iter() {
        if let (Some(letter), Some(value)) = (tag.single_letter_tag(), tag.content()) {
            let l = letter.as_char() as u8;
            keys.push((&t.by_tag, cat(&[&[l], &tag_hash(value), &ts, id])));
        }
    }
    if let Some(exp) = kinds::expiration_of(e) {
        keys.push((&t.expiry, cat(&[&exp.as_secs().to_be_bytes(), id])));
    }
    keys
}

impl Trees {
    pub fn open(db: sled::Db) -> Result<Self> {
        let t = |name: &str| db.open_tree(name).map_err(store_err);
        Ok(Trees {
            events: t("events")?,
            by_time: t("by_time")?,
            by_author: t("by_author")?,
            by_kind: t("by_kind")?,
            by_author_kind: t("by_author_kind")?,
            by_tag: t("by_tag")?,
            addresses: t("addresses")?,
            expiry: t("expiry")?,
            id_tombstones: t("id_tombstones")?,
            address_tombstones: t("address_tombstones")?,
            kv: t("kv")?,
            db,
        })
    }

    pub fn table<'a>(&'a self, counter: &'a AtomicU64) -> SledTable<'a> {
        SledTable { t: self, counter }
    }

    fn load(&self, id: &[u8]) -> Result<Option<Event>> {
        match self.events.get(id).map_err(store_err)? {
            Some(bytes) => Event::from_json(&bytes[..]).map(Some).map_err(store_err),
            None => Ok(None),
        }
    }

    /// Choose index scans for a filter: (tree, key prefix) pairs.
    fn plan<'a>(&'a self, f: &Filter) -> Vec<(&'a sled::Tree, Vec<u8>)> {
        let authors: Vec<[u8; 32]> = f.authors.iter().flatten().map(|p| p.to_bytes()).collect();
        let kinds: Vec<[u8; 2]> = f
            .kinds
            .iter()
            .flatten()
            .map(|k| k.as_u16().to_be_bytes())
            .collect();
        if !authors.is_empty() && !kinds.is_empty() && authors.len() * kinds.len() <= 256 {
            let mut out = Vec::new();
            for a in &authors {
                for k in &kinds {
                    out.push((&self.by_author_kind, cat(&[a, k])));
                }
            }
            return out;
        }
        if !authors.is_empty() {
            return authors
                .iter()
                .map(|a| (&self.by_author, a.to_vec()))
                .collect();
        }
        if let Some((letter, values)) = f.generic_tags.iter().find(|(_, v)| !v.is_empty()) {
            let l = letter.as_char() as u8;
            return values
                .iter()
                .map(|v| (&self.by_tag, cat(&[&[l], &tag_hash(v)])))
                .collect();
        }
        if !kinds.is_empty() {
            return kinds.iter().map(|k| (&self.by_kind, k.to_vec())).collect();
        }
        vec![(&self.by_time, Vec::new())]
    }

    /// Events matching one filter, newest first, at most `limit`.
    pub fn query_filter(&self, f: &Filter, now: Timestamp, limit: usize) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let opts = MatchEventOptions::default();
        let keep = |e: &Event| f.match_event(e, opts) && !kinds::is_expired(e, now);
        if let Some(ids) = f.ids.as_ref().filter(|ids| !ids.is_empty()) {
            for id in ids {
                if let Some(e) = self.load(id.as_bytes())?.filter(|e| keep(e)) {
                    out.push(e);
                }
            }
            out.sort_by(kinds::result_order);
            out.truncate(limit);
            return Ok(out);
        }
        let newest = inv(f.until.unwrap_or(Timestamp::from_secs(u64::MAX)));
        let oldest = inv(f.since.unwrap_or(Timestamp::from_secs(0)));
        for (tree, prefix) in self.plan(f) {
            let start = cat(&[&prefix, &newest]);
            let end = cat(&[&prefix, &oldest, &[0xff; 32]]);
            let mut found = 0;
            for item in tree.range(start..=end) {
                let (key, _) = item.map_err(store_err)?;
                let id = &key[key.len().saturating_sub(32)..];
                if let Some(e) = self.load(id)?.filter(|e| keep(e)) {
                    out.push(e);
                    found += 1;
                    if found >= limit {
                        break;
                    }
                }
            }
        }
        let mut out = civkit_framework::persister::merge_results(out);
        out.truncate(limit);
        Ok(out)
    }
}

/// [`EventTable`] over the trees, used only from the writer thread.
pub(crate) struct SledTable<'a> {
    t: &'a Trees,
    counter: &'a AtomicU64,
}

impl SledTable<'_> {
    pub fn delete_ids(&mut self, ids: &[EventId]) -> Result<u64> {
        let mut n = 0;
        for id in ids {
            if let Some(e) = self.t.load(id.as_bytes())? {
                self.remove(&e)?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn remove_expired(&mut self, now: Timestamp) -> Result<u64> {
        let end = cat(&[&now.as_secs().to_be_bytes(), &[0xff; 32]]);
        let ids: Vec<Vec<u8>> = self
            .t
            .expiry
            .range(..=end)
            .map(|r| r.map(|(k, _)| k[8..].to_vec()).map_err(store_err))
            .collect::<Result<_>>()?;
        let mut n = 0;
        for id in ids {
            match self.t.load(&id)? {
                Some(e) => {
                    self.remove(&e)?;
                    n += 1;
                }
                None => {
                    // An index entry left by a crash mid-write; drop it.
                    let _ = self
                        .t
                        .expiry
                        .remove(cat(&[&now.as_secs().to_be_bytes(), &id]));
                }
            }
        }
        Ok(n)
    }
}

impl EventTable for SledTable<'_> {
    fn get(&self, id: &EventId) -> Result<Option<Event>> {
        self.t.load(id.as_bytes())
    }
    fn at_address(&self, address: &Address) -> Result<Option<EventId>> {
        match self
            .t
            .addresses
            .get(address_key(address))
            .map_err(store_err)?
        {
            Some(v) => EventId::from_slice(&v).map(Some).map_err(store_err),
            None => Ok(None),
        }
    }
    fn id_tombstone(&self, id: &EventId) -> Result<Option<PublicKey>> {
        match self.t.id_tombstones.get(id.as_bytes()).map_err(store_err)? {
            Some(v) => PublicKey::from_slice(&v).map(Some).map_err(store_err),
            None => Ok(None),
        }
    }
    fn address_tombstone(&self, address: &Address) -> Result<Option<Timestamp>> {
        match self
            .t
            .address_tombstones
            .get(address_key(address))
            .map_err(store_err)?
        {
            Some(v) => {
                let bytes: [u8; 8] = v.as_ref().try_into().map_err(store_err)?;
                Ok(Some(Timestamp::from_secs(u64::from_be_bytes(bytes))))
            }
            None => Ok(None),
        }
    }
    fn insert(&mut self, event: &Event) -> Result<()> {
        // Body first, then indexes: a crash in between leaves no index
        // pointing at a missing event.
        self.t
            .events
            .insert(event.id.as_bytes(), event.as_json().into_bytes())
            .map_err(store_err)?;
        for (tree, key) in index_keys(self.t, event) {
            tree.insert(key, &[]).map_err(store_err)?;
        }
        if let Some(a) = kinds::address_of(event) {
            self.t
                .addresses
                .insert(address_key(&a), event.id.as_bytes())
                .map_err(store_err)?;
        }
        self.counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn remove(&mut self, event: &Event) -> Result<()> {
        if let Some(a) = kinds::address_of(event) {
            let key = address_key(&a);
            let current = self.t.addresses.get(&key).map_err(store_err)?;
            if current.as_deref() == Some(event.id.as_bytes()) {
                self.t.addresses.remove(key).map_err(store_err)?;
            }
        }
        for (tree, key) in index_keys(self.t, event) {
            tree.remove(key).map_err(store_err)?;
        }
        if self
            .t
            .events
            .remove(event.id.as_bytes())
            .map_err(store_err)?
            .is_some()
        {
            self.counter.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }
    fn put_id_tombstone(&mut self, id: &EventId, author: &PublicKey) -> Result<()> {
        self.t
            .id_tombstones
            .insert(id.as_bytes(), &author.to_bytes())
            .map(|_| ())
            .map_err(store_err)
    }
    fn put_address_tombstone(&mut self, address: &Address, until: Timestamp) -> Result<()> {
        self.t
            .address_tombstones
            .insert(address_key(address), &until.as_secs().to_be_bytes())
            .map(|_| ())
            .map_err(store_err)
    }
}
