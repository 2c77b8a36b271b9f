//! The single writer thread: applies queued writes to an [`Overlay`], writes
//! the whole group as one atomic engine write, makes it durable once, then
//! answers every caller in the group (group commit).
//!
//! After a failed write or flush the store is unhealthy: every write is
//! refused until a flush succeeds again, and the ids of events whose write
//! was not made durable stay in [`Shared::unflushed`], so they are not
//! reported as stored.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use civkit_framework::persister::{apply_claims, apply_import, apply_save, Claim, Record};
use civkit_framework::{Result, SaveOutcome};
use nostr::{Event, EventId, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, Reader};
use crate::index::Overlay;
use crate::store_err;

pub(crate) enum WriteOp {
    Save(Box<Event>, Vec<Claim>, oneshot::Sender<Result<SaveOutcome>>),
    Claim(Vec<Claim>, oneshot::Sender<Result<Option<Claim>>>),
    Delete(Vec<EventId>, oneshot::Sender<Result<u64>>),
    Expire(Timestamp, oneshot::Sender<Result<u64>>),
    KvPut {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        only_new: bool,
        tx: oneshot::Sender<Result<bool>>,
    },
    Flush(oneshot::Sender<Result<()>>),
    Import(Vec<Record>, oneshot::Sender<Result<()>>),
}

/// What the writer shares with readers.
#[derive(Default)]
pub(crate) struct Shared {
    /// Stored events (the tree's, durable or not).
    pub events: AtomicU64,
    /// Events written to the tree whose flush has not succeeded yet.
    unflushed: Mutex<HashSet<EventId>>,
    /// Why writes are refused; `None` when healthy.
    write_error: Mutex<Option<String>>,
    /// Batch sizes and sync times, once a node registered them.
    pub metrics: std::sync::OnceLock<civkit_framework::metrics::StoreMetrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// True when the event's write is durable. (Callers check the tree
    /// first: an id found there and absent here was flushed.)
    pub fn durable(&self, id: &EventId) -> bool {
        !lock(&self.unflushed).contains(id)
    }
    pub fn write_error(&self) -> Option<String> {
        lock(&self.write_error).clone()
    }
}

/// How the writer makes a batch durable (a seam for fault-injection tests).
pub(crate) type FlushFn = Box<dyn FnMut() -> std::result::Result<(), String> + Send>;

/// The engine's own sync.
pub(crate) fn engine_sync<E: Engine>(engine: Arc<E>) -> FlushFn {
    Box::new(move || engine.sync().map_err(|e| e.to_string()))
}

/// A reply held until the batch is durable.
enum Pending {
    Save(oneshot::Sender<Result<SaveOutcome>>, Result<SaveOutcome>),
    Claim(
        oneshot::Sender<Result<Option<Claim>>>,
        Result<Option<Claim>>,
    ),
    Count(oneshot::Sender<Result<u64>>, Result<u64>),
    Bool(oneshot::Sender<Result<bool>>, Result<bool>),
    Unit(oneshot::Sender<Result<()>>),
    Imported(oneshot::Sender<Result<()>>, Result<()>),
}

pub(crate) fn spawn<E: Engine>(
    engine: Arc<E>,
    shared: Arc<Shared>,
    max_batch: usize,
    mut flush: FlushFn,
) -> Result<(mpsc::Sender<WriteOp>, std::thread::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<WriteOp>(max_batch * 2);
    let handle = std::thread::Builder::new()
        .name(format!("civkit-{}-writer", E::NAME))
        .spawn(move || {
            let mut ops = Vec::with_capacity(max_batch);
            while let Some(op) = rx.blocking_recv() {
                ops.push(op);
                while ops.len() < max_batch {
                    match rx.try_recv() {
                        Ok(op) => ops.push(op),
                        Err(_) => break,
                    }
                }
                if let Some(m) = shared.metrics.get() {
                    m.batch_writes.observe(ops.len() as f64);
                }
                if !recovered(&shared, &mut flush) {
                    let why = shared.write_error().unwrap_or_default();
                    for op in ops.drain(..) {
                        refuse(op, &why);
                    }
                    continue;
                }
                let (pending, written) = match engine.reader().and_then(Overlay::new) {
                    Ok(mut overlay) => {
                        let pending: Vec<Pending> =
                            ops.drain(..).map(|op| apply(&mut overlay, op)).collect();
                        let written = commit(&*engine, &shared, overlay, &mut flush);
                        (pending, written)
                    }
                    Err(e) => {
                        let why = fail(&shared, format!("read failed: {e}"));
                        for op in ops.drain(..) {
                            refuse(op, &why.to_string());
                        }
                        continue;
                    }
                };
                for p in pending {
                    answer(p, &written);
                }
            }
            if let Err(e) = flush() {
                tracing::warn!(error = %e, "final flush failed");
            }
        })
        .map_err(|e| store_err(format!("starting the writer thread: {e}")))?;
    Ok((tx, handle))
}

