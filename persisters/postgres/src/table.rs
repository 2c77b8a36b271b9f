//! The framework's [`EventTable`] over one PostgreSQL transaction, so that
//! NIP-01 replacement, NIP-09 deletion and claims run through the shared
//! `apply_save`, all inside the writer's transaction.

use std::cell::RefCell;
use std::collections::HashMap;

use civkit_framework::kinds::{self, Address};
use civkit_framework::persister::EventTable;
use civkit_framework::{canonical, stored, Result};
use nostr::{Event, EventId, PublicKey, Timestamp};
use postgres::{Statement, Transaction};

use crate::{db_err, pg_err};

/// A `u64` (seconds, kinds) as PostgreSQL's `bigint`, saturating.
pub(crate) fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The statements of one connection, prepared on first use and kept for
/// as long as the connection: a write then costs one round trip per
/// statement instead of two (parse, then execute).
#[derive(Default)]
pub(crate) struct Prepared(RefCell<HashMap<&'static str, Statement>>);

/// What one group's transaction already knows of events and id
/// tombstones: read for all of the group's events in one query each when
/// the group starts ([`PgTable::prefetch`]), and kept current by the
/// group's own writes. Only valid inside that transaction, under the
/// write lock.
#[derive(Default)]
pub(crate) struct Known {
    events: RefCell<HashMap<EventId, Option<Event>>>,
    tombstones: RefCell<HashMap<EventId, Option<PublicKey>>>,
}

pub(crate) struct PgTable<'a, 'b> {
    pub tx: RefCell<&'a mut Transaction<'b>>,
    /// This node's number, recorded with each event it stores.
    pub node: i64,
    /// The statements of the transaction's connection.
    pub prepared: &'a Prepared,
    /// What the group's transaction knows so far.
    pub known: &'a Known,
}

impl PgTable<'_, '_> {
    fn statement(&self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.prepared.0.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.borrow_mut().prepare(sql).map_err(db_err)?;
        self.prepared.0.borrow_mut().insert(sql, s.clone());
        Ok(s)
    }

    fn one<T>(
        &self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        get: impl FnOnce(&postgres::Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let statement = self.statement(sql)?;
        let row = self
            .tx
            .borrow_mut()
            .query_opt(&statement, params)
            .map_err(db_err)?;
        row.as_ref().map(get).transpose()
    }

    /// Read, in one query each, whether the events `ids` are stored and
    /// whether they were deleted, so that the group's writes need not ask
    /// one by one.
    pub(crate) fn prefetch(&self, ids: &[EventId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<&[u8]> = ids.iter().map(|i| i.as_bytes().as_slice()).collect();
        let mut events: HashMap<EventId, Option<Event>> = ids.iter().map(|i| (*i, None)).collect();
        let mut tombstones: HashMap<EventId, Option<PublicKey>> =
            ids.iter().map(|i| (*i, None)).collect();
        let rows = |sql: &'static str| -> Result<Vec<postgres::Row>> {
            let statement = self.statement(sql)?;
            self.tx
                .borrow_mut()
                .query(&statement, &[&keys])
                .map_err(db_err)
        };
        let id = |row: &postgres::Row| EventId::from_slice(row.get::<_, &[u8]>(0)).map_err(pg_err);
        for row in rows("SELECT id, json FROM events WHERE id = ANY($1)")? {
            events.insert(id(&row)?, Some(stored::decode(row.get::<_, &str>(1))?));
        }
        for row in rows("SELECT id, author FROM id_tombstones WHERE id = ANY($1)")? {
            let author = PublicKey::from_slice(row.get::<_, &[u8]>(1)).map_err(pg_err)?;
            tombstones.insert(id(&row)?, Some(author));
        }
        self.known.events.borrow_mut().extend(events);
        self.known.tombstones.borrow_mut().extend(tombstones);
        Ok(())
    }

    pub(crate) fn run(
        &self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let statement = self.statement(sql)?;
        self.tx
            .borrow_mut()
            .execute(&statement, params)
            .map_err(db_err)
    }
}

/// An address as bound parameters (`d` as bytes, like tag values: it may
/// hold a NUL).
fn address_params(a: &Address) -> (Vec<u8>, i32, &[u8]) {
    (
        a.pubkey.to_bytes().to_vec(),
        i32::from(a.kind),
        a.d.as_bytes(),
    )
}

impl EventTable for PgTable<'_, '_> {
    fn get(&self, id: &EventId) -> Result<Option<Event>> {
        if let Some(known) = self.known.events.borrow().get(id) {
            return Ok(known.clone());
        }
        self.one(
            "SELECT json FROM events WHERE id = $1",
            &[&id.as_bytes().as_slice()],
            |r| stored::decode(r.get::<_, &str>(0)),
        )
    }

    fn at_address(&self, address: &Address) -> Result<Option<EventId>> {
        let (pk, kind, d) = address_params(address);
        self.one(
            "SELECT id FROM addresses WHERE pubkey = $1 AND kind = $2 AND d = $3",
            &[&pk, &kind, &d],
            |r| EventId::from_slice(r.get::<_, &[u8]>(0)).map_err(pg_err),
        )
    }

    fn id_tombstone(&self, id: &EventId) -> Result<Option<PublicKey>> {
        if let Some(known) = self.known.tombstones.borrow().get(id) {
            return Ok(*known);
        }
        self.one(
            "SELECT author FROM id_tombstones WHERE id = $1",
            &[&id.as_bytes().as_slice()],
            |r| PublicKey::from_slice(r.get::<_, &[u8]>(0)).map_err(pg_err),
        )
    }

    fn address_tombstone(&self, address: &Address) -> Result<Option<Timestamp>> {
        let (pk, kind, d) = address_params(address);
        self.one(
            "SELECT until FROM address_tombstones WHERE pubkey = $1 AND kind = $2 AND d = $3",
            &[&pk, &kind, &d],
            |r| Ok(Timestamp::from_secs(r.get::<_, i64>(0).max(0) as u64)),
        )
    }

    fn insert(&mut self, event: &Event) -> Result<()> {
        let created = big(event.created_at.as_secs());
        let expiration = kinds::expiration_of(event).map(|t| big(t.as_secs()));
        // One row per distinct (letter, value): a value repeated in the
        // event would otherwise make it a result twice.
        let mut seen = std::collections::HashSet::new();
        let (mut letters, mut values): (Vec<i8>, Vec<&[u8]>) = (Vec::new(), Vec::new());
        for tag in event.tags.iter() {
            if let (Some(letter), Some(value)) = (tag.single_letter_tag(), tag.content()) {
                if seen.insert((letter, value)) {
                    letters.push(letter.as_char() as u8 as i8);
                    values.push(value.as_bytes());
                }
            }
        }
        // The event and its tag rows in one statement (one round trip).
        self.run(
            r#"WITH e AS (
                 INSERT INTO events (id, pubkey, kind, created_at, expiration, json, node)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq
               )
               INSERT INTO tags (seq, letter, value, created_at, id)
               SELECT e.seq, t.letter, t.value, $4, $1
               FROM e, unnest($8::"char"[], $9::bytea[]) AS t(letter, value)"#,
            &[
                &event.id.as_bytes().as_slice(),
                &event.pubkey.to_bytes().as_slice(),
                &i32::from(event.kind.as_u16()),
                &created,
                &expiration,
                &canonical::event_json(event),
                &self.node,
                &letters,
                &values,
            ],
        )?;
        self.known
            .events
            .borrow_mut()
            .insert(event.id, Some(event.clone()));
        if let Some(address) = kinds::address_of(event) {
            let (pk, kind, d) = address_params(&address);
            self.run(
                "INSERT INTO addresses (pubkey, kind, d, id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (pubkey, kind, d) DO UPDATE SET id = EXCLUDED.id",
                &[&pk, &kind, &d, &event.id.as_bytes().as_slice()],
            )?;
        }
        Ok(())
    }

    fn remove(&mut self, event: &Event) -> Result<()> {
        let id = event.id.as_bytes().as_slice();
        self.run("DELETE FROM events WHERE id = $1", &[&id])?;
        self.known.events.borrow_mut().insert(event.id, None);
        if let Some(address) = kinds::address_of(event) {
            let (pk, kind, d) = address_params(&address);
            self.run(
                "DELETE FROM addresses WHERE pubkey = $1 AND kind = $2 AND d = $3 AND id = $4",
                &[&pk, &kind, &d, &id],
            )?;
        }
        Ok(())
    }

    fn put_id_tombstone(&mut self, id: &EventId, author: &PublicKey) -> Result<()> {
        self.run(
            "INSERT INTO id_tombstones (id, author) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET author = EXCLUDED.author",
            &[&id.as_bytes().as_slice(), &author.to_bytes().as_slice()],
        )?;
        self.known
            .tombstones
            .borrow_mut()
            .insert(*id, Some(*author));
        Ok(())
    }

    fn put_address_tombstone(&mut self, address: &Address, until: Timestamp) -> Result<()> {
        let (pk, kind, d) = address_params(address);
        self.run(
            "INSERT INTO address_tombstones (pubkey, kind, d, until) VALUES ($1, $2, $3, $4)
             ON CONFLICT (pubkey, kind, d) DO UPDATE SET until = EXCLUDED.until",
            &[&pk, &kind, &d, &big(until.as_secs())],
        )?;
        Ok(())
    }

    fn kv_exists(&self, namespace: &str, key: &[u8]) -> Result<bool> {
        Ok(self
            .one(
                "SELECT 1 FROM kv WHERE namespace = $1 AND key = $2",
                &[&namespace, &key],
                |_| Ok(()),
            )?
            .is_some())
    }

    fn kv_set(&mut self, namespace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.run(
            "INSERT INTO kv (namespace, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value",
            &[&namespace, &key, &value],
        )?;
        Ok(())
    }
}
