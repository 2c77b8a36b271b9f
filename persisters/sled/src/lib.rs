//! # civkit-sled
//!
//! The embedded [`Persister`]s of civkit, kept in the node's data directory:
//! LMDB through `heed` (`type = "lmdb"`, the default) and sled
//! (`type = "sled"`). In `docs/ARCHITECTURE.md` they sit under the node core,
//! behind the `Persister` trait. One key layout, writer and query code run
//! over both; an [`engine::Engine`] only reads keys and ranges, applies one
//! group of changes atomically and makes it durable.
//!
//! - **Durability**: all writes go through one writer thread that applies
//!   every queued write, writes the group as one atomic engine write (an
//!   LMDB transaction, a sled batch), makes it durable once, and only then
//!   resolves each caller's future (group commit). An event counts as
//!   stored (for duplicates) only once durable; after a failed write or
//!   flush every write is refused until a flush succeeds again.
//! - **Atomicity**: everything lives in one ordered key space under
//!   per-table prefixes, so an event, its indexes, what it replaces or
//!   deletes and its claims land together or not at all, also across a crash.
//! - **Semantics**: replacement, deletion and claims come from the
//!   framework's shared [`civkit_framework::persister::apply_save`].
//! - **Queries**: by time, author, kind, author+kind, single-letter tag
//!   (value hashed), address, expiration; prefixes merged lazily under one
//!   `limit`, a scan budget per query, `COUNT` from the indexes.

#![deny(unsafe_code)] // one block: opening the LMDB map (engine.rs)

pub mod engine;
mod index;
mod query;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use civkit_framework::metrics::StoreMetrics;
use civkit_framework::persister::{check_namespace, Claim, Export, Record, StoredEvent};
use civkit_framework::{BuildContext, Error, Persister, Registry, Result, SaveOutcome, StoreStats};
use nostr::{Event, EventId, Filter, Timestamp};
use tokio::sync::{mpsc, oneshot};

use engine::{Engine, Reader};
use writer::{Shared, WriteOp};

pub(crate) fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store {
        backend: "embedded store",
        message: e.to_string(),
    }
}

/// Config of `[persister] type = "lmdb"` and `type = "sled"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Directory of the database, relative to `node.data_dir` unless
    /// absolute; empty for `events.lmdb` or `events.sled`.
    pub path: PathBuf,
    /// sled only: page cache size in MiB.
    pub cache_mib: u64,
    /// LMDB only: the most the database may grow to, in GiB (address
    /// space reserved, not disk).
    pub map_size_gib: u64,
    /// Most writes applied before one fsync (group commit batch).
    pub max_batch: usize,
    /// Most stored entries (index entries visited plus events read) one
    /// `REQ` or `COUNT` may read; a query that needs more is refused.
    pub max_scan: usize,
    /// Queries that may read more stored entries than this (and every
    /// `COUNT` that is not of the whole store) run one at a time, so that
    /// expensive queries from anyone cannot take every core from cheap ones.
    pub heavy_query_entries: usize,
    /// Percent of one core the one-at-a-time heavy queries may use: after
    /// each, the next waits in proportion to how long it ran.
    pub heavy_query_share: u32,
}

/// The config of the sled persister (the same fields).
pub type SledConfig = EmbeddedConfig;

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            path: PathBuf::new(),
            cache_mib: 256,
            map_size_gib: 1024,
            max_batch: 4096,
            max_scan: 200_000,
            heavy_query_entries: 1_000,
            heavy_query_share: 50,
        }
    }
}

const EXAMPLE: &str = r#"# Database directory, relative to node.data_dir unless absolute (empty:
# events.lmdb or events.sled).
path = ""
# LMDB only: the most the database may grow to, in GiB (address space, not disk).
map_size_gib = 1024
# sled only: page cache size in MiB.
cache_mib = 256
# Most writes applied before one fsync (group commit batch).
max_batch = 4096
# Most stored entries one REQ or COUNT may read; a query that needs more is refused.
max_scan = 200000
# Queries that may read more entries than this (and COUNTs) run one at a time.
heavy_query_entries = 1000
# Percent of one core those heavy queries may use, one after another.
heavy_query_share = 50
"#;

