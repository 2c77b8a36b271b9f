//! `verify-history`: the board's published rounds against the orders seen,
//! and, with `--esplora`, the attestations and the staychain on chain.

use anyhow::{anyhow, bail, Context, Result};
use nostr::{Filter, Kind};

use crate::boards::{nip11_of, Boards};
use crate::{Cli, ORDER_KIND};

/// What `--esplora` checks on chain.
pub struct OnChain<'a> {
    pub esplora: &'a str,
    pub base_key: &'a str,
    pub chain_code: &'a str,
    pub staychain_start: &'a str,
    pub min_confirmations: u64,
}

pub async fn verify(
    cli: &Cli,
    seen_file: Option<&std::path::Path>,
    chain: Option<&OnChain<'_>>,
) -> Result<()> {
    use civkit_mainstay::history::{self, OrderStatus, PublishedRound, ROUND_KIND};
    let url = cli.boards.first().ok_or_else(|| anyhow!("give --board"))?;
    let doc = nip11_of(url)?;
    let board = nostr::PublicKey::from_hex(doc["pubkey"].as_str().unwrap_or_default())
        .map_err(|_| anyhow!("{url} has no pubkey in NIP-11"))?;
    let boards = Boards::connect(std::slice::from_ref(url), None).await?;
    let rounds = boards
        .fetch(
            url,
            Filter::new().kind(Kind::from(ROUND_KIND)).author(board),
        )
        .await;
    let orders = boards
        .fetch(url, Filter::new().kind(Kind::from(ORDER_KIND)))
        .await;
    boards.close().await;
    let rounds: Vec<PublishedRound> = rounds?
        .iter()
        .filter_map(|e| serde_json::from_str(&e.content).ok())
        .collect();
    let mut seen: Vec<String> = orders?.iter().map(|e| e.id.to_hex()).collect();
    if let Some(path) = seen_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        seen.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| l.len() == 64)
                .map(str::to_string),
        );
    }
    seen.sort();
    seen.dedup();
    let report = history::check(rounds.clone(), &seen);
    println!("{} round(s) published by {}", rounds.len(), board.to_hex());
    for e in &report.history_errors {
        println!("HISTORY ERROR: {e}");
    }
    for (id, status) in &report.orders {
        match status {
            OrderStatus::Attested { round, txid } => {
                println!("{id} attested: round {round}, Mainstay txid {txid}")
            }
            OrderStatus::Pending { round } => println!("{id} in round {round}, not attested yet"),
            OrderStatus::Missing => println!("{id} MISSING from the board's history"),
        }
    }
    if let Some(c) = chain {
        use civkit_mainstay::chain as btc;
        let source = btc::Esplora {
            url: c.esplora.to_string(),
        };
        let mut attested: Vec<(u64, String, String)> = rounds
            .iter()
            .filter_map(|p| {
                p.attestation
                    .as_ref()
                    .map(|a| (p.round.number, a.txid.clone(), a.merkle_root.clone()))
            })
            .collect();
        attested.sort_by_key(|a| std::cmp::Reverse(a.0));
        let mut txids: Vec<String> = Vec::new();
        for (round, txid, root) in &attested {
            btc::check_attestation(
                &source,
                c.base_key,
                c.chain_code,
                txid,
                root,
                c.min_confirmations,
            )
            .await
            .map_err(|e| anyhow!("round {round}: {e}"))?;
            if txids.last() != Some(txid) {
                txids.push(txid.clone());
            }
        }
        btc::check_staychain(&source, &txids, c.staychain_start, 1_000_000)
            .await
            .map_err(|e| anyhow!(e))?;
        println!(
            "{} attestation transaction(s) verified on chain, on the staychain from {}",
            txids.len(),
            c.staychain_start
        );
    }
    if report.is_clean() {
        println!("history verified");
        Ok(())
    } else {
        bail!("the board's history does not hold together")
    }
}