/// When unhealthy, try a flush; true when the store takes writes.
fn recovered(shared: &Shared, flush: &mut FlushFn) -> bool {
    if lock(&shared.write_error).is_none() {
        return true;
    }
    match flush() {
        Ok(()) => {
            lock(&shared.unflushed).clear();
            *lock(&shared.write_error) = None;
            tracing::info!("the store flushes again; writes resume");
            true
        }
        Err(e) => {
            *lock(&shared.write_error) = Some(format!("flush failed: {e}"));
            false
        }
    }
}

/// Write the batch atomically and flush it.
fn commit<E: Engine>(
    engine: &E,
    shared: &Shared,
    overlay: Overlay<E::Reader<'_>>,
    flush: &mut FlushFn,
) -> Result<()> {
    if overlay.is_empty() {
        // Nothing changed; a flush still answers `Flush` and duplicates
        // honestly (their first copy may sit in an earlier, failed batch).
        return flush().map_err(|e| fail(shared, format!("flush failed: {e}")));
    }
    let (changes, delta, stored) = overlay.finish();
    lock(&shared.unflushed).extend(stored.iter().copied());
    engine
        .write(changes)
        .map_err(|e| fail(shared, format!("write failed: {e}")))?;
    let _ = shared
        .events
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_add_signed(delta))
        });
    let started = std::time::Instant::now();
    flush().map_err(|e| fail(shared, format!("flush failed: {e}")))?;
    if let Some(m) = shared.metrics.get() {
        m.sync_seconds.observe(started.elapsed().as_secs_f64());
    }
    let mut unflushed = lock(&shared.unflushed);
    for id in &stored {
        unflushed.remove(id);
    }
    Ok(())
}

fn fail(shared: &Shared, why: String) -> civkit_framework::Error {
    tracing::error!(error = %why, "the store is refusing writes until a flush succeeds");
    *lock(&shared.write_error) = Some(why.clone());
    store_err(why)
}

fn apply<R: Reader>(overlay: &mut Overlay<R>, op: WriteOp) -> Pending {
    let pending = match op {
        WriteOp::Save(event, claims, tx) => Pending::Save(tx, apply_save(overlay, &event, &claims)),
        WriteOp::Claim(claims, tx) => Pending::Claim(tx, apply_claims(overlay, &claims)),
        WriteOp::Delete(ids, tx) => Pending::Count(tx, overlay.delete_ids(&ids)),
        WriteOp::Expire(now, tx) => Pending::Count(tx, overlay.remove_expired(now)),
        WriteOp::KvPut {
            key,
            value,
            only_new,
            tx,
        } => {
            let r = (|| match value {
                Some(_) if only_new && overlay.get(&key)?.is_some() => Ok(false),
                Some(v) => {
                    overlay.set(key, v);
                    Ok(true)
                }
                None => {
                    let existed = overlay.get(&key)?.is_some();
                    overlay.unset(key);
                    Ok(existed)
                }
            })();
            Pending::Bool(tx, r)
        }
        WriteOp::Flush(tx) => Pending::Unit(tx),
        WriteOp::Import(records, tx) => Pending::Imported(tx, apply_import(overlay, &records)),
    };
    if pending.failed() {
        overlay.abort_op();
    } else {
        overlay.commit_op();
    }
    pending
}

impl Pending {
    fn failed(&self) -> bool {
        match self {
            Pending::Save(_, r) => r.is_err(),
            Pending::Claim(_, r) => r.is_err(),
            Pending::Count(_, r) => r.is_err(),
            Pending::Bool(_, r) => r.is_err(),
            Pending::Unit(_) => false,
            Pending::Imported(_, r) => r.is_err(),
        }
    }
}

fn refuse(op: WriteOp, why: &str) {
    let err = || store_err(format!("the store refuses writes: {why}"));
    // A caller that went away does not care about its answer.
    match op {
        WriteOp::Save(_, _, tx) => drop(tx.send(Err(err()))),
        WriteOp::Claim(_, tx) => drop(tx.send(Err(err()))),
        WriteOp::Delete(_, tx) | WriteOp::Expire(_, tx) => drop(tx.send(Err(err()))),
        WriteOp::KvPut { tx, .. } => drop(tx.send(Err(err()))),
        WriteOp::Flush(tx) | WriteOp::Import(_, tx) => drop(tx.send(Err(err()))),
    }
}

fn answer(p: Pending, written: &Result<()>) {
    fn gate<T>(r: Result<T>, written: &Result<()>) -> Result<T> {
        match written {
            Ok(()) => r,
            Err(e) => Err(store_err(e.to_string())),
        }
    }
    match p {
        Pending::Save(tx, r) => drop(tx.send(gate(r, written))),
        Pending::Claim(tx, r) => drop(tx.send(gate(r, written))),
        Pending::Count(tx, r) => drop(tx.send(gate(r, written))),
        Pending::Bool(tx, r) => drop(tx.send(gate(r, written))),
        Pending::Unit(tx) => drop(tx.send(gate(Ok(()), written))),
        Pending::Imported(tx, r) => drop(tx.send(gate(r, written))),
    }
}
