//! Versioned schema migrations, applied at start.
//!
//! Each migration runs in one transaction under an advisory lock, so nodes
//! that start together apply it once; the applied versions are recorded in
//! `civkit_schema`. A database with a version this code does not know is
//! refused rather than written to.

use postgres::Client;

use crate::db_err;
use civkit_framework::{Error, Result};

/// The advisory lock key of migrations (any constant shared by every node).
const MIGRATION_LOCK: i64 = 0x6369_766b_6974_0001;

/// The migrations, in order; version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    seq bigserial PRIMARY KEY,
    id bytea NOT NULL UNIQUE,
    pubkey bytea NOT NULL,
    kind integer NOT NULL,
    created_at bigint NOT NULL,
    expiration bigint,
    json text NOT NULL,
    -- The node that stored it (civkit_nodes), so that the node's own
    -- events are not fanned out twice.
    node bigint NOT NULL
);
-- Result order is newest first, ties by lowest id.
CREATE INDEX events_by_time ON events (created_at DESC, id);
CREATE INDEX events_by_kind ON events (kind, created_at DESC, id);
CREATE INDEX events_by_author_kind ON events (pubkey, kind, created_at DESC, id);
CREATE INDEX events_by_author ON events (pubkey, created_at DESC, id);
CREATE INDEX events_by_expiration ON events (expiration) WHERE expiration IS NOT NULL;
-- Single-letter tags: the letter and the first value.
CREATE TABLE tags (
    seq bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    letter "char" NOT NULL,
    -- bytes, not text: a tag value may hold a NUL, which text cannot.
    value bytea NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX tags_by_value ON tags (letter, value, created_at DESC);
CREATE INDEX tags_by_seq ON tags (seq);
CREATE TABLE addresses (
    pubkey bytea NOT NULL,
    kind integer NOT NULL,
    d bytea NOT NULL,
    id bytea NOT NULL,
    PRIMARY KEY (pubkey, kind, d)
);
CREATE TABLE id_tombstones (
    id bytea PRIMARY KEY,
    author bytea NOT NULL
);
CREATE TABLE address_tombstones (
    pubkey bytea NOT NULL,
    kind integer NOT NULL,
    d bytea NOT NULL,
    until bigint NOT NULL,
    PRIMARY KEY (pubkey, kind, d)
);
-- Ephemeral events are never stored; they pass through here to reach the
-- other nodes, and are removed after a minute.
CREATE TABLE ephemeral (
    seq bigserial PRIMARY KEY,
    node bigint NOT NULL,
    json text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
-- Board-wide leases: the work one node does for the whole board.
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
-- One number per persister instance (a running node).
CREATE SEQUENCE civkit_nodes;
CREATE TABLE kv (
    namespace text NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (namespace, key)
);
"#,
    // 2: the tag index ends in the event id, so that a tag query reads it in
    // NIP-01 order (newest first, then lowest id) and stops at the limit,
    // however many events share one `created_at`.
    r#"
ALTER TABLE tags ADD COLUMN id bytea;
UPDATE tags t SET id = e.id FROM events e WHERE e.seq = t.seq;
ALTER TABLE tags ALTER COLUMN id SET NOT NULL;
DROP INDEX tags_by_value;
CREATE INDEX tags_by_value ON tags (letter, value, created_at DESC, id);
"#,
];

/// Bring the database to the newest schema. Returns the versions applied.
pub(crate) fn migrate(client: &mut Client) -> Result<u32> {
    migrate_to(client, MIGRATIONS.len())
}

/// Bring the database to schema `target` (at most the newest).
pub(crate) fn migrate_to(client: &mut Client, target: usize) -> Result<u32> {
    let mut tx = client.transaction().map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS civkit_schema (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .map_err(db_err)?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM civkit_schema", &[])
        .map_err(db_err)?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(Error::Store {
            backend: "postgres",
            message: format!(
                "the database has schema version {current}; this civkitd knows {known} and older"
            ),
        });
    }
    let mut applied = 0;
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target)
        .skip(current as usize)
    {
        tx.batch_execute(sql).map_err(db_err)?;
        let version = i as i32 + 1;
        tx.execute(
            "INSERT INTO civkit_schema (version) VALUES ($1)",
            &[&version],
        )
        .map_err(db_err)?;
        applied += 1;
    }
    tx.commit().map_err(db_err)?;
    if applied > 0 {
        tracing::info!(versions = applied, "applied PostgreSQL schema migrations");
    }
    Ok(applied)
}
