//! # civkit-chain
//!
//! The one Bitcoin chain client of civkit: what the notary needs to check
//! Mainstay attestations and what the rank service needs to check stake
//! certificates. [`ChainSource`] has two backends, the operator's choice:
//!
//! - [`BitcoindRpc`]: bitcoind's JSON-RPC (`getblockcount`, `getblockhash`,
//!   `getblock`, `getrawtransaction` (needs `-txindex`), `gettxout`);
//! - [`Esplora`]: an Esplora REST server (`/blocks/tip/height`,
//!   `/block-height/:height`, `/block/:hash/txid/:index`, `/tx/:txid/hex`,
//!   `/tx/:txid/status`, `/tx/:txid/outspend/:vout`).
//!
//! Every answer is outside input: a transaction must hash to the txid that
//! was asked for, numbers must be numbers, and anything else is
//! [`Error::BadAnswer`]. [`follow`] watches the tip for new blocks.
//! With the `testing` feature, [`stand_in`] serves real blocks built with
//! the `bitcoin` crate over both APIs.

#![forbid(unsafe_code)]

mod backends;
mod config;
#[cfg(feature = "testing")]
pub mod stand_in;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bitcoin::{BlockHash, OutPoint, Transaction, TxOut, Txid};
use tokio::sync::watch;

pub use backends::{BitcoindRpc, Esplora};
pub use config::SourceConfig;

/// Why a chain lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The chain source could not be reached, or refused.
    #[error("chain source: {0}")]
    Unreachable(#[from] civkit_http::Error),
    /// It answered something that is not what was asked for.
    #[error("chain source answered badly: {0}")]
    BadAnswer(String),
    /// What was asked for is not on the chain (no such block or transaction).
    #[error("not on the chain: {0}")]
    NotFound(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where blocks, transactions and outputs come from.
#[async_trait]
pub trait ChainSource: Send + Sync {
    /// The height of the best block.
    async fn tip_height(&self) -> Result<u64>;
    /// The hash of the best chain's block at `height`.
    async fn block_hash(&self, height: u64) -> Result<BlockHash>;
    /// The txid of the transaction at position `index` of block `block`.
    async fn txid_at(&self, block: &BlockHash, index: u32) -> Result<Txid>;
    /// The transaction `txid` (checked to hash to it).
    async fn transaction(&self, txid: &Txid) -> Result<Transaction>;
    /// How many blocks confirm `txid` (0: unconfirmed).
    async fn confirmations(&self, txid: &Txid) -> Result<u64>;
    /// The output `outpoint` while it is unspent; `None` once it is spent
    /// (or when it never existed).
    async fn unspent_output(&self, outpoint: &OutPoint) -> Result<Option<TxOut>>;
}

/// The transaction at a short channel id's block height and index
/// (BOLT7: block height, transaction index, output index).
pub async fn transaction_at(
    source: &dyn ChainSource,
    height: u64,
    index: u32,
) -> Result<(Txid, Transaction)> {
    let block = source.block_hash(height).await?;
    let txid = source.txid_at(&block, index).await?;
    Ok((txid, source.transaction(&txid).await?))
}

/// The best block, as [`follow`] last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub height: u64,
    pub hash: BlockHash,
}

/// Watch the chain's tip: the receiver holds the best block seen (`None`
/// until the first poll answers), polled every `every`, and changes when a
/// block arrives or replaces the tip (a reorganisation). A failing poll
/// keeps the last tip and is logged; the task ends when every receiver is
/// dropped.
pub fn follow(source: Arc<dyn ChainSource>, every: Duration) -> watch::Receiver<Option<Tip>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tick.tick() => {}
            }
            let tip = async {
                let height = source.tip_height().await?;
                Ok::<_, Error>(Tip {
                    height,
                    hash: source.block_hash(height).await?,
                })
            };
            match tip.await {
                Ok(tip) => {
                    tx.send_if_modified(|seen| {
                        let new = *seen != Some(tip);
                        *seen = Some(tip);
                        new
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the chain tip"),
            }
        }
    });
    rx
}
