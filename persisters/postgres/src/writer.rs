//! The writer thread: applies queued writes in one transaction per group
//! (group commit; a group with a failing write runs again one write per
//! transaction), and answers every caller only after its transaction
//! commits.
//!
//! Every group first takes a transaction-scoped advisory lock shared by all
//! nodes on the database, so writes from different nodes are applied one
//! group at a time: two nodes replacing one address converge on the newest
//! version, and of two nodes redeeming one credential exactly one wins.

use civkit_framework::kinds;
use civkit_framework::metrics::StoreMetrics;
use civkit_framework::persister::{
    apply_claims, apply_import, apply_save, Claim, EventTable, Record,
};
use civkit_framework::{stored, Result, SaveOutcome};
use nostr::{Event, EventId, Timestamp};
use postgres::{Client, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::table::{big, Known, PgTable, Prepared};
use crate::{db_err, pg_err};

/// The advisory lock key every node's writer takes per group.
const WRITE_LOCK: i64 = 0x6369_766b_6974_0002;

/// Most expired events one sweep removes (the next sweep takes the rest).
const EXPIRE_MAX: i64 = 10_000;

pub(crate) enum Op {
    Save(Box<Event>, Vec<Claim>, oneshot::Sender<Result<SaveOutcome>>),
    Claim(Vec<Claim>, oneshot::Sender<Result<Option<Claim>>>),
    Delete(Vec<EventId>, oneshot::Sender<Result<u64>>),
    Expire(Timestamp, oneshot::Sender<Result<u64>>),
    /// Pass an ephemeral event to the other nodes.
    Ephemeral(Box<Event>, oneshot::Sender<Result<()>>),
    Kv {
        namespace: String,
        key: Vec<u8>,
        /// `None` deletes the key.
        value: Option<Vec<u8>>,
        only_new: bool,
        tx: oneshot::Sender<Result<bool>>,
    },
    /// Records of another store (`civkitd migrate`); no notification, as
    /// they are not news.
    Import(Vec<Record>, oneshot::Sender<Result<()>>),
}

/// What one write produced, before its group commits.
enum Answer {
    Save(SaveOutcome),
    Claim(Option<Claim>),
    Count(u64),
    Bool(bool),
    Done,
    Imported,
}

impl Op {
    /// Apply the write inside `tx`.
    fn apply(
        &self,
        tx: &mut Transaction<'_>,
        prepared: &Prepared,
        known: &Known,
        node: i64,
    ) -> Result<Answer> {
        let mut table = PgTable {
            tx: std::cell::RefCell::new(tx),
            node,
            prepared,
            known,
        };
        match self {
            Op::Save(event, claims, _) => apply_save(&mut table, event, claims).map(Answer::Save),
            Op::Claim(claims, _) => apply_claims(&mut table, claims).map(Answer::Claim),
            Op::Delete(ids, _) => {
                let mut n = 0;
                for id in ids {
                    if let Some(e) = table.get(id)? {
                        table.remove(&e)?;
                        n += 1;
                    }
                }
                Ok(Answer::Count(n))
            }
            Op::Expire(now, _) => {
                let rows = table
                    .tx
                    .borrow_mut()
                    .query(
                        "SELECT json FROM events WHERE expiration <= $1 LIMIT $2",
                        &[&big(now.as_secs()), &EXPIRE_MAX],
                    )
                    .map_err(db_err)?;
                let mut n = 0;
                for row in rows {
                    let e = stored::decode(row.get::<_, &str>(0))?;
                    if kinds::is_expired(&e, *now) {
                        table.remove(&e)?;
                        n += 1;
                    }
                }
                Ok(Answer::Count(n))
            }
            Op::Import(records, _) => apply_import(&mut table, records).map(|()| Answer::Imported),
            Op::Ephemeral(event, _) => {
                table.run(
                    "DELETE FROM ephemeral WHERE at < now() - interval '60 seconds'",
                    &[],
                )?;
                table.run(
                    "INSERT INTO ephemeral (node, json) VALUES ($1, $2)",
                    &[&node, &nostr::JsonUtil::as_json(event.as_ref())],
                )?;
                Ok(Answer::Done)
            }
            Op::Kv {
                namespace,
                key,
                value,
                only_new,
                ..
            } => match value {
                Some(v) => {
                    if *only_new && table.kv_exists(namespace, key)? {
                        return Ok(Answer::Bool(false));
                    }
                    table.kv_set(namespace, key, v)?;
                    Ok(Answer::Bool(true))
                }
                None => {
                    let n = table.run(
                        "DELETE FROM kv WHERE namespace = $1 AND key = $2",
                        &[namespace, key],
                    )?;
                    Ok(Answer::Bool(n > 0))
                }
            },
        }
    }

    /// Send the caller its answer (an error for a mismatched answer, which
    /// cannot happen: each op produces its own kind).
    fn respond(self, answer: Result<Answer>) {
        let mismatch = || pg_err("internal: a write produced another write's answer");
        // A caller that gave up (its future dropped) is no error.
        match self {
            Op::Save(_, _, tx) => drop(tx.send(answer.and_then(|a| match a {
                Answer::Save(s) => Ok(s),
                _ => Err(mismatch()),
            }))),
            Op::Claim(_, tx) => drop(tx.send(answer.and_then(|a| match a {
                Answer::Claim(c) => Ok(c),
                _ => Err(mismatch()),
            }))),
            Op::Delete(_, tx) | Op::Expire(_, tx) => drop(tx.send(answer.and_then(|a| match a {
                Answer::Count(n) => Ok(n),
                _ => Err(mismatch()),
            }))),
            Op::Kv { tx, .. } => drop(tx.send(answer.and_then(|a| match a {
                Answer::Bool(b) => Ok(b),
                _ => Err(mismatch()),
            }))),
            Op::Ephemeral(_, tx) => drop(tx.send(answer.and_then(|a| match a {
                Answer::Done => Ok(()),
                _ => Err(mismatch()),
            }))),
            Op::Import(_, tx) => drop(tx.send(answer.and_then(|a| match a {
                Answer::Imported => Ok(()),
                _ => Err(mismatch()),
            }))),
        }
    }
}

/// Whether a write's answer means other nodes have something to read.
fn is_news(answer: &Result<Answer>) -> bool {
    matches!(
        answer,
        Ok(Answer::Save(SaveOutcome::Stored { .. })) | Ok(Answer::Done)
    )
}

/// Apply `ops` in one transaction under the write lock, notifying the other
/// nodes (on commit) when one of them stored or passed on an event. The
/// first write that fails is returned as `Err`, with everything rolled
/// back: its partial changes must not commit with the others.
fn try_together(
    client: &mut Client,
    prepared: &Prepared,
    ops: &[&Op],
    node: i64,
    metrics: Option<&StoreMetrics>,
) -> Result<std::result::Result<Vec<Result<Answer>>, civkit_framework::Error>> {
    let mut tx = client.transaction().map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
        .map_err(db_err)?;
    // Whether each event is stored or deleted: one query each for the group.
    let known = Known::default();
    let ids: Vec<EventId> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Save(event, _, _) => Some(event.id),
            _ => None,
        })
        .collect();
    if ids.len() > 1 {
        let table = PgTable {
            tx: std::cell::RefCell::new(&mut tx),
            node,
            prepared,
            known: &known,
        };
        // Failing here (a stored event that does not decode) sends the
        // group down the one-write-per-transaction path, which reads
        // event by event.
        if let Err(e) = table.prefetch(&ids) {
            return Ok(Err(e));
        }
    }
    let mut answers = Vec::with_capacity(ops.len());
    for op in ops {
        match op.apply(&mut tx, prepared, &known, node) {
            Ok(a) => answers.push(Ok(a)),
            Err(e) => return Ok(Err(e)),
        }
    }
    if answers.iter().any(is_news) {
        tx.execute("SELECT pg_notify($1, '')", &[&crate::listen::CHANNEL])
            .map_err(db_err)?;
    }
    let started = std::time::Instant::now();
    tx.commit().map_err(db_err)?;
    if let Some(m) = metrics {
        m.sync_seconds.observe(started.elapsed().as_secs_f64());
    }
    Ok(Ok(answers))
}

