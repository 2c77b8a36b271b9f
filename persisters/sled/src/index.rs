//! The key space, the write overlay and the query planner.
//!
//! Everything lives in one ordered key space (one sled tree, one LMDB
//! database), each table under a one-byte prefix, so that the changes of a
//! group commit are one atomic engine write (a sled batch within one tree, an
//! LMDB transaction), also across a crash.
//!
//! Key layouts. Every stored event has a sequence number `seq` (u64,
//! big-endian, assigned in commit order and never reused); its body sits
//! under the highest prefix in `seq` order, so new bodies are appended at
//! the end of the key space (LMDB fills those pages; random ids would leave
//! them about two thirds full). Index keys end in a 24-byte *tail*:
//! `inv ‖ id[..8] ‖ seq`, where `inv` is `u64::MAX - created_at` (ascending
//! key order is newest first), the id prefix breaks ties by lowest id (ids
//! equal in their first 8 bytes, which takes a deliberate search, fall back
//! to commit order), and the `seq` locates the body and keeps keys unique.
//!
//! | prefix | table | key | value |
//! |---|---|---|---|
//! | `0xff` | events | seq | event JSON |
//! | `I` | ids | id | seq |
//! | `t` | by time | tail | - |
//! | `k` | by kind | kind u16, tail | - |
//! | `K` | by author and kind | pubkey, kind u16, tail | - |
//! | `g` | by tag | letter, sha256(value)[..16], tail | - |
//! | `d` | addresses | pubkey, kind u16, d | id |
//! | `x` | expiry | expiration u64, id[..8], seq | - |
//! | `i` | id tombstones | id | deleter pubkey |
//! | `D` | address tombstones | pubkey, kind u16, d | created_at u64 |
//! | `v` | service key-value | namespace, 0x00, key | value |
//! | `M` | store metadata | `layout`, `seq` | u64 |
//!
//! An author's events are found under `K ‖ pubkey`, one prefix per kind the
//! author used (found by seeking from kind to kind), merged.
//!
//! Layout 1 keyed bodies by id under `e` and ended index keys in
//! `inv ‖ id`; layouts 1 and 2 had a by-author index under `a`. [`upgrade`]
//! rewrites such a store on open.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeInclusive};

use civkit_framework::kinds::{self, Address};
use civkit_framework::persister::{EventTable, Export, Record};
use civkit_framework::Result;
use civkit_framework::{canonical, stored};
use nostr::hashes::{sha256, Hash};
use nostr::{Event, EventId, PublicKey, Timestamp};

use crate::engine::{Change, Engine, Reader};
use crate::store_err;

pub(crate) const EVENTS: u8 = 0xff;
const IDS: u8 = b'I';
pub(crate) const BY_TIME: u8 = b't';
pub(crate) const BY_KIND: u8 = b'k';
pub(crate) const BY_AUTHOR_KIND: u8 = b'K';
pub(crate) const BY_TAG: u8 = b'g';
const ADDRESSES: u8 = b'd';
pub(crate) const EXPIRY: u8 = b'x';
const ID_TOMBSTONES: u8 = b'i';
const ADDRESS_TOMBSTONES: u8 = b'D';
const KV: u8 = b'v';
const META: u8 = b'M';
/// Bodies of layout 1, keyed by id.
const LEGACY_EVENTS: u8 = b'e';
/// The by-author index of layouts 1 and 2 (`pubkey ‖ tail`). Layout 3
/// serves authors from the by-author-and-kind index instead, one prefix per
/// kind the author used: a 57-byte key less per event.
const LEGACY_BY_AUTHOR: u8 = b'a';

/// The layout this code writes.
const LAYOUT: u64 = 3;
/// Bytes at the end of every index key: `inv ‖ id[..8] ‖ seq`.
pub(crate) const TAIL: usize = 8 + 8 + 8;

/// The name of the one tree that holds everything.
pub(crate) const TREE: &str = "civkit";

pub(crate) fn inv(ts: Timestamp) -> [u8; 8] {
    (u64::MAX - ts.as_secs()).to_be_bytes()
}

