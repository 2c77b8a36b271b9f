//! The single writer thread: applies queued writes, fsyncs once per batch,
//! then answers every caller in the batch (group commit).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use civkit_framework::persister::apply_save;
use civkit_framework::{Result, SaveOutcome};
use nostr::{Event, EventId, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::index::Trees;
use crate::store_err;

pub(crate) enum WriteOp {
    Save(Box<Event>, oneshot::Sender<Result<SaveOutcome>>),
    Delete(Vec<EventId>, oneshot::Sender<Result<u64>>),
    Expire(Timestamp, oneshot::Sender<Result<u64>>),
    KvPut {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        only_new: bool,
        tx: oneshot::Sender<Result<bool>>,
    },
    Flush(oneshot::Sender<Result<()>>),
}

/// A reply held until the batch is durable.
enum Pending {
    Save(oneshot::Sender<Result<SaveOutcome>>, Result<SaveOutcome>),
    Count(oneshot::Sender<Result<u64>>, Result<u64>),
    Bool(oneshot::Sender<Result<bool>>, Result<bool>),
    Unit(oneshot::Sender<Result<()>>),
}

pub(crate) fn spawn(
    trees: Arc<Trees>,
    events: Arc<AtomicU64>,
    max_batch: usize,
) -> Result<(mpsc::Sender<WriteOp>, std::thread::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<WriteOp>(max_batch * 2);
    let handle = std::thread::Builder::new()
        .name("civkit-sled-writer".into())
        .spawn(move || {
            let mut pending = Vec::with_capacity(max_batch);
            while let Some(op) = rx.blocking_recv() {
                pending.push(apply(&trees, &events, op));
                while pending.len() < max_batch {
                    match rx.try_recv() {
                        Ok(op) => pending.push(apply(&trees, &events, op)),
                        Err(_) => break,
                    }
                }
                let flushed = trees.db.flush().map(|_| ()).map_err(store_err);
                for p in pending.drain(..) {
                    answer(p, &flushed);
                }
            }
            if let Err(e) = trees.db.flush() {
                tracing::warn!(error = %e, "final flush failed");
            }
        })
        .map_err(|e| store_err(format!("starting the writer thread: {e}")))?;
    Ok((tx, handle))
}

fn apply(trees: &Trees, events: &AtomicU64, op: WriteOp) -> Pending {
    match op {
        WriteOp::Save(event, tx) => {
            let mut table = trees.table(events);
            let r = apply_save(&mut table, &event);
            Pending::Save(tx, r)
        }
        WriteOp::Delete(ids, tx) => {
            let mut table = trees.table(events);
            Pending::Count(tx, table.delete_ids(&ids))
        }
        WriteOp::Expire(now, tx) => {
            let mut table = trees.table(events);
            Pending::Count(tx, table.remove_expired(now))
        }
        WriteOp::KvPut {
            key,
            value,
            only_new,
            tx,
        } => {
            let r = match value {
                Some(v) if only_new => trees
                    .kv
                    .compare_and_swap(key, None as Option<&[u8]>, Some(v))
                    .map(|r| r.is_ok())
                    .map_err(store_err),
                Some(v) => trees.kv.insert(key, v).map(|_| true).map_err(store_err),
                None => trees
                    .kv
                    .remove(key)
                    .map(|old| old.is_some())
                    .map_err(store_err),
            };
            Pending::Bool(tx, r)
        }
        WriteOp::Flush(tx) => Pending::Unit(tx),
    }
}

fn answer(p: Pending, flushed: &Result<()>) {
    fn gate<T>(r: Result<T>, flushed: &Result<()>) -> Result<T> {
        match flushed {
            Ok(()) => r,
            Err(e) => Err(store_err(format!("flush failed: {e}"))),
        }
    }
    // A caller that went away does not care about its answer.
    match p {
        Pending::Save(tx, r) => drop(tx.send(gate(r, flushed))),
        Pending::Count(tx, r) => drop(tx.send(gate(r, flushed))),
        Pending::Bool(tx, r) => drop(tx.send(gate(r, flushed))),
        Pending::Unit(tx) => drop(tx.send(gate(Ok(()), flushed))),
    }
}