/// Apply one group: in one transaction, or, when a write of it fails, each
/// write in a transaction of its own, so that the failure is that write's
/// answer and the others commit. (A savepoint per write would do the same
/// at two more round trips per write, every time.)
fn run_group(
    client: &mut Client,
    prepared: &Prepared,
    ops: &[Op],
    node: i64,
    metrics: Option<&StoreMetrics>,
) -> Result<Vec<Result<Answer>>> {
    let all: Vec<&Op> = ops.iter().collect();
    if let Ok(answers) = try_together(client, prepared, &all, node, metrics)? {
        return Ok(answers);
    }
    Ok(ops
        .iter()
        .map(
            |op| match try_together(client, prepared, &[op], node, metrics) {
                Ok(Ok(mut answer)) => answer.pop().unwrap_or_else(|| Err(pg_err("no answer"))),
                Ok(Err(e)) | Err(e) => Err(e),
            },
        )
        .collect())
}

/// Run the writer until every sender is gone. `connect` opens (and reopens
/// after a failure) the writer's connection.
pub(crate) fn run(
    mut rx: mpsc::Receiver<Op>,
    max_batch: usize,
    node: i64,
    metrics: &std::sync::OnceLock<StoreMetrics>,
    mut connect: impl FnMut() -> Result<Client>,
) {
    let mut client: Option<(Client, Prepared)> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        if client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            client = match connect() {
                Ok(c) => Some((c, Prepared::default())),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to PostgreSQL; writes refused");
                    for op in ops {
                        op.respond(Err(pg_err("the database is unreachable")));
                    }
                    continue;
                }
            };
        }
        let Some((c, prepared)) = client.as_mut() else {
            continue;
        };
        let metrics = metrics.get();
        if let Some(m) = metrics {
            m.batch_writes.observe(ops.len() as f64);
        }
        match run_group(c, prepared, &ops, node, metrics) {
            Ok(answers) => {
                for (op, answer) in ops.into_iter().zip(answers) {
                    op.respond(answer);
                }
            }
            Err(e) => {
                // Nothing of the group committed (or its commit is unknown):
                // no caller is told it succeeded.
                tracing::warn!(error = %e, writes = ops.len(), "a PostgreSQL group commit failed");
                for op in ops {
                    op.respond(Err(pg_err(format!("the write was not committed: {e}"))));
                }
            }
        }
    }
}