pub(crate) fn key(table: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(table);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub(crate) fn tag_hash(value: &str) -> [u8; 16] {
    let h = sha256::Hash::hash(value.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_byte_array()[..16]);
    out
}

fn address_key(table: u8, a: &Address) -> Vec<u8> {
    key(
        table,
        &[&a.pubkey.to_bytes(), &a.kind.to_be_bytes(), a.d.as_bytes()],
    )
}

/// The key of the body of event number `seq`.
pub(crate) fn body_key(seq: u64) -> Vec<u8> {
    key(EVENTS, &[&seq.to_be_bytes()])
}

/// The key under which an id's `seq` is kept.
pub(crate) fn id_key(id: &[u8]) -> Vec<u8> {
    key(IDS, &[id])
}

fn u64_of(bytes: &[u8]) -> Result<u64> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| store_err("a stored number is not 8 bytes"))?;
    Ok(u64::from_be_bytes(b))
}

/// The `seq` at the end of an index key.
pub(crate) fn seq_in(index_key: &[u8]) -> Result<u64> {
    u64_of(&index_key[index_key.len().saturating_sub(8)..])
}

/// The `seq` of a stored event, by id.
pub(crate) fn seq_of<R: Reader>(reader: &R, id: &[u8]) -> Result<Option<u64>> {
    reader.get(&id_key(id))?.map(|v| u64_of(&v)).transpose()
}

pub(crate) fn kv_key(ns: &str, k: &[u8]) -> Vec<u8> {
    key(KV, &[ns.as_bytes(), &[0], k])
}

fn meta_key(name: &str) -> Vec<u8> {
    key(META, &[name.as_bytes()])
}

/// Index keys of one event (without its body), each ending in `inv ‖ id_part`
/// (the expiry key in `expiration ‖ id_part`).
fn index_keys(e: &Event, id_part: &[u8]) -> Vec<Vec<u8>> {
    let ts = inv(e.created_at);
    let pk = e.pubkey.to_bytes();
    let kind = e.kind.as_u16().to_be_bytes();
    let mut keys = vec![
        key(BY_TIME, &[&ts, id_part]),
        key(BY_KIND, &[&kind, &ts, id_part]),
        key(BY_AUTHOR_KIND, &[&pk, &kind, &ts, id_part]),
    ];
    for tag in e.tags.iter() {
        if let (Some(letter), Some(value)) = (tag.single_letter_tag(), tag.content()) {
            let l = letter.as_char() as u8;
            keys.push(key(BY_TAG, &[&[l], &tag_hash(value), &ts, id_part]));
        }
    }
    if let Some(exp) = kinds::expiration_of(e) {
        keys.push(key(EXPIRY, &[&exp.as_secs().to_be_bytes(), id_part]));
    }
    keys
}

/// The part of an index key after `inv`: `id[..8] ‖ seq`.
fn id_part(e: &Event, seq: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&e.id.as_bytes()[..8]);
    out[8..].copy_from_slice(&seq.to_be_bytes());
    out
}

/// An event the store wrote (see [`civkit_framework::stored::decode`]).
pub(crate) fn decode(bytes: &[u8]) -> Result<Event> {
    stored::decode(std::str::from_utf8(bytes).map_err(store_err)?)
}

/// The tail of an event's index keys: `inv ‖ id[..8] ‖ seq`.
pub(crate) fn tail_of(e: &Event, seq: u64) -> [u8; TAIL] {
    let mut out = [0u8; TAIL];
    out[..8].copy_from_slice(&inv(e.created_at));
    out[8..].copy_from_slice(&id_part(e, seq));
    out
}

/// The changes of one group commit, on top of the tree. Writes land in the
/// current operation's layer; [`Overlay::commit_op`] keeps them for the
/// batch, [`Overlay::abort_op`] drops them, so an operation that fails
/// half-way leaves nothing behind. Reads see the tree through both layers.
pub(crate) struct Overlay<R> {
    reader: R,
    group: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    op: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Events added minus removed, in the batch and in the current operation.
    group_delta: i64,
    op_delta: i64,
    /// Ids stored by the batch's committed operations.
    stored: Vec<EventId>,
    op_stored: Vec<EventId>,
    /// The `seq` of the next stored event, and whether any was taken.
    next_seq: u64,
    seq_taken: bool,
}

impl<R: Reader> Overlay<R> {
    pub fn new(reader: R) -> Result<Self> {
        let next_seq = match reader.get(&meta_key("seq"))? {
            Some(v) => u64_of(&v)?,
            None => 0,
        };
        Ok(Overlay {
            reader,
            group: BTreeMap::new(),
            op: BTreeMap::new(),
            group_delta: 0,
            op_delta: 0,
            stored: Vec::new(),
            op_stored: Vec::new(),
            next_seq,
            seq_taken: false,
        })
    }

