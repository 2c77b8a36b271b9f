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
    use civkit_mainstay::history::{self, Gone, OrderStatus, PublishedRound, Seen, ROUND_KIND};
    let url = cli.boards.first().ok_or_else(|| anyhow!("give --board"))?;
    let doc = nip11_of(url)?;
    let board = nostr::PublicKey::from_hex(doc["pubkey"].as_str().unwrap_or_default())
        .map_err(|_| anyhow!("{url} has no pubkey in NIP-11"))?;
    let boards = Boards::connect(std::slice::from_ref(url), None).await?;
    let fetched = async {
        let rounds = boards
            .fetch(
                url,
                Filter::new().kind(Kind::from(ROUND_KIND)).author(board),
            )
            .await?;
        let orders = boards
            .fetch(url, Filter::new().kind(Kind::from(ORDER_KIND)))
            .await?;
        let mut seen: Vec<Seen> = orders.iter().map(|e| Seen::served(e.id.to_hex())).collect();
        if let Some(path) = seen_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let entries: Vec<_> = text.lines().filter_map(parse_seen).collect();
            let bar = civkit_node::progress::bar(entries.len() as u64, "orders");
            bar.set_message("looking up the orders you saw");
            for entry in entries {
                bar.inc(1);
                let id = entry.id();
                if seen.iter().any(|s| s.id == id) {
                    continue;
                }
                seen.push(look_up(&boards, url, entry).await?);
            }
            bar.finish_and_clear();
        }
        Ok::<_, anyhow::Error>((rounds, seen))
    }
    .await;
    boards.close().await;
    let (rounds, mut seen) = fetched?;
    let rounds: Vec<PublishedRound> = rounds
        .iter()
        .filter_map(|e| serde_json::from_str(&e.content).ok())
        .collect();
    seen.sort_by(|a, b| a.id.cmp(&b.id));
    let mut report = history::check(rounds.clone(), &seen);
    if let Some(e) = slot_check(&doc["civkit_notary"], &rounds).await {
        report.history_errors.push(e);
    }
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
            OrderStatus::Withheld { round } => println!(
                "{id} WITHHELD: in round {round}, no longer served, and nothing notarized explains it"
            ),
            OrderStatus::Gone { round, why } => match why {
                Gone::DeletedByAuthor { deletion } => {
                    println!("{id} in round {round}, deleted by its author ({deletion})")
                }
                Gone::Replaced { by } => {
                    println!("{id} in round {round}, replaced by its newer version {by}")
                }
                Gone::Expired => println!("{id} in round {round}, expired"),
            },
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
        let bar = civkit_node::progress::bar(attested.len() as u64, "attestations");
        bar.set_message("checking attestations on chain");
        for (round, txid, root) in &attested {
            bar.inc(1);
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
        bar.finish_and_clear();
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

/// A line of the `--seen` file: a hex event id, or the event's JSON (which
/// lets an expiry or a replacement be recognized).
enum SeenEntry {
    Id(String),
    Event(Box<nostr::Event>),
}

impl SeenEntry {
    fn id(&self) -> String {
        match self {
            SeenEntry::Id(id) => id.clone(),
            SeenEntry::Event(e) => e.id.to_hex(),
        }
    }
}

fn parse_seen(line: &str) -> Option<SeenEntry> {
    use nostr::JsonUtil;
    let line = line.trim();
    if line.len() == 64 && line.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(SeenEntry::Id(line.to_ascii_lowercase()));
    }
    nostr::Event::from_json(line)
        .ok()
        .filter(|e| e.verify().is_ok())
        .map(|e| SeenEntry::Event(Box::new(e)))
}

/// Whether the board still serves a seen order, and if not, what it serves
/// that would explain it: a deletion by the order's author, a newer version
/// at its address, or its expiry.
async fn look_up(
    boards: &Boards,
    url: &str,
    entry: SeenEntry,
) -> Result<civkit_mainstay::history::Seen> {
    use civkit_mainstay::history::{Gone, Seen};
    let id = entry.id();
    let event_id = nostr::EventId::from_hex(&id).map_err(|e| anyhow!("{id}: {e}"))?;
    if !boards
        .fetch(url, Filter::new().id(event_id))
        .await?
        .is_empty()
    {
        return Ok(Seen::served(id));
    }
    let event = match &entry {
        SeenEntry::Event(e) => Some(e.as_ref()),
        SeenEntry::Id(_) => None,
    };
    let mut deletions = Filter::new().kind(Kind::EventDeletion).event(event_id);
    if let Some(e) = event {
        deletions = deletions.author(e.pubkey);
    }
    let mut explained_by =
        boards
            .fetch(url, deletions)
            .await?
            .first()
            .map(|d| Gone::DeletedByAuthor {
                deletion: d.id.to_hex(),
            });
    if let (None, Some(e)) = (&explained_by, event) {
        let now = nostr::Timestamp::now();
        if civkit_framework::kinds::is_expired(e, now) {
            explained_by = Some(Gone::Expired);
        } else if let Some(address) = civkit_framework::kinds::address_of(e) {
            let mut same = Filter::new().author(e.pubkey).kind(e.kind);
            if !address.d.is_empty() {
                same = same.identifier(address.d.clone());
            }
            let newer = boards.fetch(url, same).await?;
            explained_by = newer
                .iter()
                .find(|n| n.created_at >= e.created_at && n.id != e.id)
                .map(|n| Gone::Replaced { by: n.id.to_hex() });
            if explained_by.is_none() {
                let a = format!("{}:{}:{}", e.kind.as_u16(), e.pubkey.to_hex(), address.d);
                let by_address = Filter::new()
                    .kind(Kind::EventDeletion)
                    .author(e.pubkey)
                    .custom_tag(nostr::SingleLetterTag::lowercase(nostr::Alphabet::A), a);
                explained_by = boards
                    .fetch(url, by_address)
                    .await?
                    .iter()
                    .find(|d| d.created_at >= e.created_at)
                    .map(|d| Gone::DeletedByAuthor {
                        deletion: d.id.to_hex(),
                    });
            }
        }
    }
    Ok(Seen {
        id,
        served: false,
        explained_by,
    })
}

/// What Mainstay attests for the board's slot must be a round the board
/// publishes: a board that deletes its latest rounds (or publishes none)
/// shows here. `None` when it holds, or when the board names no slot.
async fn slot_check(
    notary: &serde_json::Value,
    rounds: &[civkit_mainstay::history::PublishedRound],
) -> Option<String> {
    let (Some(url), Some(position)) = (notary["mainstay"].as_str(), notary["position"].as_u64())
    else {
        return None;
    };
    let api = civkit_mainstay::client::Mainstay {
        url: url.trim_end_matches('/').to_string(),
        position,
        token: String::new(),
    };
    match api.latest_proof().await {
        Ok(Some(p)) if civkit_mainstay::proof::verify(&p).unwrap_or(false) => {
            if rounds.iter().any(|r| r.round.commitment == p.commitment) {
                println!("Mainstay's latest attestation of slot {position} is a published round");
                None
            } else {
                Some(format!(
                    "Mainstay's latest attestation of slot {position} (txid {}) commits to {}, which is in no round the board publishes: rounds are withheld",
                    p.txid, p.commitment
                ))
            }
        }
        Ok(Some(p)) => Some(format!(
            "Mainstay's latest proof for slot {position} (txid {}) does not verify",
            p.txid
        )),
        Ok(None) => None,
        Err(e) => {
            println!("NOT CHECKED: could not ask Mainstay for slot {position}: {e}");
            None
        }
    }
}
