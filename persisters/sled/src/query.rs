//! The query planner and executor.
//!
//! Each filter is served from one index: a set of key prefixes whose entries
//! are in result order (newest first, ties by lowest id). The prefixes are
//! merged lazily, so a filter with thousands of authors reads only as many
//! entries as its `limit` needs, not `limit` per author. Every query has a
//! scan budget (index entries visited plus events loaded); a query that would
//! exceed it is refused rather than served partly.
//!
//! `COUNT` counts index entries without loading events when the index
//! expresses the whole filter, and loads events only to check the conditions
//! it does not.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use civkit_framework::kinds;
use civkit_framework::stored::StoredEvent;
use civkit_framework::{Error, Result};
use nostr::filter::MatchEventOptions;
use nostr::{Event, EventId, Filter, Timestamp};

use crate::engine::{Entries, Reader};
use crate::index::{
    body_key, decode, inv, key, seq_in, seq_of, tag_hash, tail_of, BY_AUTHOR_KIND, BY_KIND, BY_TAG,
    BY_TIME, EXPIRY, TAIL,
};
use crate::store_err;

/// How one filter is served.
struct Plan {
    prefixes: Vec<Vec<u8>>,
    /// The index expresses every condition of the filter (besides expiry),
    /// so matching entries need not be loaded to be counted.
    exact: bool,
    /// One event may sit under several of the prefixes (several tag values).
    overlapping: bool,
    /// The prefixes are `K ‖ pubkey`, each to be read as one prefix per
    /// kind the author used ([`author_kinds`]).
    by_author: bool,
    /// Tag conditions the prefixes do not hold: for each, the tag index
    /// prefixes of its values. An entry whose tail sits under none of one
    /// condition's prefixes cannot match, and is skipped without loading
    /// its event (a point read instead of a read and a parse).
    probes: Vec<Vec<Vec<u8>>>,
}

/// The tag index prefixes of one tag condition.
fn tag_prefixes(
    letter: &nostr::SingleLetterTag,
    values: &std::collections::BTreeSet<String>,
) -> Vec<Vec<u8>> {
    let l = letter.as_char() as u8;
    values
        .iter()
        .map(|v| key(BY_TAG, &[&[l], &tag_hash(v)]))
        .collect()
}

fn plan(f: &Filter) -> Plan {
    let authors: Vec<[u8; 32]> = f.authors.iter().flatten().map(|p| p.to_bytes()).collect();
    let kinds: Vec<[u8; 2]> = f
        .kinds
        .iter()
        .flatten()
        .map(|k| k.as_u16().to_be_bytes())
        .collect();
    let tags: Vec<_> = f
        .generic_tags
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let others = f.ids.is_some() || f.search.is_some();
    let probes = |skip: usize| -> Vec<Vec<Vec<u8>>> {
        tags.iter()
            .skip(skip)
            .map(|(l, v)| tag_prefixes(l, v))
            .collect()
    };
    if !authors.is_empty() && !kinds.is_empty() && authors.len() * kinds.len() <= 256 {
        let mut prefixes = Vec::new();
        for a in &authors {
            for k in &kinds {
                prefixes.push(key(BY_AUTHOR_KIND, &[a, k]));
            }
        }
        return Plan {
            prefixes,
            exact: tags.is_empty() && !others,
            overlapping: false,
            by_author: false,
            probes: probes(0),
        };
    }
    if !authors.is_empty() {
        return Plan {
            prefixes: authors.iter().map(|a| key(BY_AUTHOR_KIND, &[a])).collect(),
            exact: kinds.is_empty() && tags.is_empty() && !others,
            overlapping: false,
            by_author: true,
            probes: probes(0),
        };
    }
    if let Some((letter, values)) = tags.first() {
        return Plan {
            prefixes: tag_prefixes(letter, values),
            exact: kinds.is_empty() && tags.len() == 1 && !others,
            overlapping: values.len() > 1,
            by_author: false,
            probes: probes(1),
        };
    }
    if !kinds.is_empty() {
        return Plan {
            prefixes: kinds.iter().map(|k| key(BY_KIND, &[k])).collect(),
            exact: !others,
            overlapping: false,
            by_author: false,
            probes: Vec::new(),
        };
    }
    Plan {
        prefixes: vec![key(BY_TIME, &[])],
        exact: !others,
        overlapping: false,
        by_author: false,
        probes: Vec::new(),
    }
}

/// The most author-and-kind prefixes one filter's authors may expand to
/// (an author who used thousands of kinds would otherwise open a cursor
/// for each).
pub(crate) const MAX_AUTHOR_KINDS: usize = 4096;

