//! The ordered key-value engines under the store. Everything above this
//! module (the key layout, group commit, queries) is shared; an engine only
//! reads keys and ranges, applies one group's changes atomically, and makes
//! them durable.

use std::borrow::Cow;
use std::ops::Bound;
use std::path::Path;

use civkit_framework::Result;

use crate::store_err;

/// One change of a group: a value to set, or `None` to remove the key.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// One key and its value, borrowed from the engine where it can.
pub type Entry<'s> = (Cow<'s, [u8]>, Cow<'s, [u8]>);

/// Key-value pairs of a range, in key order.
pub type Entries<'s> = Box<dyn Iterator<Item = Result<Entry<'s>>> + 's>;

/// A read view of the engine.
pub trait Reader {
    fn get(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>>;
    fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Entries<'_>>;

    /// Entries with `start <= key <= end`.
    fn between(&self, start: &[u8], end: &[u8]) -> Result<Entries<'_>> {
        self.range(Bound::Included(start), Bound::Included(end))
    }

    /// Entries whose key starts with `prefix`.
    fn prefixed(&self, prefix: &[u8]) -> Result<Entries<'_>> {
        let mut end = prefix.to_vec();
        // The first key after every key with this prefix: drop trailing
        // 0xff bytes and increment the last byte left.
        while end.last() == Some(&0xff) {
            end.pop();
        }
        match end.last_mut() {
            Some(b) => {
                *b += 1;
                self.range(Bound::Included(prefix), Bound::Excluded(&end))
            }
            None => self.range(Bound::Included(prefix), Bound::Unbounded),
        }
    }
}

/// An engine: a reader at a time, one writer thread.
pub trait Engine: Send + Sync + 'static {
    type Reader<'a>: Reader
    where
        Self: 'a;
    /// The name of `[persister] type`, and in errors.
    const NAME: &'static str;
    fn reader(&self) -> Result<Self::Reader<'_>>;
    /// Apply one group's changes atomically; readers see all or none.
    fn write(&self, changes: Vec<Change>) -> Result<()>;
    /// Make every write so far durable.
    fn sync(&self) -> Result<()>;
    /// Bytes the database takes on disk.
    fn size_on_disk(&self) -> Result<u64>;
}

/// sled: one tree, batches applied atomically, `flush` to make them durable.
pub struct Sled {
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
}

impl Sled {
    pub(crate) fn open(path: &Path, cache_mib: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mib.saturating_mul(1024 * 1024))
            .flush_every_ms(None)
            .open()
            .map_err(|e| store_err(format!("opening {}: {e}", path.display())))?;
        let tree = db.open_tree(crate::index::TREE).map_err(store_err)?;
        crate::index::migrate_legacy(&db, &tree)?;
        Ok(Sled { db, tree })
    }
}

fn owned<'s>(r: sled::Result<(sled::IVec, sled::IVec)>) -> Result<Entry<'s>> {
    let (k, v) = r.map_err(store_err)?;
    Ok((Cow::Owned(k.to_vec()), Cow::Owned(v.to_vec())))
}

impl Reader for &sled::Tree {
    fn get(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>> {
        Ok(sled::Tree::get(self, key)
            .map_err(store_err)?
            .map(|v| Cow::Owned(v.to_vec())))
    }
    fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Entries<'_>> {
        let own = |b: Bound<&[u8]>| b.map(<[u8]>::to_vec);
        Ok(Box::new(
            sled::Tree::range(self, (own(start), own(end))).map(owned),
        ))
    }
}

impl Engine for Sled {
    type Reader<'a> = &'a sled::Tree;
    const NAME: &'static str = "sled";
    fn reader(&self) -> Result<&sled::Tree> {
        Ok(&self.tree)
    }
    fn write(&self, changes: Vec<Change>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in changes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.tree.apply_batch(batch).map_err(store_err)
    }
    fn sync(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(store_err)
    }
    fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(store_err)
    }
}

