//! `civkitd migrate`: move a store's whole content into another store,
//! of the same backend or another (LMDB or sled into PostgreSQL, and back).
//!
//! Each config names a store with its `[persister]` table (and
//! `node.data_dir` for the embedded ones). The source is read page by page
//! ([`Persister::export`]) and each page written to the target in one
//! atomic, durable write ([`Persister::import`]): events with their ids and
//! signatures checked again, deletion tombstones (so that a deleted event
//! cannot come back), and every service's key-value namespace (spent
//! credentials, notary rounds, quotes). The target must hold no events;
//! the nodes of the source should be stopped, or events they accept during
//! the move may be left behind.

use anyhow::{bail, Context, Result};
use civkit_framework::{BuildContext, ComponentConfig, Persister, Record, Registry};
use std::sync::Arc;

use crate::Config;

/// Records per page: one read of the source, one write of the target.
const PAGE: usize = 1_000;

/// What one migration moved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Moved {
    pub events: u64,
    pub tombstones: u64,
    pub keys: u64,
}

/// Open the store a config names, and nothing else of the node.
pub fn open_store(config: &Config, registry: &Registry) -> Result<Arc<dyn Persister>> {
    crate::files::ensure_data_dir(&config.node.data_dir)?;
    // A persister does not sign; the keys are there because every
    // constructor gets them. No key file is read or written.
    let ctx = BuildContext::new(&config.node.data_dir, "persister", nostr::Keys::generate());
    Ok(registry.build_persister(
        &ComponentConfig::new("persister", config.persister.clone()),
        &ctx,
    )?)
}

/// Copy everything of `from` into `to` (which must hold no events),
/// calling `progress` after each page.
pub async fn migrate(
    from: &dyn Persister,
    to: &dyn Persister,
    mut progress: impl FnMut(&Moved),
) -> Result<Moved> {
    let held = to.stats().await.context("reading the target store")?.events;
    if held > 0 {
        bail!("the target store already holds {held} events; migrate into an empty store");
    }
    let mut moved = Moved::default();
    let mut cursor = None;
    loop {
        let page = from
            .export(cursor, PAGE)
            .await
            .context("reading the source store")?;
        to.import(&page.records)
            .await
            .context("writing the target store")?;
        for r in &page.records {
            match r {
                Record::Event(_) => moved.events += 1,
                Record::IdTombstone { .. } | Record::AddressTombstone { .. } => {
                    moved.tombstones += 1
                }
                Record::Kv { .. } => moved.keys += 1,
            }
        }
        progress(&moved);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    to.flush().await.context("flushing the target store")?;
    let (source, target) = (from.stats().await?.events, to.stats().await?.events);
    if target < moved.events || source > target {
        bail!(
            "the target store holds {target} events after moving {} (the source holds {source}); \
             was a node writing to the source?",
            moved.events
        );
    }
    Ok(moved)
}