/// Register the `lmdb` (default) and `sled` persisters.
pub fn register(registry: &mut Registry) {
    registry.register_persister(
        "lmdb",
        "embedded LMDB database in the data directory (default)",
        EXAMPLE,
        |cfg: EmbeddedConfig, ctx: &BuildContext| {
            let path = ctx.data_dir.join(cfg.path_or("events.lmdb"));
            // sled was the default before: do not start empty beside it.
            let sled = ctx.data_dir.join("events.sled");
            if !path.exists() && sled.exists() {
                return Err(Error::Invalid(format!(
                    "{} holds a sled store and no LMDB one: set [persister] type = \"sled\" to keep using it",
                    ctx.data_dir.display()
                )));
            }
            let store = LmdbPersister::open_with(&path, &cfg)?;
            Ok(Arc::new(store.record_metrics(StoreMetrics::new(&ctx.metrics()))) as Arc<dyn Persister>)
        },
    );
    registry.register_persister(
        "sled",
        "embedded sled database in the data directory",
        EXAMPLE,
        |cfg: EmbeddedConfig, ctx: &BuildContext| {
            let path = ctx.data_dir.join(cfg.path_or("events.sled"));
            let store = SledPersister::open_with(&path, &cfg)?;
            Ok(
                Arc::new(store.record_metrics(StoreMetrics::new(&ctx.metrics())))
                    as Arc<dyn Persister>,
            )
        },
    );
}

impl EmbeddedConfig {
    fn path_or(&self, default: &str) -> PathBuf {
        if self.path.as_os_str().is_empty() {
            PathBuf::from(default)
        } else {
            self.path.clone()
        }
    }
}

/// The embedded persister over one engine ([`engine::Lmdb`] or
/// [`engine::Sled`]).
pub struct EmbeddedPersister<E: Engine> {
    engine: Arc<E>,
    writer: mpsc::Sender<WriteOp>,
    thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
    max_scan: usize,
    heavy_query_entries: usize,
    heavy_query_share: u32,
    /// Cheap queries run up to one per core; heavy ones one at a time.
    light: Arc<tokio::sync::Semaphore>,
    heavy: Arc<tokio::sync::Semaphore>,
    path: PathBuf,
}

/// The persister on LMDB.
pub type LmdbPersister = EmbeddedPersister<engine::Lmdb>;
/// The persister on sled.
pub type SledPersister = EmbeddedPersister<engine::Sled>;

impl<E: Engine> Drop for EmbeddedPersister<E> {
    /// Close the write queue and wait for the writer's final flush, so the
    /// database is released when the persister is gone.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.writer, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<E: Engine> std::fmt::Debug for EmbeddedPersister<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPersister")
            .field("engine", &E::NAME)
            .field("path", &self.path)
            .finish()
    }
}

impl SledPersister {
    /// Open (or create) a sled database at `path` with default settings.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &EmbeddedConfig::default())
    }

    /// Open (or create) a sled database at `path`.
    pub fn open_with(path: &Path, cfg: &EmbeddedConfig) -> Result<Self> {
        Self::start(
            Arc::new(engine::Sled::open(path, cfg.cache_mib)?),
            path,
            cfg,
            None,
        )
    }
}

impl LmdbPersister {
    /// Open (or create) an LMDB database at `path` with default settings.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &EmbeddedConfig::default())
    }

    /// Open the LMDB database at `path`, waiting up to `wait` while another
    /// persister of this process still holds it (a node that is stopping
    /// lets go of its store only when its last task ends).
    pub async fn open_when_free(path: &Path, wait: std::time::Duration) -> Result<Self> {
        let until = std::time::Instant::now() + wait;
        loop {
            match Self::open(path) {
                Err(_) if std::time::Instant::now() < until => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                done => return done,
            }
        }
    }

    /// Open (or create) an LMDB database at `path`.
    pub fn open_with(path: &Path, cfg: &EmbeddedConfig) -> Result<Self> {
        Self::start(
            Arc::new(engine::Lmdb::open(path, cfg.map_size_gib)?),
            path,
            cfg,
            None,
        )
    }
}

impl<E: Engine> EmbeddedPersister<E> {
    /// Record write batch sizes and sync times in `metrics` from now on.
    pub fn record_metrics(self, metrics: civkit_framework::metrics::StoreMetrics) -> Self {
        let _ = self.shared.metrics.set(metrics);
        self
    }

    /// Start the writer over an open engine; `flush` replaces the engine's
    /// sync (fault-injection tests).
    fn start(
        engine: Arc<E>,
        path: &Path,
        cfg: &EmbeddedConfig,
        flush: Option<writer::FlushFn>,
    ) -> Result<Self> {
        index::upgrade(&*engine)?;
        let shared = Arc::new(Shared::default());
        let events = engine.reader()?.prefixed(&[index::EVENTS])?.count() as u64;
        shared.events.store(events, Ordering::Relaxed);
        let flush = flush.unwrap_or_else(|| writer::engine_sync(engine.clone()));
        let (writer, thread) =
            writer::spawn(engine.clone(), shared.clone(), cfg.max_batch.max(1), flush)?;
        Ok(EmbeddedPersister {
            engine,
            writer,
            thread: Some(thread),
            shared,
            max_scan: cfg.max_scan.max(1),
            heavy_query_entries: cfg.heavy_query_entries,
            heavy_query_share: cfg.heavy_query_share.clamp(1, 100),
            light: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            heavy: Arc::new(tokio::sync::Semaphore::new(1)),
            path: path.to_path_buf(),
        })
    }