/// LMDB through heed: one database; a write transaction per group, whose
/// commit is atomic and durable at once (LMDB syncs data and meta page).
/// Readers are MVCC snapshots and never wait for the writer.
pub struct Lmdb {
    env: heed::Env<heed::WithoutTls>,
    db: heed::Database<heed::types::Bytes, heed::types::Bytes>,
}

/// A read transaction and the database it reads.
pub struct LmdbReader<'e> {
    txn: heed::RoTxn<'e, heed::WithoutTls>,
    db: heed::Database<heed::types::Bytes, heed::types::Bytes>,
}

impl Lmdb {
    pub(crate) fn open(path: &Path, map_size_gib: u64) -> Result<Self> {
        std::fs::create_dir_all(path)
            .map_err(|e| store_err(format!("creating {}: {e}", path.display())))?;
        let map_size = usize::try_from(map_size_gib.saturating_mul(1 << 30))
            .map_err(|_| store_err("map_size_gib does not fit this machine"))?;
        let mut options = heed::EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(map_size).max_dbs(1);
        // A store reopened in the same process (a daemon restarted in
        // place, as the federation tests do) may still be closing: its last
        // readers and writer thread let go within moments. Wait for that,
        // for 5 s at most, rather than fail.
        let mut waited = 0;
        let env = loop {
            // SAFETY: the map is memory that other writers of the files could
            // change under us. Only LMDB writes them: heed refuses to open one
            // path twice in a process, and other processes (a second civkitd,
            // `civkit-cli`) go through LMDB's own lock file. Nothing else writes
            // the node's data directory.
            #[allow(unsafe_code)]
            match unsafe { options.open(path) } {
                Err(heed::Error::EnvAlreadyOpened) if waited < 100 => {
                    waited += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => {
                    break other
                        .map_err(|e| store_err(format!("opening {}: {e}", path.display())))?
                }
            }
        };
        let mut txn = env.write_txn().map_err(store_err)?;
        let db = env
            .create_database(&mut txn, Some(crate::index::TREE))
            .map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        Ok(Lmdb { env, db })
    }
}

impl Reader for LmdbReader<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>> {
        Ok(self
            .db
            .get(&self.txn, key)
            .map_err(store_err)?
            .map(Cow::Borrowed))
    }
    fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Entries<'_>> {
        let iter = self.db.range(&self.txn, &(start, end)).map_err(store_err)?;
        Ok(Box::new(iter.map(|r| {
            r.map(|(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v)))
                .map_err(store_err)
        })))
    }
}

impl Engine for Lmdb {
    type Reader<'a> = LmdbReader<'a>;
    const NAME: &'static str = "lmdb";
    fn reader(&self) -> Result<LmdbReader<'_>> {
        Ok(LmdbReader {
            txn: self.env.read_txn().map_err(store_err)?,
            db: self.db,
        })
    }
    fn write(&self, changes: Vec<Change>) -> Result<()> {
        let mut txn = self.env.write_txn().map_err(store_err)?;
        // Keys past the last one are appended: LMDB then fills the page
        // instead of splitting it in half (event bodies, in `seq` order).
        let mut last = self
            .db
            .last(&txn)
            .map_err(store_err)?
            .map(|(k, _)| k.to_vec());
        for (k, v) in &changes {
            match v {
                Some(v) if last.as_ref().is_none_or(|l| k > l) => {
                    self.db
                        .put_with_flags(&mut txn, heed::PutFlags::APPEND, k, v)
                        .map_err(store_err)?;
                    last = Some(k.clone());
                }
                Some(v) => self.db.put(&mut txn, k, v).map_err(store_err)?,
                None => {
                    self.db.delete(&mut txn, k).map_err(store_err)?;
                }
            }
        }
        txn.commit().map_err(store_err)
    }
    fn sync(&self) -> Result<()> {
        self.env.force_sync().map_err(store_err)
    }
    fn size_on_disk(&self) -> Result<u64> {
        self.env.real_disk_size().map_err(store_err)
    }
}