/// The prefixes `K ‖ pubkey ‖ kind` of every kind an author used, found by
/// a skip scan (one seek per kind) under `K ‖ pubkey`.
fn author_kinds<R: Reader>(
    tree: &R,
    author: &[u8],
    budget: &mut Budget,
    out: &mut Vec<Vec<u8>>,
) -> Result<()> {
    let end = [author, &[0xff; 2 + TAIL][..]].concat();
    let mut next = Some(0u16);
    while let Some(kind) = next {
        budget.spend(1)?;
        let start = [author, &kind.to_be_bytes()[..]].concat();
        let Some(item) = tree.between(&start, &end)?.next() else {
            break;
        };
        let found: [u8; 2] = item?
            .0
            .get(author.len()..author.len() + 2)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| store_err("an author-and-kind key without its kind"))?;
        if out.len() >= MAX_AUTHOR_KINDS {
            return Err(Error::Invalid(format!(
                "these authors used more than {MAX_AUTHOR_KINDS} kinds; name the kinds"
            )));
        }
        out.push([author, &found[..]].concat());
        next = u16::from_be_bytes(found).checked_add(1);
    }
    Ok(())
}

/// What a query may cost before it runs, in stored entries read (a bound,
/// not a measure): the `ids` it names, or each filter's index prefixes plus
/// its `limit` (four times that when the index does not hold every
/// condition, so more entries are read per match).
pub(crate) fn query_cost(filters: &[Filter], max_scan: usize) -> usize {
    filters
        .iter()
        .map(|f| match f.ids.as_ref().filter(|ids| !ids.is_empty()) {
            Some(ids) => ids.len(),
            None => {
                let p = plan(f);
                let limit = f.limit.unwrap_or(max_scan);
                let per_match = if p.exact { 1 } else { 4 };
                p.prefixes.len() + limit.saturating_mul(per_match)
            }
        })
        .fold(0usize, usize::saturating_add)
        .min(max_scan)
}

/// Index entries of a plan within `since`/`until`, merged newest first and
/// read lazily; yields each entry's tail (`inv ‖ id[..8] ‖ seq`), without
/// repeats.
struct Merged<'r, 'b> {
    iters: Vec<Entries<'r>>,
    heap: BinaryHeap<Reverse<([u8; TAIL], usize)>>,
    last: Option<[u8; TAIL]>,
    budget: &'b mut Budget,
}

impl<'r, 'b> Merged<'r, 'b> {
    fn new<R: Reader>(
        tree: &'r R,
        plan: &Plan,
        f: &Filter,
        budget: &'b mut Budget,
    ) -> Result<Self> {
        let until = f.until.unwrap_or(Timestamp::from_secs(u64::MAX));
        let since = f.since.unwrap_or(Timestamp::from_secs(0));
        let (newest, oldest) = (inv(until), inv(since));
        let mut m = Merged {
            iters: Vec::with_capacity(plan.prefixes.len()),
            heap: BinaryHeap::with_capacity(plan.prefixes.len()),
            last: None,
            budget,
        };
        if since > until {
            return Ok(m);
        }
        let mut found = Vec::new();
        let prefixes = if plan.by_author {
            for author in &plan.prefixes {
                author_kinds(tree, author, m.budget, &mut found)?;
            }
            &found
        } else {
            &plan.prefixes
        };
        for (i, prefix) in prefixes.iter().enumerate() {
            let start = [prefix.as_slice(), &newest[..]].concat();
            let end = [prefix.as_slice(), &oldest[..], &[0xff; 16][..]].concat();
            m.iters.push(tree.between(&start, &end)?);
            m.advance(i)?;
        }
        Ok(m)
    }

    fn advance(&mut self, i: usize) -> Result<()> {
        if let Some(item) = self.iters[i].next() {
            let (k, _) = item?;
            self.budget.spend(1)?;
            let tail: [u8; TAIL] = k
                .get(k.len().saturating_sub(TAIL)..)
                .and_then(|t| t.try_into().ok())
                .ok_or_else(|| store_err("an index key shorter than its tail"))?;
            self.heap.push(Reverse((tail, i)));
        }
        Ok(())
    }

    fn next(&mut self) -> Result<Option<[u8; TAIL]>> {
        while let Some(Reverse((tail, i))) = self.heap.pop() {
            self.advance(i)?;
            if self.last == Some(tail) {
                continue;
            }
            self.last = Some(tail);
            return Ok(Some(tail));
        }
        Ok(None)
    }
}