    async fn write<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteOp) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .await
            .map_err(|_| store_err("the writer thread has stopped"))?;
        rx.await
            .map_err(|_| store_err("the writer thread has stopped"))?
    }

    /// Run a read on the blocking pool, after taking a permit of the gate
    /// its cost (in stored entries, at most) calls for.
    async fn read<T: Send + 'static>(
        &self,
        cost: usize,
        f: impl FnOnce(&E::Reader<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let heavy = cost > self.heavy_query_entries;
        let gate = if heavy { &self.heavy } else { &self.light };
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| store_err("the store is closing"))?;
        let engine = self.engine.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || f(&engine.reader()?))
            .await
            .map_err(store_err)?;
        if heavy {
            // Hold the lane idle so heavy queries use at most their share.
            let ran = started.elapsed();
            let share = f64::from(self.heavy_query_share) / 100.0;
            let pause = ran.mul_f64((1.0 - share) / share);
            // Detached: the lane reopens on its own once the pause is over.
            drop(tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                drop(permit);
            }));
        } else {
            drop(permit);
        }
        result
    }
}

#[async_trait]
impl<E: Engine> Persister for EmbeddedPersister<E> {
    fn backend(&self) -> &'static str {
        E::NAME
    }
    async fn save_event(&self, event: &Event, claims: &[Claim]) -> Result<SaveOutcome> {
        for c in claims {
            check_namespace(&c.namespace)?;
        }
        let (event, claims) = (Box::new(event.clone()), claims.to_vec());
        self.write(|tx| WriteOp::Save(event, claims, tx)).await
    }
    async fn event_exists(&self, id: &EventId) -> Result<bool> {
        // The store first: an id found there and no longer unflushed is durable.
        let present = self
            .engine
            .reader()?
            .get(&index::id_key(id.as_bytes()))?
            .is_some();
        Ok(present && self.shared.durable(id))
    }
    async fn query(&self, filters: &[Filter], now: Timestamp) -> Result<Vec<Event>> {
        let stored = self.query_stored(filters, now).await?;
        stored.into_iter().map(StoredEvent::into_event).collect()
    }
    async fn query_stored(&self, filters: &[Filter], now: Timestamp) -> Result<Vec<StoredEvent>> {
        let (filters, max) = (filters.to_vec(), self.max_scan);
        let cost = query::query_cost(&filters, max);
        self.read(cost, move |t| query::query(t, &filters, now, max))
            .await
    }
    async fn count(&self, filters: &[Filter], now: Timestamp) -> Result<u64> {
        let (filters, max) = (filters.to_vec(), self.max_scan);
        let total = self.shared.events.load(Ordering::Relaxed);
        let whole_store = |f: &Filter| {
            let mut f = f.clone();
            f.limit = None;
            f == Filter::new()
        };
        let whole = filters.iter().any(whole_store);
        // The whole store is a counter; anything else reads its range.
        let cost = if whole { 0 } else { max };
        self.read(cost, move |t| {
            let expired = query::expired(t, now, max)?;
            if whole {
                return Ok(total.saturating_sub(expired.len() as u64));
            }
            query::count(t, &filters, now, max, &expired)
        })
        .await
    }
    async fn delete_events(&self, ids: &[EventId]) -> Result<u64> {
        self.write(|tx| WriteOp::Delete(ids.to_vec(), tx)).await
    }
    async fn remove_expired(&self, now: Timestamp) -> Result<u64> {
        self.write(|tx| WriteOp::Expire(now, tx)).await
    }
    async fn kv_get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_namespace(ns)?;
        Ok(self
            .engine
            .reader()?
            .get(&index::kv_key(ns, key))?
            .map(|v| v.into_owned()))
    }
    async fn kv_write(
        &self,
        ns: &str,
        key: &[u8],
        value: Option<&[u8]>,
        only_new: bool,
    ) -> Result<bool> {
        check_namespace(ns)?;
        let (key, value) = (index::kv_key(ns, key), value.map(<[u8]>::to_vec));
        self.write(|tx| WriteOp::KvPut {
            key,
            value,
            only_new,
            tx,
        })
        .await
    }
    async fn kv_claim(&self, claims: &[Claim]) -> Result<Option<Claim>> {
        for c in claims {
            check_namespace(&c.namespace)?;
        }
        let claims = claims.to_vec();
        self.write(|tx| WriteOp::Claim(claims, tx)).await
    }
    async fn kv_scan(&self, ns: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        check_namespace(ns)?;
        let start = index::kv_key(ns, prefix);
        let skip = index::kv_key(ns, b"").len();
        let reader = self.engine.reader()?;
        let pairs = reader
            .prefixed(&start)?
            .map(|r| r.map(|(k, v)| (k[skip..].to_vec(), v.into_owned())))
            .collect();
        pairs
    }
    async fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats {
            events: self.shared.events.load(Ordering::Relaxed),
            size_bytes: self.engine.size_on_disk()?,
            write_error: self.shared.write_error(),
        })
    }
    async fn flush(&self) -> Result<()> {
        self.write(WriteOp::Flush).await
    }
    async fn export(&self, cursor: Option<Vec<u8>>, max: usize) -> Result<Export> {
        index::export(&self.engine.reader()?, cursor, max)
    }
    async fn import(&self, records: &[Record]) -> Result<()> {
        let records = records.to_vec();
        self.write(|tx| WriteOp::Import(records, tx)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

    use std::sync::atomic::AtomicBool;

    use civkit_framework::testing::conformance::events::event;
    use nostr::Keys;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn failing_flush(fail: Arc<AtomicBool>, mut real: writer::FlushFn) -> writer::FlushFn {
        Box::new(move || {
            if fail.load(Ordering::SeqCst) {
                Err("injected fsync failure".into())
            } else {
                real()
            }
        })
    }

    #[tokio::test]
    async fn a_failed_flush_stops_acknowledgements_until_the_store_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let fail = Arc::new(AtomicBool::new(false));
        // sled: the write is visible before its flush, which fails.
        let path = dir.path().join("db");
        let engine = Arc::new(engine::Sled::open(&path, 16).unwrap());
        let real = writer::engine_sync(engine.clone());
        let p = SledPersister::start(
            engine,
            &path,
            &EmbeddedConfig::default(),
            Some(failing_flush(fail.clone(), real)),
        )
        .unwrap();
        let k = Keys::generate();
        let first = event(&k, 1, NOW, "durable", &[]);
        assert!(matches!(
            p.save_event(&first, &[]).await.unwrap(),
            SaveOutcome::Stored { .. }
        ));

        fail.store(true, Ordering::SeqCst);
        let lost = event(&k, 1, NOW, "not durable", &[]);
        assert!(
            p.save_event(&lost, &[]).await.is_err(),
            "no OK without fsync"
        );
        // The write reached the tree but not the disk: it is not reported as
        // stored, so a second copy cannot be acknowledged as a duplicate.
        assert!(!p.event_exists(&lost.id).await.unwrap());
        let why = p.stats().await.unwrap().write_error.expect("unhealthy");
        assert!(why.contains("injected fsync failure"), "{why}");
        // Every write is refused while the store stays unhealthy.
        assert!(p.save_event(&lost, &[]).await.is_err());
        assert!(p.kv_put("svc", b"k", b"v").await.is_err());
        assert!(p.event_exists(&first.id).await.unwrap());

        fail.store(false, Ordering::SeqCst);
        assert_eq!(
            p.save_event(&lost, &[]).await.unwrap(),
            SaveOutcome::Duplicate,
            "after a flush succeeds the earlier write is durable"
        );
        assert!(p.event_exists(&lost.id).await.unwrap());
        assert_eq!(p.stats().await.unwrap().write_error, None);
    }

    /// LMDB whose group writes fail while `fail` is set.
    struct FailingWrites {
        inner: engine::Lmdb,
        fail: Arc<AtomicBool>,
    }

    impl Engine for FailingWrites {
        type Reader<'a> = engine::LmdbReader<'a>;
        const NAME: &'static str = "lmdb";
        fn reader(&self) -> Result<engine::LmdbReader<'_>> {
            self.inner.reader()
        }
        fn write(&self, changes: Vec<engine::Change>) -> Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(store_err("injected write failure (disk full)"));
            }
            self.inner.write(changes)
        }
        fn sync(&self) -> Result<()> {
            self.inner.sync()
        }
        fn size_on_disk(&self) -> Result<u64> {
            self.inner.size_on_disk()
        }
    }

    #[tokio::test]
    async fn a_failed_write_is_never_acknowledged_and_the_store_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let fail = Arc::new(AtomicBool::new(false));
        let engine = Arc::new(FailingWrites {
            inner: engine::Lmdb::open(&path, 1).unwrap(),
            fail: fail.clone(),
        });
        let p = EmbeddedPersister::start(engine, &path, &EmbeddedConfig::default(), None).unwrap();
        let k = Keys::generate();
        let first = event(&k, 1, NOW, "stored", &[]);
        p.save_event(&first, &[]).await.unwrap();

        fail.store(true, Ordering::SeqCst);
        let lost = event(&k, 1, NOW, "write fails", &[]);
        let err = p.save_event(&lost, &[]).await.unwrap_err().to_string();
        assert!(err.contains("injected write failure"), "{err}");
        assert!(!p.event_exists(&lost.id).await.unwrap());
        assert!(p.stats().await.unwrap().write_error.is_some());
        assert!(p.kv_insert_new("svc", b"k", b"v").await.is_err());
        assert_eq!(p.stats().await.unwrap().events, 1, "nothing counted");

        // Once writes work again the same event is stored, not taken for a
        // duplicate of the write that failed.
        fail.store(false, Ordering::SeqCst);
        assert!(matches!(
            p.save_event(&lost, &[]).await.unwrap(),
            SaveOutcome::Stored { .. }
        ));
        assert!(p.event_exists(&lost.id).await.unwrap());
        assert_eq!(p.stats().await.unwrap().write_error, None);
        assert_eq!(p.stats().await.unwrap().events, 2);
        let all = p
            .query(&[Filter::new()], Timestamp::from_secs(NOW))
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        // A claim refused with the failed write is free to take afterwards.
        assert!(p.kv_insert_new("svc", b"k", b"v").await.unwrap());
    }

    #[tokio::test]
    async fn a_store_of_the_first_layout_is_moved_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let e = event(&Keys::generate(), 1, NOW, "old", &[&["t", "x"]]);
        {
            let db = sled::open(&path).unwrap();
            let events = db.open_tree("events").unwrap();
            events
                .insert(e.id.as_bytes(), nostr::JsonUtil::as_json(&e).as_bytes())
                .unwrap();
            let mut by_time = (u64::MAX - NOW).to_be_bytes().to_vec();
            by_time.extend_from_slice(e.id.as_bytes());
            db.open_tree("by_time")
                .unwrap()
                .insert(by_time, b"")
                .unwrap();
            db.open_tree("kv")
                .unwrap()
                .insert(b"svc\0k", b"v".as_slice())
                .unwrap();
            db.flush().unwrap();
        }
        let p = SledPersister::open(&path).unwrap();
        assert_eq!(p.stats().await.unwrap().events, 1);
        assert!(p.event_exists(&e.id).await.unwrap());
        let got = p
            .query(&[Filter::new()], Timestamp::from_secs(NOW))
            .await
            .unwrap();
        assert_eq!(got, vec![e]);
        assert_eq!(p.kv_get("svc", b"k").await.unwrap(), Some(b"v".to_vec()));
        assert!(!p
            .engine
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == b"events"));
    }

    /// The keys layout 1 wrote for `e`: its body under its id, and every
    /// index key ending in `inv ‖ id` (the expiry key in `expiration ‖ id`).
    fn layout_1_keys(e: &Event) -> Vec<engine::Change> {
        use index::{inv, key, tag_hash};
        let (id, ts, pk) = (e.id.to_bytes(), inv(e.created_at), e.pubkey.to_bytes());
        let kind = e.kind.as_u16().to_be_bytes();
        let mut keys = vec![
            key(b't', &[&ts, &id]),
            key(b'a', &[&pk, &ts, &id]),
            key(b'k', &[&kind, &ts, &id]),
            key(b'K', &[&pk, &kind, &ts, &id]),
        ];
        for tag in e.tags.iter() {
            if let (Some(l), Some(v)) = (tag.single_letter_tag(), tag.content()) {
                keys.push(key(b'g', &[&[l.as_char() as u8], &tag_hash(v), &ts, &id]));
            }
        }
        if let Some(exp) = civkit_framework::kinds::expiration_of(e) {
            keys.push(key(b'x', &[&exp.as_secs().to_be_bytes(), &id]));
        }
        let body = nostr::JsonUtil::as_json(e).into_bytes();
        let mut changes: Vec<engine::Change> =
            keys.into_iter().map(|k| (k, Some(vec![]))).collect();
        changes.push((key(b'e', &[&id]), Some(body)));
        changes
    }

    #[tokio::test]
    async fn a_store_of_layout_1_is_rewritten_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let k = Keys::generate();
        let later = (NOW + 3600).to_string();
        let events: Vec<Event> = (0..12_000u64)
            .map(|i| {
                event(
                    &k,
                    1,
                    NOW - i,
                    "old",
                    &[&["t", if i % 2 == 0 { "even" } else { "odd" }]],
                )
            })
            .collect();
        let expired = event(&k, 1, NOW, "gone", &[&["expiration", "1"]]);
        let expiring = event(&k, 1, NOW, "soon", &[&["expiration", &later]]);
        {
            let engine = engine::Lmdb::open(&path, 1).unwrap();
            let mut changes: Vec<engine::Change> = events
                .iter()
                .chain([&expired, &expiring])
                .flat_map(layout_1_keys)
                .collect();
            changes.push((index::kv_key("svc", b"k"), Some(b"v".to_vec())));
            changes.sort();
            engine.write(changes).unwrap();
            engine.sync().unwrap();
        }
        // More events than one upgrade group: the rewrite takes several.
        let p = LmdbPersister::open(&path).unwrap();
        let now = Timestamp::from_secs(NOW);
        assert_eq!(p.stats().await.unwrap().events, 12_002);
        assert!(p.event_exists(&events[11_999].id).await.unwrap());
        let even = Filter::new().hashtag("even").limit(3);
        let got = p.query(&[even], now).await.unwrap();
        assert_eq!(
            got,
            vec![events[0].clone(), events[2].clone(), events[4].clone()]
        );
        let by_author = Filter::new()
            .author(k.public_key())
            .kind(nostr::Kind::TextNote);
        assert_eq!(
            p.count(std::slice::from_ref(&by_author), now)
                .await
                .unwrap(),
            12_001
        );
        assert_eq!(
            p.count(&[Filter::new().hashtag("odd")], now).await.unwrap(),
            6_000
        );
        let ids = Filter::new().ids([expiring.id, events[7].id]);
        assert_eq!(p.query(&[ids], now).await.unwrap().len(), 2);
        assert_eq!(p.kv_get("svc", b"k").await.unwrap(), Some(b"v".to_vec()));
        // Expiry and deletion find the rewritten events.
        assert_eq!(p.remove_expired(now).await.unwrap(), 1);
        assert_eq!(p.delete_events(&[events[0].id]).await.unwrap(), 1);
        assert_eq!(p.count(&[by_author], now).await.unwrap(), 12_000);
        let author_only = Filter::new().author(k.public_key());
        assert_eq!(p.count(&[author_only], now).await.unwrap(), 12_000);
        // Nothing of layout 1 is left, and a second open rewrites nothing.
        let reader = p.engine.reader().unwrap();
        assert_eq!(reader.prefixed(b"e").unwrap().count(), 0);
        assert_eq!(reader.prefixed(b"a").unwrap().count(), 0);
        let tails = reader.prefixed(b"t").unwrap().map(|r| r.unwrap().0.len());
        assert!(tails.into_iter().all(|n| n == 1 + index::TAIL));
        drop(reader);
        drop(p);
        let engine = engine::Lmdb::open(&path, 1).unwrap();
        assert_eq!(index::upgrade(&engine).unwrap(), 0);
    }

    #[tokio::test]
    async fn a_store_of_layout_2_loses_its_author_index_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let k = Keys::generate();
        let events: Vec<Event> = (0..3u64).map(|i| event(&k, 1, NOW - i, "x", &[])).collect();
        {
            let p = LmdbPersister::open(&path).unwrap();
            for e in &events {
                p.save_event(e, &[]).await.unwrap();
            }
        }
        {
            // What layout 2 also held: `a ‖ pubkey ‖ tail` per event (more
            // than one upgrade group of them), and its mark.
            let engine = engine::Lmdb::open(&path, 1).unwrap();
            let pk = k.public_key().to_bytes();
            let mut changes: Vec<engine::Change> = (0..6_000u64)
                .map(|i| {
                    (
                        index::key(b'a', &[&pk, &[0; 16], &i.to_be_bytes()]),
                        Some(vec![]),
                    )
                })
                .collect();
            let layout = index::key(b'M', &[b"layout"]);
            changes.push((layout, Some(2u64.to_be_bytes().to_vec())));
            changes.sort();
            engine.write(changes).unwrap();
            engine.sync().unwrap();
        }
        let p = LmdbPersister::open(&path).unwrap();
        let reader = p.engine.reader().unwrap();
        assert_eq!(reader.prefixed(b"a").unwrap().count(), 0);
        drop(reader);
        let now = Timestamp::from_secs(NOW);
        let got = p
            .query(&[Filter::new().author(k.public_key())], now)
            .await
            .unwrap();
        assert_eq!(got, events);
        drop(p);
        let engine = engine::Lmdb::open(&path, 1).unwrap();
        assert_eq!(index::upgrade(&engine).unwrap(), 0);
    }

    #[tokio::test]
    async fn an_authors_events_are_merged_across_the_kinds_they_used() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(LmdbPersister::open(&dir.path().join("db")).unwrap());
        let (k, other) = (Keys::generate(), Keys::generate());
        let kinds = [0u16, 1, 5, 7, 1_059, 30_402, 65_535];
        let mut want = Vec::new();
        for i in 0..40u64 {
            let kind = kinds[i as usize % kinds.len()];
            // Kind 0 and 30402 are replaceable: keep one address each.
            let d = i.to_string();
            let e = event(&k, kind, NOW - i, "x", &[&["d", &d]]);
            p.save_event(&e, &[]).await.unwrap();
            p.save_event(&event(&other, kind, NOW - i, "y", &[]), &[])
                .await
                .unwrap();
            want.push(e);
        }
        let now = Timestamp::from_secs(NOW);
        want.retain(|e| e.kind.as_u16() != 0 || e.created_at.as_secs() == NOW);
        let f = Filter::new().author(k.public_key());
        assert_eq!(p.query(std::slice::from_ref(&f), now).await.unwrap(), want);
        assert_eq!(
            p.count(std::slice::from_ref(&f), now).await.unwrap(),
            want.len() as u64
        );
        let got = p.query(&[f.clone().limit(5)], now).await.unwrap();
        assert_eq!(got, want[..5]);
        let until = Timestamp::from_secs(NOW - 10);
        let got = p
            .query(&[f.clone().until(until).limit(3)], now)
            .await
            .unwrap();
        assert_eq!(
            got,
            want.iter()
                .filter(|e| e.created_at <= until)
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
        );

        // An author who used more kinds than a query may open cursors for
        // is refused with a reason, not served partly.
        let many = Keys::generate();
        let saves: Vec<_> = (0..=query::MAX_AUTHOR_KINDS as u16)
            .map(|kind| {
                let e = event(&many, 1_000 + kind, NOW, "k", &[]);
                let p = p.clone();
                tokio::spawn(async move { p.save_event(&e, &[]).await.unwrap() })
            })
            .collect();
        for s in saves {
            s.await.unwrap();
        }
        let err = p
            .query(&[Filter::new().author(many.public_key()).limit(10)], now)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("name the kinds"), "{err}");
        let named = Filter::new()
            .author(many.public_key())
            .kind(nostr::Kind::from_u16(1_000));
        assert_eq!(p.query(&[named], now).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn expired_events_are_left_out_however_many_wait_for_the_sweep() {
        // More expired events than a query collects by `seq`: an exact
        // plan falls back to decoding and checking each result.
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(LmdbPersister::open(&dir.path().join("db")).unwrap());
        let k = Keys::generate();
        let exp = (NOW + 10).to_string();
        let gone = query::EXPIRED_SET_MAX as u64 + 20;
        let saves: Vec<_> = (0..=gone)
            .map(|i| {
                let tags: &[&[&str]] = if i < gone {
                    &[&["expiration", &exp]]
                } else {
                    &[]
                };
                let e = event(&k, 1, NOW - i, "e", tags);
                let p = p.clone();
                tokio::spawn(async move { p.save_event(&e, &[]).await.unwrap() })
            })
            .collect();
        for s in saves {
            s.await.unwrap();
        }
        let kind = [Filter::new().kind(nostr::Kind::TextNote).limit(5_000)];
        let before = Timestamp::from_secs(NOW + 9);
        assert_eq!(
            p.query_stored(&kind, before).await.unwrap().len() as u64,
            gone + 1
        );
        let after = Timestamp::from_secs(NOW + 10);
        let left = p.query_stored(&kind, after).await.unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].event().unwrap().tags.is_empty());
        assert_eq!(p.count(&kind, after).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn tag_conditions_outside_the_index_are_probed_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = LmdbPersister::open(&dir.path().join("db")).unwrap();
        let (a, b) = (Keys::generate(), Keys::generate());
        let mut want = Vec::new();
        for i in 0..300u64 {
            let t = if i % 30 == 0 { "rare" } else { "common" };
            let q = if i % 60 == 0 { "x" } else { "y" };
            let e = event(&a, 1, NOW - i, "a", &[&["t", t], &["q", q]]);
            if t == "rare" && q == "x" {
                want.push(e.clone());
            }
            p.save_event(&e, &[]).await.unwrap();
            // Another author's events under the same tags never match.
            p.save_event(
                &event(&b, 1, NOW - i, "b", &[&["t", "rare"], &["q", "x"]]),
                &[],
            )
            .await
            .unwrap();
        }
        let now = Timestamp::from_secs(NOW);
        let q = nostr::SingleLetterTag::lowercase(nostr::Alphabet::Q);
        let t = nostr::SingleLetterTag::lowercase(nostr::Alphabet::T);
        // Author and kind from the index; both tag letters probed.
        let f = Filter::new()
            .author(a.public_key())
            .kind(nostr::Kind::TextNote)
            .custom_tags(t, ["rare", "never"])
            .custom_tag(q, "x");
        assert_eq!(p.query(&[f.clone().limit(100)], now).await.unwrap(), want);
        assert_eq!(p.count(&[f], now).await.unwrap(), want.len() as u64);
        // A tag from the index, another letter probed.
        let f = Filter::new()
            .hashtag("rare")
            .custom_tag(q, "y")
            .author(a.public_key());
        assert_eq!(p.query(&[f.limit(3)], now).await.unwrap().len(), 3);
        let none = Filter::new().custom_tag(t, "rare").custom_tag(q, "nothing");
        assert!(p.query(&[none], now).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_store_of_a_newer_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(LmdbPersister::open(&path).unwrap());
        {
            let engine = engine::Lmdb::open(&path, 1).unwrap();
            let layout = index::key(b'M', &[b"layout"]);
            engine
                .write(vec![(layout, Some(99u64.to_be_bytes().to_vec()))])
                .unwrap();
            engine.sync().unwrap();
        }
        let err = LmdbPersister::open(&path).unwrap_err().to_string();
        assert!(err.contains("layout 99"), "{err}");
    }

    #[tokio::test]
    async fn queries_read_within_their_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SledConfig {
            max_scan: 2_000,
            heavy_query_entries: 1_000,
            ..SledConfig::default()
        };
        let p = Arc::new(SledPersister::open_with(&dir.path().join("db"), &cfg).unwrap());
        let authors: Vec<Keys> = (0..50).map(|_| Keys::generate()).collect();
        let mut writes = Vec::new();
        for (i, a) in authors.iter().enumerate() {
            for j in 0..60u64 {
                let e = event(a, 1, NOW - j * 50 - i as u64, "x", &[&["t", "all"]]);
                let p = p.clone();
                writes.push(tokio::spawn(async move { p.save_event(&e, &[]).await }));
            }
        }
        for w in writes {
            w.await.unwrap().unwrap();
        }
        let now = Timestamp::from_secs(NOW);
        // 3,000 events; a filter over every author reads ~limit entries, not
        // limit per author.
        let all: Vec<_> = authors.iter().map(|k| k.public_key()).collect();
        let f = Filter::new().authors(all.clone()).limit(100);
        let got = p.query(&[f], now).await.unwrap();
        assert_eq!(got.len(), 100);
        assert!(got
            .windows(2)
            .all(|w| civkit_framework::kinds::result_order(&w[0], &w[1]).is_le()));
        // COUNT of the whole store and of one index reads no events.
        assert_eq!(p.count(&[Filter::new()], now).await.unwrap(), 3_000);
        let one = Filter::new().author(all[0]);
        assert_eq!(p.count(&[one], now).await.unwrap(), 60);
        // A filter the index cannot express, over more than the budget: refused.
        let broad = Filter::new().kind(nostr::Kind::TextNote).hashtag("all");
        let err = p
            .count(std::slice::from_ref(&broad), now)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), civkit_framework::ErrorKind::BadInput, "{err}");
        // With a limit the same filter is cheap.
        assert_eq!(p.query(&[broad.limit(10)], now).await.unwrap().len(), 10);
        // A short REQ on one index is light; a thousand authors, a wide
        // unindexed scan or a large limit are heavy.
        let heavy = cfg.heavy_query_entries;
        assert!(
            query::query_cost(
                &[Filter::new().kind(nostr::Kind::TextNote).limit(50)],
                200_000
            ) <= heavy
        );
        let many: Vec<_> = (0..1000).map(|_| Keys::generate().public_key()).collect();
        assert!(query::query_cost(&[Filter::new().authors(many).limit(100)], 200_000) > heavy);
        assert!(
            query::query_cost(
                &[Filter::new()
                    .kind(nostr::Kind::TextNote)
                    .hashtag("x")
                    .limit(500)],
                200_000
            ) > heavy
        );
        // since after until is empty, not a panic.
        let empty = Filter::new()
            .since(Timestamp::from_secs(NOW))
            .until(Timestamp::from_secs(NOW - 10));
        assert_eq!(p.count(&[empty], now).await.unwrap(), 0);
    }
}
