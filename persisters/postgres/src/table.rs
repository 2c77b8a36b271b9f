//! The framework's [`EventTable`] over one PostgreSQL transaction, so that
//! NIP-01 replacement, NIP-09 deletion and claims run through the shared
//! `apply_save`, all inside the writer's transaction.

use std::cell::RefCell;
use std::collections::HashMap;

use civkit_framework::kinds::{self, Address};
use civkit_framework::persister::EventTable;
use civkit_framework::{stored, Result};
use nostr::{Event, EventId, JsonUtil, PublicKey, Timestamp};
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

pub(crate) struct PgTable<'a, 'b> {
    pub tx: RefCell<&'a mut Transaction<'b>>,
    /// This node's number, recorded with each event it stores.
    pub node: i64,
    /// The statements of the transaction's connection.
    pub prepared: &'a Prepared,
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
        let seq: i64 = self
            .one(
                "INSERT INTO events (id, pubkey, kind, created_at, expiration, json, node)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
                &[
                    &event.id.as_bytes().as_slice(),
                    &event.pubkey.to_bytes().as_slice(),
                    &i32::from(event.kind.as_u16()),
                    &created,
                    &expiration,
                    &event.as_json(),
                    &self.node,
                ],
                |r| Ok(r.get(0)),
            )?
            .ok_or_else(|| pg_err("INSERT returned no seq"))?;
        // One row per distinct (letter, value): a value repeated in the
        // event would otherwise make it a result twice.
        let mut seen = std::collections::HashSet::new();
        for tag in event.tags.iter() {
            if let (Some(letter), Some(value)) = (tag.single_letter_tag(), tag.content()) {
                if !seen.insert((letter, value)) {
                    continue;
                }
                let letter = letter.as_char() as u8 as i8;
                self.run(
                    "INSERT INTO tags (seq, letter, value, created_at, id) VALUES ($1, $2, $3, $4, $5)",
                    &[&seq, &letter, &value.as_bytes(), &created, &event.id.as_bytes().as_slice()],
                )?;
            }
        }
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
