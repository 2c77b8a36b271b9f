//! [`civkit_framework::Persister::export`] from PostgreSQL: the tables one
//! after the other, each in its key order, a page at a time. The cursor is
//! the table's number and the last key returned in it.

use civkit_framework::kinds::Address;
use civkit_framework::{Export, Record, Result};
use nostr::{EventId, PublicKey, Timestamp};
use postgres::types::ToSql;
use postgres::{Client, Row};

use crate::{db_err, pg_err};

/// The tables, in export order, with the query of one page after a key.
const TABLES: [(&str, &str); 4] = [
    (
        "SELECT pubkey, kind, d, until FROM address_tombstones ORDER BY pubkey, kind, d LIMIT $1",
        "SELECT pubkey, kind, d, until FROM address_tombstones \
         WHERE (pubkey, kind, d) > ($2, $3, $4) ORDER BY pubkey, kind, d LIMIT $1",
    ),
    (
        "SELECT id, author FROM id_tombstones ORDER BY id LIMIT $1",
        "SELECT id, author FROM id_tombstones WHERE id > $2 ORDER BY id LIMIT $1",
    ),
    (
        "SELECT namespace, key, value FROM kv ORDER BY namespace, key LIMIT $1",
        "SELECT namespace, key, value FROM kv \
         WHERE (namespace, key) > ($2, $3) ORDER BY namespace, key LIMIT $1",
    ),
    (
        "SELECT seq, json FROM events ORDER BY seq LIMIT $1",
        "SELECT seq, json FROM events WHERE seq > $2 ORDER BY seq LIMIT $1",
    ),
];

/// A row's record, and its key as a cursor (without the table number).
fn record(table: usize, row: &Row) -> Result<(Record, Vec<u8>)> {
    let bad = |what: &str| pg_err(format!("unreadable {what} in the store"));
    Ok(match table {
        0 => {
            let (pubkey, kind, d): (&[u8], i32, &[u8]) = (row.get(0), row.get(1), row.get(2));
            let address = Address {
                pubkey: PublicKey::from_slice(pubkey).map_err(|_| bad("address tombstone"))?,
                kind: u16::try_from(kind).map_err(|_| bad("address tombstone"))?,
                d: String::from_utf8(d.to_vec()).map_err(|_| bad("address tombstone"))?,
            };
            let until = Timestamp::from(u64::try_from(row.get::<_, i64>(3)).unwrap_or(0));
            let key = [pubkey, &kind.to_be_bytes(), d].concat();
            (Record::AddressTombstone { address, until }, key)
        }
        1 => {
            let (id, author): (&[u8], &[u8]) = (row.get(0), row.get(1));
            let record = Record::IdTombstone {
                id: EventId::from_slice(id).map_err(|_| bad("id tombstone"))?,
                author: PublicKey::from_slice(author).map_err(|_| bad("id tombstone"))?,
            };
            (record, id.to_vec())
        }
        2 => {
            let (namespace, key, value): (String, Vec<u8>, Vec<u8>) =
                (row.get(0), row.get(1), row.get(2));
            let cursor = [namespace.as_bytes(), &[0], &key].concat();
            let record = Record::Kv {
                namespace,
                key,
                value,
            };
            (record, cursor)
        }
        _ => (
            Record::Event(row.get(1)),
            row.get::<_, i64>(0).to_be_bytes().to_vec(),
        ),
    })
}

/// The query parameters after the limit for a cursor key of `table`.
fn after(table: usize, key: &[u8]) -> Option<Vec<Box<dyn ToSql + Sync>>> {
    Some(match table {
        0 => {
            let kind = i32::from_be_bytes(key.get(32..36)?.try_into().ok()?);
            vec![
                Box::new(key.get(..32)?.to_vec()),
                Box::new(kind),
                Box::new(key.get(36..)?.to_vec()),
            ]
        }
        1 => vec![Box::new(key.to_vec())],
        2 => {
            let split = key.iter().position(|b| *b == 0)?;
            let namespace = String::from_utf8(key[..split].to_vec()).ok()?;
            vec![Box::new(namespace), Box::new(key[split + 1..].to_vec())]
        }
        _ => vec![Box::new(i64::from_be_bytes(key.try_into().ok()?))],
    })
}

/// One page of the export.
pub(crate) fn page(c: &mut Client, cursor: Option<Vec<u8>>, max: usize) -> Result<Export> {
    let max = max.max(1);
    let (mut table, mut key) = match &cursor {
        Some(c) => match c.split_first() {
            Some((t, k)) if usize::from(*t) < TABLES.len() => (usize::from(*t), Some(k.to_vec())),
            _ => return Err(pg_err("not an export cursor of this store")),
        },
        None => (0, None),
    };
    let mut records = Vec::new();
    while table < TABLES.len() {
        let want = i64::try_from(max - records.len()).unwrap_or(i64::MAX);
        let rows = match &key {
            None => c.query(TABLES[table].0, &[&want]),
            Some(k) => {
                let rest =
                    after(table, k).ok_or_else(|| pg_err("not an export cursor of this store"))?;
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&want];
                params.extend(rest.iter().map(|b| b.as_ref()));
                c.query(TABLES[table].1, &params)
            }
        }
        .map_err(db_err)?;
        let full = rows.len() as i64 == want;
        for row in &rows {
            let (record, k) = record(table, row)?;
            records.push(record);
            key = Some(k);
        }
        if full {
            let mut next = vec![table as u8];
            next.extend(key.unwrap_or_default());
            return Ok(Export {
                records,
                next: Some(next),
            });
        }
        table += 1;
        key = None;
    }
    Ok(Export {
        records,
        next: None,
    })
}
