//! Cross-node fan-out: each node listens on one notification channel, and
//! on each notification (or every second, should one be lost) reads the
//! events committed since the last `seq` it saw, leaving out its own.
//!
//! The notification carries nothing: NOTIFY payloads are small, and the
//! `seq` order is the commit order (every group commit holds the writers'
//! advisory lock), so "everything after the last `seq` seen" is exactly
//! what is new. After a dropped connection the listener reconnects and
//! catches up from the same `seq`: nothing is lost, nothing repeated.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use civkit_framework::{stored, Result};
use nostr::Event;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use tokio::sync::mpsc;

use crate::db_err;

/// The notification channel.
pub(crate) const CHANNEL: &str = "civkit_events";

/// The listener's `application_name` (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "civkit-listen";

/// Rows read per catch-up query.
const PAGE: i64 = 1_000;

/// The last `seq` seen in each table (events, ephemeral).
#[derive(Clone, Copy)]
struct Seen {
    events: i64,
    ephemeral: i64,
}

fn newest(client: &mut Client) -> Result<Seen> {
    let row = client
        .query_one(
            "SELECT (SELECT coalesce(max(seq), 0) FROM events),
                    (SELECT coalesce(max(seq), 0) FROM ephemeral)",
            &[],
        )
        .map_err(db_err)?;
    Ok(Seen {
        events: row.get(0),
        ephemeral: row.get(1),
    })
}

/// Send every event after `seen` that another node committed. `false` when
/// the node stopped listening.
fn catch_up(
    client: &mut Client,
    node: i64,
    seen: &mut Seen,
    out: &mpsc::Sender<Event>,
) -> Result<bool> {
    for (table, last) in [
        ("events", &mut seen.events),
        ("ephemeral", &mut seen.ephemeral),
    ] {
        loop {
            let rows = client
                .query(
                    &format!(
                        "SELECT seq, node, json FROM {table} WHERE seq > $1 ORDER BY seq LIMIT $2"
                    ),
                    &[&*last, &PAGE],
                )
                .map_err(db_err)?;
            let full = rows.len() as i64 == PAGE;
            for row in rows {
                *last = row.get(0);
                if row.get::<_, i64>(1) == node {
                    continue;
                }
                match stored::decode(row.get::<_, &str>(2)) {
                    Ok(event) => {
                        if out.blocking_send(event).is_err() {
                            return Ok(false);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "a stored event does not decode"),
                }
            }
            if !full {
                break;
            }
        }
    }
    Ok(true)
}

/// Listen until `stop` is set or the node stops receiving.
pub(crate) fn run(
    pg: postgres::Config,
    node: i64,
    out: mpsc::Sender<Event>,
    stop: Arc<AtomicBool>,
) {
    let mut seen: Option<Seen> = None;
    while !stop.load(Ordering::Relaxed) {
        let session = (|| -> Result<bool> {
            let mut client = pg
                .clone()
                .application_name(APPLICATION_NAME)
                .connect(NoTls)
                .map_err(db_err)?;
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .map_err(db_err)?;
            // Live from the moment the node started; after a reconnect,
            // from where the last connection left off.
            let mut at = match seen {
                Some(s) => s,
                None => newest(&mut client)?,
            };
            seen = Some(at);
            loop {
                let going = catch_up(&mut client, node, &mut at, &out);
                seen = Some(at);
                if !going? {
                    return Ok(false);
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                // Wait for a notification, a second at most; then drain
                // the others that came meanwhile.
                let mut notes = client.notifications();
                let woke = notes
                    .timeout_iter(Duration::from_secs(1))
                    .next()
                    .map_err(db_err)?;
                if woke.is_some() {
                    let mut rest = notes.iter();
                    while rest.next().map_err(db_err)?.is_some() {}
                }
            }
        })();
        match session {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the PostgreSQL notification connection failed; reconnecting");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