/// True unless the entry with this tail misses one of the plan's tag
/// conditions (one point read per value tried).
fn passes_probes<R: Reader>(
    tree: &R,
    plan: &Plan,
    tail: &[u8; TAIL],
    budget: &mut Budget,
) -> Result<bool> {
    for condition in &plan.probes {
        let mut found = false;
        for prefix in condition {
            budget.spend(1)?;
            if tree.get(&[prefix.as_slice(), tail].concat())?.is_some() {
                found = true;
                break;
            }
        }
        if !found {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The work one query may do: index entries visited plus events loaded.
pub(crate) struct Budget {
    left: usize,
    max: usize,
}

impl Budget {
    pub fn new(max: usize) -> Self {
        Budget { left: max, max }
    }
    fn spend(&mut self, n: usize) -> Result<()> {
        if self.left < n {
            return Err(Error::Invalid(format!(
                "the query would read more than {} stored entries; narrow its filters",
                self.max
            )));
        }
        self.left -= n;
        Ok(())
    }
}

/// The stored event number `seq`, not decoded yet.
fn load<R: Reader>(tree: &R, seq: u64, budget: &mut Budget) -> Result<Option<StoredEvent>> {
    budget.spend(1)?;
    let Some(bytes) = tree.get(&body_key(seq))? else {
        return Ok(None);
    };
    let json = String::from_utf8(bytes.into_owned()).map_err(store_err)?;
    Ok(Some(StoredEvent::from_json(json)))
}

/// The stored event with this id, and its `seq`.
fn load_id<R: Reader>(
    tree: &R,
    id: &EventId,
    budget: &mut Budget,
) -> Result<Option<(u64, StoredEvent)>> {
    budget.spend(1)?;
    let Some(seq) = seq_of(tree, id.as_bytes())? else {
        return Ok(None);
    };
    Ok(load(tree, seq, budget)?.map(|e| (seq, e)))
}

/// Whether a stored event matches the filter and is not expired at `now`
/// (decodes it).
fn keep(f: &Filter, s: &StoredEvent, now: Timestamp) -> Result<bool> {
    let e = s.event()?;
    Ok(f.match_event(e, MatchEventOptions::default()) && !kinds::is_expired(e, now))
}

/// The most expired-but-not-yet-swept events a query collects to leave out
/// by `seq`; past that, each result of an exact plan is decoded and checked.
pub(crate) const EXPIRED_SET_MAX: usize = 1024;

/// The stored events expired at `now` (the sweep has not removed them yet),
/// known by `seq` from the expiry index without loading them: results of a
/// plan the index expresses exactly are then served without being decoded.
/// Read once per query, when a plan first needs it.
struct Expired {
    now: Timestamp,
    seqs: Option<Option<HashSet<u64>>>,
}

impl Expired {
    fn new(now: Timestamp) -> Self {
        Expired { now, seqs: None }
    }

    /// The set, or `None` when there are more than [`EXPIRED_SET_MAX`].
    fn seqs<R: Reader>(&mut self, tree: &R) -> Result<Option<&HashSet<u64>>> {
        if self.seqs.is_none() {
            let start = key(EXPIRY, &[]);
            let end = key(EXPIRY, &[&self.now.as_secs().to_be_bytes(), &[0xff; 16]]);
            let mut set = HashSet::new();
            for item in tree.between(&start, &end)?.take(EXPIRED_SET_MAX + 1) {
                set.insert(seq_in(&item?.0)?);
            }
            self.seqs = Some((set.len() <= EXPIRED_SET_MAX).then_some(set));
        }
        Ok(self.seqs.as_ref().and_then(Option::as_ref))
    }
}

/// Events matching one filter, newest first, at most `limit`, each with its
/// index tail (the result order).
fn query_filter<R: Reader>(
    tree: &R,
    f: &Filter,
    expired: &mut Expired,
    budget: &mut Budget,
) -> Result<Vec<([u8; TAIL], StoredEvent)>> {
    let now = expired.now;
    let limit = f.limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    if let Some(ids) = f.ids.as_ref().filter(|ids| !ids.is_empty()) {
        for id in ids {
            if let Some((seq, e)) = load_id(tree, id, budget)? {
                if keep(f, &e, now)? {
                    out.push((tail_of(e.event()?, seq), e));
                }
            }
        }
        let mut out = merge(out);
        out.truncate(limit);
        return Ok(out);
    }
    let plan = plan(f);
    let mut merged = Merged::new(tree, &plan, f, budget)?;
    while out.len() < limit {
        let Some(tail) = merged.next()? else { break };
        if !passes_probes(tree, &plan, &tail, merged.budget)? {
            continue;
        }
        let seq = seq_in(&tail)?;
        // An exact plan's entries all match: only expiry is left to check,
        // and the expiry index answers it without a decode.
        let known = match plan.exact {
            true => expired.seqs(tree)?.map(|set| set.contains(&seq)),
            false => None,
        };
        if known == Some(true) {
            continue;
        }
        let Some(e) = load(tree, seq, merged.budget)? else {
            continue;
        };
        if known == Some(false) || keep(f, &e, now)? {
            out.push((tail, e));
        }
    }
    Ok(out)
}

/// Results in result order (newest first, ties by the id's first 8 bytes,
/// then commit order, as in the index), each event once.
fn merge(mut out: Vec<([u8; TAIL], StoredEvent)>) -> Vec<([u8; TAIL], StoredEvent)> {
    out.sort_by_key(|(tail, _)| *tail);
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// Events matching any filter, newest first, de-duplicated. Results of a
/// plan the index expresses exactly come back undecoded.
pub(crate) fn query<R: Reader>(
    tree: &R,
    filters: &[Filter],
    now: Timestamp,
    max_scan: usize,
) -> Result<Vec<StoredEvent>> {
    let mut budget = Budget::new(max_scan);
    let mut expired = Expired::new(now);
    let mut out = Vec::new();
    for f in filters {
        out.extend(query_filter(tree, f, &mut expired, &mut budget)?);
    }
    if filters.len() > 1 {
        out = merge(out);
    }
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

/// How many stored events match any filter. `expired` lists the stored
/// events (with their `seq`) that are expired at `now` (the sweep has not
/// removed them yet); they are never counted.
pub(crate) fn count<R: Reader>(
    tree: &R,
    filters: &[Filter],
    now: Timestamp,
    max_scan: usize,
    expired: &[(u64, Event)],
) -> Result<u64> {
    let mut budget = Budget::new(max_scan);
    if let [f] = filters {
        if f.ids.is_none() {
            let plan = plan(f);
            if plan.exact && !plan.overlapping {
                // Every entry in range matches, except expired events.
                let mut n: u64 = 0;
                let mut merged = Merged::new(tree, &plan, f, &mut budget)?;
                while merged.next()?.is_some() {
                    n += 1;
                }
                let gone = expired
                    .iter()
                    .filter(|(_, e)| f.match_event(e, MatchEventOptions::default()))
                    .count() as u64;
                return Ok(n.saturating_sub(gone));
            }
        }
    }
    // Several filters, overlapping prefixes or conditions the index does not
    // hold: collect the `seq`s of matches (bounded by the budget).
    let mut seqs: HashSet<u64> = HashSet::new();
    for f in filters {
        if let Some(wanted) = f.ids.as_ref().filter(|ids| !ids.is_empty()) {
            for id in wanted {
                if let Some((seq, e)) = load_id(tree, id, &mut budget)? {
                    if keep(f, &e, now)? {
                        seqs.insert(seq);
                    }
                }
            }
            continue;
        }
        let plan = plan(f);
        let mut merged = Merged::new(tree, &plan, f, &mut budget)?;
        while let Some(tail) = merged.next()? {
            let seq = seq_in(&tail)?;
            if seqs.contains(&seq) {
                continue;
            }
            let matches = if plan.exact {
                !expired.iter().any(|(s, _)| *s == seq)
            } else if !passes_probes(tree, &plan, &tail, merged.budget)? {
                false
            } else {
                match load(tree, seq, merged.budget)? {
                    Some(e) => keep(f, &e, now)?,
                    None => false,
                }
            };
            if matches {
                seqs.insert(seq);
            }
        }
    }
    Ok(seqs.len() as u64)
}

/// Stored events whose expiration is at or before `now`, at most `max`
/// (the sweep removes them; until then queries must leave them out), with
/// their `seq`.
pub(crate) fn expired<R: Reader>(
    tree: &R,
    now: Timestamp,
    max: usize,
) -> Result<Vec<(u64, Event)>> {
    let start = key(EXPIRY, &[]);
    let end = key(EXPIRY, &[&now.as_secs().to_be_bytes(), &[0xff; 16]]);
    let mut out = Vec::new();
    for item in tree.between(&start, &end)?.take(max) {
        let (k, _) = item?;
        let seq = seq_in(&k)?;
        if let Some(b) = tree.get(&body_key(seq))? {
            out.push((seq, decode(&b)?));
        }
    }
    Ok(out)
}
