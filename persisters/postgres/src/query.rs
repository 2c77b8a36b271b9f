//! NIP-01 filters as SQL. Every value is a bound parameter; nothing from a
//! filter is spliced into the statement text.

use civkit_framework::stored::StoredEvent;
use civkit_framework::Result;
use nostr::{Filter, Timestamp};
use postgres::types::ToSql;
use postgres::GenericClient;

use crate::db_err;
use crate::table::big;

type Param = Box<dyn ToSql + Sync + Send>;

/// The `WHERE` clause of one filter (expired events left out at `now`);
/// its parameters are appended to `params`, numbered after those already
/// there.
fn conditions(f: &Filter, now: Timestamp, params: &mut Vec<Param>) -> String {
    conditions_but(f, now, params, None)
}

/// [`conditions`] without the tag condition of letter `skip` (one the
/// query's `FROM` already applies).
fn conditions_but(
    f: &Filter,
    now: Timestamp,
    params: &mut Vec<Param>,
    skip: Option<nostr::SingleLetterTag>,
) -> String {
    let mut clauses: Vec<String> = Vec::new();
    let bind = bind_one;
    if let Some(ids) = &f.ids {
        let v: Vec<Vec<u8>> = ids.iter().map(|i| i.as_bytes().to_vec()).collect();
        clauses.push(one_of(params, "e.id", v));
    }
    if let Some(authors) = &f.authors {
        let v: Vec<Vec<u8>> = authors.iter().map(|a| a.to_bytes().to_vec()).collect();
        clauses.push(one_of(params, "e.pubkey", v));
    }
    if let Some(kinds) = &f.kinds {
        let v: Vec<i32> = kinds.iter().map(|k| i32::from(k.as_u16())).collect();
        clauses.push(one_of(params, "e.kind", v));
    }
    if let Some(since) = f.since {
        let p = bind(params, Box::new(big(since.as_secs())));
        clauses.push(format!("e.created_at >= {p}"));
    }
    if let Some(until) = f.until {
        let p = bind(params, Box::new(big(until.as_secs())));
        clauses.push(format!("e.created_at <= {p}"));
    }
    for (letter, values) in &f.generic_tags {
        if Some(*letter) == skip {
            continue;
        }
        let l = bind(params, Box::new(letter.as_char() as u8 as i8));
        let v: Vec<Vec<u8>> = values.iter().map(|v| v.as_bytes().to_vec()).collect();
        let v = bind(params, Box::new(v));
        clauses.push(format!(
            "EXISTS (SELECT 1 FROM tags t WHERE t.seq = e.seq AND t.letter = {l} AND t.value = ANY({v}))"
        ));
    }
    let now = bind(params, Box::new(big(now.as_secs())));
    clauses.push(format!("(e.expiration IS NULL OR e.expiration > {now})"));
    clauses.join(" AND ")
}

/// `column` equal to one of `values`: `= $n` for one value, so that the
/// planner walks an index in `created_at` order and stops at the limit
/// (PostgreSQL 15 cannot do that for `= ANY($n)`), else `= ANY($n)`.
fn one_of<T>(params: &mut Vec<Param>, column: &str, mut values: Vec<T>) -> String
where
    T: ToSql + Sync + Send + 'static,
    Vec<T>: ToSql + Sync + Send,
{
    if values.len() == 1 {
        if let Some(v) = values.pop() {
            return format!("{column} = {}", bind_one(params, Box::new(v)));
        }
    }
    format!("{column} = ANY({})", bind_one(params, Box::new(values)))
}

fn bind_one(params: &mut Vec<Param>, p: Param) -> String {
    params.push(p);
    format!("${}", params.len())
}

/// The filter's one tag condition with one value, when it names no
/// authors or ids (which the events' own indexes serve better).
fn by_one_tag(f: &Filter) -> Option<(nostr::SingleLetterTag, &String)> {
    if f.ids.is_some() || f.authors.is_some() {
        return None;
    }
    let (letter, values) = f.generic_tags.iter().next()?;
    match values.len() {
        1 => values.iter().next().map(|v| (*letter, v)),
        _ => None,
    }
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Events matching any filter, newest first (ties by lowest id), each once.
pub(crate) fn query(
    client: &mut impl GenericClient,
    filters: &[Filter],
    now: Timestamp,
) -> Result<Vec<StoredEvent>> {
    let mut out = Vec::new();
    for f in filters {
        if f.limit == Some(0) {
            continue;
        }
        let mut params = Vec::new();
        let mut sql = match by_one_tag(f) {
            // One tag value and no author or id: read the tag index in
            // time order and stop at the limit (an EXISTS per event would
            // walk every event by time until enough match).
            Some((letter, value)) => {
                let l = bind_one(&mut params, Box::new(letter.as_char() as u8 as i8));
                let v = bind_one(&mut params, Box::new(value.as_bytes().to_vec()));
                let clause = conditions_but(f, now, &mut params, Some(letter));
                format!(
                    "SELECT e.json FROM tags t JOIN events e ON e.seq = t.seq \
                     WHERE t.letter = {l} AND t.value = {v} AND {clause} \
                     ORDER BY t.created_at DESC, t.id"
                )
            }
            None => {
                let clause = conditions(f, now, &mut params);
                format!(
                    "SELECT e.json FROM events e WHERE {clause} ORDER BY e.created_at DESC, e.id"
                )
            }
        };
        if let Some(limit) = f.limit {
            params.push(Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" LIMIT ${}", params.len()));
        }
        for row in client.query(&sql, &refs(&params)).map_err(db_err)? {
            out.push(StoredEvent::from_json(row.get(0)));
        }
    }
    if filters.len() == 1 {
        return Ok(out);
    }
    // Several filters: newest first, ties by lowest id, each once, keeping
    // each event's stored JSON (decoded once, for its order key).
    let mut keyed = out
        .into_iter()
        .map(|s| {
            let e = s.event()?;
            Ok(((std::cmp::Reverse(e.created_at), e.id), s))
        })
        .collect::<Result<Vec<_>>>()?;
    keyed.sort_by_key(|(key, _)| *key);
    keyed.dedup_by(|a, b| a.0 == b.0);
    Ok(keyed.into_iter().map(|(_, s)| s).collect())
}

/// How many stored events match any filter, without reading their bodies.
pub(crate) fn count(
    client: &mut impl GenericClient,
    filters: &[Filter],
    now: Timestamp,
) -> Result<u64> {
    let mut all_params: Vec<Param> = Vec::new();
    let mut selects = Vec::new();
    for f in filters {
        let clause = conditions(f, now, &mut all_params);
        selects.push(format!("SELECT e.seq FROM events e WHERE {clause}"));
    }
    let sql = format!(
        "SELECT count(*) FROM ({}) AS matched",
        selects.join(" UNION ")
    );
    let n: i64 = client
        .query_one(&sql, &refs(&all_params))
        .map_err(db_err)?
        .get(0);
    Ok(n.max(0) as u64)
}
