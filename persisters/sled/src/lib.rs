//! # civkit-sled
//!
//! The embedded default [`Persister`] of civkit, on the `sled` database, kept
//! in the node's data directory. In `docs/ARCHITECTURE.md` it sits under the node
//! core, behind the `Persister` trait.
//!
//! - **Durability**: all writes go through one writer thread that applies
//!   every queued write, then calls `flush` (fsync) once for the whole batch
//!   and only then resolves each caller's future (group commit).
//! - **Semantics**: replacement and deletion come from the framework's shared
//!   [`civkit_framework::persister::apply_save`].
//! - **Indexes**: by time, author, kind, author+kind, single-letter tag
//!   (value hashed), address, expiration. The query planner picks the most
//!   selective index for each filter and scans newest first.

#![forbid(unsafe_code)]

mod index;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use civkit_framework::persister::{merge_results, valid_namespace};
use civkit_framework::{BuildContext, Error, Persister, Registry, Result, SaveOutcome, StoreStats};
use nostr::{Event, EventId, Filter, Timestamp};
use tokio::sync::{mpsc, oneshot};

use index::Trees;
use writer::WriteOp;

pub(crate) fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store {
        backend: "sled",
        message: e.to_string(),
    }
}

/// Config of `[persister] type = "sled"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SledConfig {
    /// Directory of the database, relative to `node.data_dir` unless absolute.
    pub path: PathBuf,
    /// Page cache size in MiB.
    pub cache_mib: u64,
    /// Most writes applied before one fsync (group commit batch).
    pub max_batch: usize,
}

impl Default for SledConfig {
    fn default() -> Self {
        SledConfig {
            path: PathBuf::from("events.sled"),
            cache_mib: 256,
            max_batch: 4096,
        }
    }
}

const EXAMPLE: &str = r#"# Database directory, relative to node.data_dir unless absolute.
path = "events.sled"
# Page cache size in MiB.
cache_mib = 256
# Most writes applied before one fsync (group commit batch).
max_batch = 4096
"#;

/// Register the `sled` persister.
pub fn register(registry: &mut Registry) {
    registry.register_persister(
        "sled",
        "embedded sled database in the data directory (default)",
        EXAMPLE,
        |cfg: SledConfig, ctx: &BuildContext| {
            let path = ctx.data_dir.join(&cfg.path);
            Ok(Arc::new(SledPersister::open_with(&path, &cfg)?) as Arc<dyn Persister>)
        },
    );
}

/// The sled persister.
pub struct SledPersister {
    trees: Arc<Trees>,
    writer: mpsc::Sender<WriteOp>,
    thread: Option<std::thread::JoinHandle<()>>,
    events: Arc<AtomicU64>,
    path: PathBuf,
}

impl Drop for SledPersister {
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

impl std::fmt::Debug for SledPersister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledPersister")
            .field("path", &self.path)
            .finish()
    }
}

impl SledPersister {
    /// Open (or create) the database at `path` with default settings.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &SledConfig::default())
    }

    /// Open (or create) the database at `path`.
    pub fn open_with(path: &Path, cfg: &SledConfig) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cfg.cache_mib.saturating_mul(1024 * 1024))
            .flush_every_ms(None)
            .open()
            .map_err(|e| store_err(format!("opening {}: {e}", path.display())))?;
        let trees = Arc::new(Trees::open(db)?);
        let events = Arc::new(AtomicU64::new(trees.events.len() as u64));
        let (writer, thread) = writer::spawn(trees.clone(), events.clone(), cfg.max_batch.max(1))?;
        Ok(SledPersister {
            trees,
            writer,
            thread: Some(thread),
            events,
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

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Trees) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let trees = self.trees.clone();
        tokio::task::spawn_blocking(move || f(&trees))
            .await
            .map_err(store_err)?
    }
}

fn check_ns(ns: &str) -> Result<()> {
    if valid_namespace(ns) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("bad key-value namespace `{ns}`")))
    }
}

#[async_trait]
impl Persister for SledPersister {
    fn backend(&self) -> &'static str {
        "sled"
    }
    async fn save_event(&self, event: &Event) -> Result<SaveOutcome> {
        self.write(|tx| WriteOp::Save(Box::new(event.clone()), tx))
            .await
    }
    async fn event_exists(&self, id: &EventId) -> Result<bool> {
        self.trees
            .events
            .contains_key(id.as_bytes())
            .map_err(store_err)
    }
    async fn query(&self, filters: &[Filter], now: Timestamp) -> Result<Vec<Event>> {
        let filters = filters.to_vec();
        self.blocking(move |t| {
            let mut out = Vec::new();
            for f in &filters {
                out.extend(t.query_filter(f, now, f.limit.unwrap_or(usize::MAX))?);
            }
            Ok(merge_results(out))
        })
        .await
    }
    async fn count(&self, filters: &[Filter], now: Timestamp) -> Result<u64> {
        let filters = filters.to_vec();
        self.blocking(move |t| {
            let mut ids = HashSet::new();
            for f in &filters {
                ids.extend(
                    t.query_filter(f, now, usize::MAX)?
                        .into_iter()
                        .map(|e| e.id),
                );
            }
            Ok(ids.len() as u64)
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
        check_ns(ns)?;
        Ok(self
            .trees
            .kv
            .get(index::kv_key(ns, key))
            .map_err(store_err)?
            .map(|v| v.to_vec()))
    }
    async fn kv_put(&self, ns: &str, key: &[u8], value: &[u8]) -> Result<()> {
        check_ns(ns)?;
        let (k, v) = (index::kv_key(ns, key), value.to_vec());
        self.write(|tx| WriteOp::KvPut {
            key: k,
            value: Some(v),
            only_new: false,
            tx,
        })
        .await
        .map(|_| ())
    }
    async fn kv_insert_new(&self, ns: &str, key: &[u8], value: &[u8]) -> Result<bool> {
        check_ns(ns)?;
        let (k, v) = (index::kv_key(ns, key), value.to_vec());
        self.write(|tx| WriteOp::KvPut {
            key: k,
            value: Some(v),
            only_new: true,
            tx,
        })
        .await
    }
    async fn kv_delete(&self, ns: &str, key: &[u8]) -> Result<bool> {
        check_ns(ns)?;
        let k = index::kv_key(ns, key);
        self.write(|tx| WriteOp::KvPut {
            key: k,
            value: None,
            only_new: false,
            tx,
        })
        .await
    }
    async fn kv_scan(&self, ns: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        check_ns(ns)?;
        let start = index::kv_key(ns, prefix);
        let skip = ns.len() + 1;
        self.trees
            .kv
            .scan_prefix(start)
            .map(|r| {
                r.map(|(k, v)| (k[skip..].to_vec(), v.to_vec()))
                    .map_err(store_err)
            })
            .collect()
    }
    async fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats {
            events: self.events.load(Ordering::Relaxed),
            size_bytes: self.trees.db.size_on_disk().map_err(store_err)?,
        })
    }
    async fn flush(&self) -> Result<()> {
        self.write(WriteOp::Flush).await
    }
}
