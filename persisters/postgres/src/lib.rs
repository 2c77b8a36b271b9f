//! # civkit-postgres
//!
//! The PostgreSQL persister (`[persister] type = "postgres"`): one store
//! that several civkitd nodes share.
//!
//! - Writes go through one writer thread per node, in group commits: one
//!   transaction per group (a group with a failing write runs again one
//!   write per transaction), answered only after `COMMIT` (so `OK true`
//!   means committed), with statements prepared once per connection. Every group takes an
//!   advisory lock shared by all nodes, so replacement, deletion and claims
//!   stay correct across nodes.
//! - Reads (`REQ`, `COUNT`, key-value reads) use a connection pool on
//!   blocking threads, with a statement timeout.
//! - The schema is versioned and migrated at start (`schema.rs`).
//!
//! The connection URL is a secret (it may hold a password): it is never
//! logged, and `url_file` lets it live in a file of mode 0600.

mod export;
pub mod listen;
mod query;
mod schema;
mod table;
#[cfg(feature = "testing")]
pub mod testing;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use civkit_framework::metrics::StoreMetrics;
use civkit_framework::persister::{check_namespace, Claim, StoredEvent};
use civkit_framework::{
    BuildContext, Error, Export, Persister, Record, Registry, Result, SaveOutcome, StoreStats,
};
use nostr::{Event, EventId, Filter, Timestamp};
use postgres::{Client, NoTls};
use r2d2_postgres::PostgresConnectionManager;
use tokio::sync::{mpsc, oneshot};

use writer::Op;

pub(crate) fn pg_err(e: impl std::fmt::Display) -> Error {
    Error::Store {
        backend: "postgres",
        message: e.to_string(),
    }
}

/// A client error with the server's message (`postgres::Error` displays
/// only "db error"). Never holds the connection string.
pub(crate) fn db_err(e: postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => pg_err(format!("{}: {}", db.code().code(), db.message())),
        None => pg_err(e),
    }
}

/// Events from other nodes waiting for this node's fan-out; the listener
/// waits when it is full (the events stay in the database meanwhile).
const PEER_EVENTS_QUEUE: usize = 4096;

/// Config of `[persister] type = "postgres"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// A libpq connection string or URL (`postgresql://user@host/db`,
    /// `host=/run/postgresql dbname=civkit`). Prefer `url_file` when it
    /// holds a password.
    pub url: String,
    /// A file holding the connection string, readable by its owner only
    /// (mode 0600 or stricter), relative to `node.data_dir` unless absolute.
    pub url_file: PathBuf,
    /// Reader connections.
    pub pool_size: u32,
    /// Longest a query may run, in milliseconds (0: no limit).
    pub statement_timeout_ms: u64,
    /// Most writes applied in one transaction (group commit).
    pub max_batch: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: String::new(),
            url_file: PathBuf::new(),
            pool_size: 8,
            statement_timeout_ms: 5_000,
            max_batch: 1_024,
        }
    }
}

const EXAMPLE: &str = r#"# Connection string or URL; prefer url_file when it holds a password.
url = "host=/run/postgresql dbname=civkit"
# Or (with url left empty): a file holding it, mode 0600, relative to
# node.data_dir unless absolute.
url_file = ""
# Reader connections.
pool_size = 8
# Longest a query may run, in milliseconds (0: no limit).
statement_timeout_ms = 5000
# Most writes applied in one transaction (group commit).
max_batch = 1024
"#;

/// Register the `postgres` persister.
pub fn register(registry: &mut Registry) {
    registry.register_persister(
        "postgres",
        "PostgreSQL, shared by several nodes",
        EXAMPLE,
        |cfg: PostgresConfig, ctx: &BuildContext| {
            let url = connection_string(&cfg, &ctx.data_dir)?;
            let store = PostgresPersister::connect(&url, &cfg)?;
            Ok(
                Arc::new(store.record_metrics(StoreMetrics::new(&ctx.metrics())))
                    as Arc<dyn Persister>,
            )
        },
    );
}