    pub fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.op.get(k).or_else(|| self.group.get(k)) {
            return Ok(v.clone());
        }
        Ok(self.reader.get(k)?.map(|v| v.into_owned()))
    }

    pub fn set(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.op.insert(k, Some(v));
    }

    pub fn unset(&mut self, k: Vec<u8>) {
        self.op.insert(k, None);
    }

    /// Keys present in `range`, in order, as the overlay sees them.
    pub fn keys_in(&self, range: RangeInclusive<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        let mut seen: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        for item in self.reader.between(range.start(), range.end())? {
            seen.insert(item?.0.into_owned(), true);
        }
        for layer in [&self.group, &self.op] {
            for (k, v) in layer.range(range.clone()) {
                seen.insert(k.clone(), v.is_some());
            }
        }
        Ok(seen
            .into_iter()
            .filter(|(_, p)| *p)
            .map(|(k, _)| k)
            .collect())
    }

    pub fn commit_op(&mut self) {
        let op = std::mem::take(&mut self.op);
        self.group.extend(op);
        self.group_delta += std::mem::take(&mut self.op_delta);
        self.stored.append(&mut self.op_stored);
    }

    pub fn abort_op(&mut self) {
        self.op.clear();
        self.op_delta = 0;
        self.op_stored.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.group.is_empty()
    }

    /// The batch's changes, its event-count delta and the ids it stores
    /// (the reader is released).
    pub fn finish(mut self) -> (Vec<Change>, i64, Vec<EventId>) {
        if self.seq_taken {
            // Numbers of aborted operations stay taken: never reused.
            let next = self.next_seq.to_be_bytes().to_vec();
            self.group.insert(meta_key("seq"), Some(next));
        }
        (
            self.group.into_iter().collect(),
            self.group_delta,
            self.stored,
        )
    }

    fn seq_of(&self, id: &[u8]) -> Result<Option<u64>> {
        self.get(&id_key(id))?.map(|v| u64_of(&v)).transpose()
    }

    fn load(&self, id: &[u8]) -> Result<Option<Event>> {
        match self.seq_of(id)? {
            Some(seq) => self.load_seq(seq),
            None => Ok(None),
        }
    }

    fn load_seq(&self, seq: u64) -> Result<Option<Event>> {
        self.get(&body_key(seq))?.map(|b| decode(&b)).transpose()
    }

    pub fn delete_ids(&mut self, ids: &[EventId]) -> Result<u64> {
        let mut n = 0;
        for id in ids {
            if let Some(e) = self.load(id.as_bytes())? {
                self.remove(&e)?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn remove_expired(&mut self, now: Timestamp) -> Result<u64> {
        let range = key(EXPIRY, &[])..=key(EXPIRY, &[&now.as_secs().to_be_bytes(), &[0xff; 16]]);
        let mut n = 0;
        for k in self.keys_in(range)? {
            match self.load_seq(seq_in(&k)?)? {
                Some(e) => {
                    self.remove(&e)?;
                    n += 1;
                }
                // An index entry without its event; drop it.
                None => self.unset(k),
            }
        }
        Ok(n)
    }
}

impl<R: Reader> EventTable for Overlay<R> {
    fn get(&self, id: &EventId) -> Result<Option<Event>> {
        self.load(id.as_bytes())
    }
    fn at_address(&self, address: &Address) -> Result<Option<EventId>> {
        match Overlay::get(self, &address_key(ADDRESSES, address))? {
            Some(v) => EventId::from_slice(&v).map(Some).map_err(store_err),
            None => Ok(None),
        }
    }
    fn id_tombstone(&self, id: &EventId) -> Result<Option<PublicKey>> {
        match Overlay::get(self, &key(ID_TOMBSTONES, &[id.as_bytes()]))? {
            Some(v) => PublicKey::from_slice(&v).map(Some).map_err(store_err),
            None => Ok(None),
        }
    }
    fn address_tombstone(&self, address: &Address) -> Result<Option<Timestamp>> {
        match Overlay::get(self, &address_key(ADDRESS_TOMBSTONES, address))? {
            Some(v) => {
                let bytes: [u8; 8] = v.as_slice().try_into().map_err(store_err)?;
                Ok(Some(Timestamp::from_secs(u64::from_be_bytes(bytes))))
            }
            None => Ok(None),
        }
    }
    fn insert(&mut self, event: &Event) -> Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_taken = true;
        self.set(body_key(seq), canonical::event_json(event).into_bytes());
        self.set(id_key(event.id.as_bytes()), seq.to_be_bytes().to_vec());
        for k in index_keys(event, &id_part(event, seq)) {
            self.set(k, Vec::new());
        }
        if let Some(a) = kinds::address_of(event) {
            self.set(address_key(ADDRESSES, &a), event.id.as_bytes().to_vec());
        }
        self.op_delta += 1;
        self.op_stored.push(event.id);
        Ok(())
    }
    fn remove(&mut self, event: &Event) -> Result<()> {
        if let Some(a) = kinds::address_of(event) {
            let k = address_key(ADDRESSES, &a);
            if Overlay::get(self, &k)?.as_deref() == Some(event.id.as_bytes()) {
                self.unset(k);
            }
        }
        let Some(seq) = self.seq_of(event.id.as_bytes())? else {
            return Ok(());
        };
        for k in index_keys(event, &id_part(event, seq)) {
            self.unset(k);
        }
        self.unset(id_key(event.id.as_bytes()));
        self.unset(body_key(seq));
        self.op_delta -= 1;
        Ok(())
    }
    fn put_id_tombstone(&mut self, id: &EventId, author: &PublicKey) -> Result<()> {
        self.set(
            key(ID_TOMBSTONES, &[id.as_bytes()]),
            author.to_bytes().to_vec(),
        );
        Ok(())
    }
    fn put_address_tombstone(&mut self, address: &Address, until: Timestamp) -> Result<()> {
        self.set(
            address_key(ADDRESS_TOMBSTONES, address),
            until.as_secs().to_be_bytes().to_vec(),
        );
        Ok(())
    }
    fn kv_exists(&self, namespace: &str, k: &[u8]) -> Result<bool> {
        Ok(Overlay::get(self, &kv_key(namespace, k))?.is_some())
    }
    fn kv_set(&mut self, namespace: &str, k: &[u8], value: &[u8]) -> Result<()> {
        self.set(kv_key(namespace, k), value.to_vec());
        Ok(())
    }
}

/// One page of [`civkit_framework::Persister::export`]: address tombstones,
/// id tombstones, service keys, then event bodies in commit order (the
/// tables in key order); the cursor is the last key returned.
pub(crate) fn export<R: Reader>(r: &R, cursor: Option<Vec<u8>>, max: usize) -> Result<Export> {
    let mut records = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    for table in [ADDRESS_TOMBSTONES, ID_TOMBSTONES, KV, EVENTS] {
        let first = [table];
        let lower = match &cursor {
            Some(c) if c.first() > Some(&table) => continue,
            Some(c) if c.first() == Some(&table) => Bound::Excluded(c.as_slice()),
            _ => Bound::Included(first.as_slice()),
        };
        let after = [table.wrapping_add(1)];
        let upper = match table {
            EVENTS => Bound::Unbounded,
            _ => Bound::Excluded(after.as_slice()),
        };
        for entry in r.range(lower, upper)? {
            let (k, v) = entry?;
            if records.len() >= max.max(1) {
                return Ok(Export {
                    records,
                    next: last,
                });
            }
            records.push(exported(table, &k, &v)?);
            last = Some(k.into_owned());
        }
    }
    Ok(Export {
        records,
        next: None,
    })
}

/// The record of one entry of an exported table.
fn exported(table: u8, k: &[u8], v: &[u8]) -> Result<Record> {
    let bad = || store_err(format!("unreadable entry in table {:?}", table as char));
    let k = &k[1..];
    Ok(match table {
        ADDRESS_TOMBSTONES => {
            let pubkey = PublicKey::from_slice(k.get(..32).ok_or_else(bad)?).map_err(|_| bad())?;
            let kind = u16::from_be_bytes(
                k.get(32..34)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            );
            let d = String::from_utf8(k[34..].to_vec()).map_err(|_| bad())?;
            let until = u64::from_be_bytes(v.try_into().map_err(|_| bad())?);
            Record::AddressTombstone {
                address: Address { kind, pubkey, d },
                until: Timestamp::from(until),
            }
        }
        ID_TOMBSTONES => Record::IdTombstone {
            id: EventId::from_slice(k).map_err(|_| bad())?,
            author: PublicKey::from_slice(v).map_err(|_| bad())?,
        },
        KV => {
            let split = k.iter().position(|b| *b == 0).ok_or_else(bad)?;
            Record::Kv {
                namespace: String::from_utf8(k[..split].to_vec()).map_err(|_| bad())?,
                key: k[split + 1..].to_vec(),
                value: v.to_vec(),
            }
        }
        _ => Record::Event(String::from_utf8(v.to_vec()).map_err(|_| bad())?),
    })
}

/// Events rewritten per atomic, durable group by [`upgrade`].
const UPGRADE_GROUP: usize = 5_000;

/// Bring the store to the current layout before anything reads it: mark a
/// new store; rewrite the bodies of a layout-1 store and drop the by-author
/// index of a layout-1 or layout-2 store, in groups (each atomic and
/// durable, so an upgrade cut short resumes on the next open); refuse a
/// store of a newer layout. Returns how many entries were rewritten or
/// dropped.
pub(crate) fn upgrade<E: Engine>(engine: &E) -> Result<u64> {
    let layout = match engine.reader()?.get(&meta_key("layout"))? {
        Some(v) => Some(u64_of(&v)?),
        None => None,
    };
    match layout {
        Some(LAYOUT) => return Ok(0),
        Some(newer) if newer > LAYOUT => {
            return Err(store_err(format!(
                "the store has layout {newer}; this civkitd reads layout {LAYOUT} and older"
            )))
        }
        _ => {}
    }
    let mut moved = 0;
    loop {
        let reader = engine.reader()?;
        let old = reader
            .prefixed(&[LEGACY_EVENTS])?
            .take(UPGRADE_GROUP)
            .map(|r| {
                let (k, v) = r?;
                Ok((k.into_owned(), decode(&v)?))
            })
            .collect::<Result<Vec<(Vec<u8>, Event)>>>()?;
        if old.is_empty() {
            break;
        }
        let mut overlay = Overlay::new(reader)?;
        for (body, e) in &old {
            overlay.unset(body.clone());
            for k in index_keys(e, e.id.as_bytes()) {
                overlay.unset(k);
            }
            overlay.insert(e)?;
        }
        overlay.commit_op();
        engine.write(overlay.finish().0)?;
        engine.sync()?;
        moved += old.len() as u64;
    }
    loop {
        let dropped = engine
            .reader()?
            .prefixed(&[LEGACY_BY_AUTHOR])?
            .take(UPGRADE_GROUP)
            .map(|r| Ok((r?.0.into_owned(), None)))
            .collect::<Result<Vec<Change>>>()?;
        if dropped.is_empty() {
            break;
        }
        moved += dropped.len() as u64;
        engine.write(dropped)?;
        engine.sync()?;
    }
    let mark = (meta_key("layout"), Some(LAYOUT.to_be_bytes().to_vec()));
    engine.write(vec![mark])?;
    engine.sync()?;
    if moved > 0 {
        tracing::info!(
            entries = moved,
            layout = LAYOUT,
            "rewrote the store in the current layout"
        );
    }
    Ok(moved)
}

/// Trees of the first layout (one sled tree per table), in prefix order of
/// the current one.
const LEGACY_TREES: [(&str, u8); 11] = [
    ("events", LEGACY_EVENTS),
    ("by_time", BY_TIME),
    ("by_author", LEGACY_BY_AUTHOR),
    ("by_kind", BY_KIND),
    ("by_author_kind", BY_AUTHOR_KIND),
    ("by_tag", BY_TAG),
    ("addresses", ADDRESSES),
    ("expiry", EXPIRY),
    ("id_tombstones", ID_TOMBSTONES),
    ("address_tombstones", ADDRESS_TOMBSTONES),
    ("kv", KV),
];

/// Move a store of the first layout into the one tree, then drop the old
/// trees. Safe to rerun after a crash: copying is idempotent, and a tree is
/// dropped only after the copy is flushed.
pub(crate) fn migrate_legacy(db: &sled::Db, tree: &sled::Tree) -> Result<u64> {
    let names = db.tree_names();
    let mut moved = 0;
    for (name, prefix) in LEGACY_TREES {
        if !names.iter().any(|n| n.as_ref() == name.as_bytes()) {
            continue;
        }
        let old = db.open_tree(name).map_err(store_err)?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for item in old.iter() {
            let (k, v) = item.map_err(store_err)?;
            batch.insert(key(prefix, &[&k]), v.to_vec());
            in_batch += 1;
            moved += 1;
            if in_batch == 10_000 {
                tree.apply_batch(std::mem::take(&mut batch))
                    .map_err(store_err)?;
                in_batch = 0;
            }
        }
        tree.apply_batch(batch).map_err(store_err)?;
        db.flush().map_err(store_err)?;
        db.drop_tree(name).map_err(store_err)?;
    }
    if moved > 0 {
        db.flush().map_err(store_err)?;
        tracing::info!(entries = moved, "moved the store to the one-tree layout");
    }
    Ok(moved)
}