/// The connection string from `url` or `url_file` (exactly one of them).
fn connection_string(cfg: &PostgresConfig, data_dir: &std::path::Path) -> Result<String> {
    let config_err = |key: &str, message: String| Error::Config {
        key: format!("persister.{key}"),
        message,
    };
    match (cfg.url.is_empty(), cfg.url_file.as_os_str().is_empty()) {
        (false, true) => Ok(cfg.url.clone()),
        (true, false) => {
            let path = data_dir.join(&cfg.url_file);
            let text = civkit_framework::keyfile::read_private(&path)
                .map_err(|e| config_err("url_file", e.to_string()))?;
            let url = text.trim().to_string();
            if url.is_empty() {
                return Err(config_err(
                    "url_file",
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(url)
        }
        (true, true) => Err(config_err("url", "set url or url_file".into())),
        (false, false) => Err(config_err("url", "set url or url_file, not both".into())),
    }
}

/// The PostgreSQL persister.
pub struct PostgresPersister {
    /// Always `Some` until dropped.
    pool: Option<r2d2::Pool<PostgresConnectionManager<NoTls>>>,
    writer: mpsc::Sender<Op>,
    /// Where the listener connects.
    pg: postgres::Config,
    /// This instance's number in the database (`civkit_nodes`).
    node: i64,
    /// Stops the listener, once started.
    stop: Arc<AtomicBool>,
    /// Batch sizes and commit times, once a node registered them.
    metrics: Arc<std::sync::OnceLock<StoreMetrics>>,
}

impl Drop for PostgresPersister {
    fn drop(&mut self) {
        // Closing a synchronous client blocks on its own runtime, which
        // cannot happen on a thread that drives async tasks: close the
        // pool's connections on a thread of their own.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

impl PostgresPersister {
    /// Connect, apply the schema migrations, and start the writer. The
    /// synchronous client runs its own small runtime, so the connecting is
    /// done on a thread of its own (this may be called from async code).
    pub fn connect(url: &str, cfg: &PostgresConfig) -> Result<Self> {
        let mut pg: postgres::Config = url
            .parse()
            .map_err(|e| pg_err(format!("bad connection string: {e}")))?;
        if cfg.statement_timeout_ms > 0 {
            pg.options(&format!(
                "-c statement_timeout={}",
                cfg.statement_timeout_ms
            ));
        }
        pg.connect_timeout(Duration::from_secs(10));
        let (pool_size, max_batch) = (cfg.pool_size.max(1), cfg.max_batch.max(1));
        let (pool, first, node) = std::thread::scope(|s| {
            s.spawn(|| -> Result<_> {
                let mut first = pg.connect(NoTls).map_err(db_err)?;
                schema::migrate(&mut first)?;
                let node: i64 = first
                    .query_one("SELECT nextval('civkit_nodes')", &[])
                    .map_err(db_err)?
                    .get(0);
                let pool = r2d2::Pool::builder()
                    .max_size(pool_size)
                    .connection_timeout(Duration::from_secs(10))
                    .build(PostgresConnectionManager::new(pg.clone(), NoTls))
                    .map_err(pg_err)?;
                Ok((pool, first, node))
            })
            .join()
            .map_err(|_| pg_err("connecting panicked"))?
        })?;
        let (tx, rx) = mpsc::channel(max_batch * 4);
        let mut spare = Some(first);
        let writer_pg = pg.clone();
        let metrics = Arc::new(std::sync::OnceLock::new());
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("civkit-pg-writer".into())
            .spawn(move || {
                let metrics = writer_metrics;
                writer::run(rx, max_batch, node, &metrics, move || match spare.take() {
                    Some(c) => Ok(c),
                    None => writer_pg.connect(NoTls).map_err(db_err),
                })
            })
            .map_err(pg_err)?;
        Ok(PostgresPersister {
            pool: Some(pool),
            writer: tx,
            pg,
            node,
            stop: Arc::new(AtomicBool::new(false)),
            metrics,
        })
    }

    /// Record write batch sizes and commit times in `metrics` from now on.
    pub fn record_metrics(self, metrics: StoreMetrics) -> Self {
        let _ = self.metrics.set(metrics);
        self
    }

    async fn write<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .await
            .map_err(|_| pg_err("the writer has stopped"))?;
        rx.await.map_err(|_| pg_err("the writer has stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self
            .pool
            .clone()
            .ok_or_else(|| pg_err("the store is closed"))?;
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(pg_err)?;
            f(&mut conn)
        })
        .await
        .map_err(pg_err)?
    }
}

#[async_trait]
impl Persister for PostgresPersister {
    fn backend(&self) -> &'static str {
        "postgres"
    }
    async fn save_event(&self, event: &Event, claims: &[Claim]) -> Result<SaveOutcome> {
        for c in claims {
            check_namespace(&c.namespace)?;
        }
        let (event, claims) = (Box::new(event.clone()), claims.to_vec());
        self.write(|tx| Op::Save(event, claims, tx)).await
    }
    async fn event_exists(&self, id: &EventId) -> Result<bool> {
        let id = id.as_bytes().to_vec();
        self.read(move |c| {
            let row = c
                .query_opt("SELECT 1 FROM events WHERE id = $1", &[&id])
                .map_err(db_err)?;
            Ok(row.is_some())
        })
        .await
    }
    async fn query(&self, filters: &[Filter], now: Timestamp) -> Result<Vec<Event>> {
        let stored = self.query_stored(filters, now).await?;
        stored.into_iter().map(StoredEvent::into_event).collect()
    }
    async fn query_stored(&self, filters: &[Filter], now: Timestamp) -> Result<Vec<StoredEvent>> {
        let filters = filters.to_vec();
        self.read(move |c| query::query(c, &filters, now)).await
    }
    async fn count(&self, filters: &[Filter], now: Timestamp) -> Result<u64> {
        let filters = filters.to_vec();
        self.read(move |c| query::count(c, &filters, now)).await
    }
    async fn delete_events(&self, ids: &[EventId]) -> Result<u64> {
        let ids = ids.to_vec();
        self.write(|tx| Op::Delete(ids, tx)).await
    }
    async fn remove_expired(&self, now: Timestamp) -> Result<u64> {
        self.write(|tx| Op::Expire(now, tx)).await
    }
    async fn kv_get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_namespace(namespace)?;
        let (ns, key) = (namespace.to_string(), key.to_vec());
        self.read(move |c| {
            let row = c
                .query_opt(
                    "SELECT value FROM kv WHERE namespace = $1 AND key = $2",
                    &[&ns, &key],
                )
                .map_err(db_err)?;
            Ok(row.map(|r| r.get(0)))
        })
        .await
    }
    async fn kv_write(
        &self,
        namespace: &str,
        key: &[u8],
        value: Option<&[u8]>,
        only_new: bool,
    ) -> Result<bool> {
        check_namespace(namespace)?;
        let (namespace, key, value) = (
            namespace.to_string(),
            key.to_vec(),
            value.map(<[u8]>::to_vec),
        );
        self.write(|tx| Op::Kv {
            namespace,
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
        self.write(|tx| Op::Claim(claims, tx)).await
    }
    async fn kv_scan(&self, namespace: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        check_namespace(namespace)?;
        let (ns, prefix) = (namespace.to_string(), prefix.to_vec());
        self.read(move |c| {
            // Keys are bytes: compare the prefix bytes, not a LIKE pattern.
            let rows = c
                .query(
                    "SELECT key, value FROM kv WHERE namespace = $1
                     AND substring(key FROM 1 FOR length($2::bytea)) = $2::bytea ORDER BY key",
                    &[&ns, &prefix],
                )
                .map_err(db_err)?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
        .await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.read(|c| {
            let row = c
                .query_one(
                    "SELECT (SELECT count(*) FROM events), pg_database_size(current_database())",
                    &[],
                )
                .map_err(db_err)?;
            Ok(StoreStats {
                events: row.get::<_, i64>(0).max(0) as u64,
                size_bytes: row.get::<_, i64>(1).max(0) as u64,
                write_error: None,
            })
        })
        .await
    }
    async fn flush(&self) -> Result<()> {
        // Every answered write has committed; nothing waits for a flush.
        Ok(())
    }
    async fn export(&self, cursor: Option<Vec<u8>>, max: usize) -> Result<Export> {
        self.read(move |c| export::page(c, cursor, max)).await
    }
    async fn import(&self, records: &[Record]) -> Result<()> {
        let records = records.to_vec();
        self.write(|tx| Op::Import(records, tx)).await
    }
    fn shared(&self) -> bool {
        true
    }
    fn peer_events(&self) -> Option<mpsc::Receiver<Event>> {
        let (tx, rx) = mpsc::channel(PEER_EVENTS_QUEUE);
        let (pg, node, stop) = (self.pg.clone(), self.node, self.stop.clone());
        std::thread::Builder::new()
            .name("civkit-pg-listen".into())
            .spawn(move || listen::run(pg, node, tx, stop))
            .map_err(|e| tracing::warn!(error = %e, "cannot start the PostgreSQL listener"))
            .ok()?;
        Some(rx)
    }
    async fn hold_lease(&self, name: &str, ttl: Duration) -> Result<bool> {
        let (name, node) = (name.to_string(), self.node);
        let ttl_secs = ttl.as_secs_f64();
        self.read(move |c| {
            // Taken when free or expired, renewed by its holder; the
            // database's clock decides, so nodes' clocks need not agree.
            let row = c
                .query_opt(
                    "INSERT INTO leases (name, holder, expires_at)
                     VALUES ($1, $2, now() + $3::float8 * interval '1 second')
                     ON CONFLICT (name) DO UPDATE
                       SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                       WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()
                     RETURNING holder",
                    &[&name, &node, &ttl_secs],
                )
                .map_err(db_err)?;
            Ok(row.is_some())
        })
        .await
    }
    async fn share_ephemeral(&self, event: &Event) -> Result<()> {
        let event = Box::new(event.clone());
        self.write(|tx| Op::Ephemeral(event, tx)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests assert by panicking

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_connection_string_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("postgres.url");
        std::fs::write(&file, "host=/run/postgresql password=hunter2\n").unwrap();
        let cfg = |url: &str, file: &str| PostgresConfig {
            url: url.into(),
            url_file: file.into(),
            ..PostgresConfig::default()
        };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = connection_string(&cfg("", "postgres.url"), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode 644"), "{err}");
        assert!(!err.contains("hunter2"), "the secret is not in the error");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            connection_string(&cfg("", "postgres.url"), dir.path()).unwrap(),
            "host=/run/postgresql password=hunter2"
        );
        assert!(connection_string(&cfg("host=x", "postgres.url"), dir.path()).is_err());
        assert!(connection_string(&cfg("", ""), dir.path()).is_err());
        std::fs::write(&file, " \n").unwrap();
        assert!(connection_string(&cfg("", "postgres.url"), dir.path()).is_err());
    }

    #[test]
    fn a_bad_connection_string_is_an_error_without_the_string() {
        let err = PostgresPersister::connect(
            "host='unterminated password=hunter2",
            &PostgresConfig::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
