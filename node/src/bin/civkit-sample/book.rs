//! `orders list` and `orders watch`: orders merged across boards, newest
//! version per (maker, order id), with the boards that carry it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use nostr::{Event, Filter, Keys, Kind, Timestamp};
use nostr_sdk::RelayPoolNotification;

use crate::boards::Boards;
use crate::home::load_keys;
use crate::{Cli, OrderFilter, ORDER_KIND};

fn order_filters(f: &OrderFilter) -> Filter {
    use nostr::{Alphabet, SingleLetterTag};
    let mut filter = Filter::new().kind(Kind::from(ORDER_KIND));
    if let Some(s) = &f.side {
        filter = filter.custom_tag(SingleLetterTag::lowercase(Alphabet::K), s.clone());
    }
    if let Some(c) = &f.currency {
        filter = filter.custom_tag(SingleLetterTag::lowercase(Alphabet::F), c.to_uppercase());
    }
    if let Some(s) = &f.status {
        filter = filter.custom_tag(SingleLetterTag::lowercase(Alphabet::S), s.clone());
    }
    filter
}

fn tag_values(e: &Event, name: &str) -> Vec<String> {
    e.tags
        .iter()
        .find(|t| t.as_slice().first().map(String::as_str) == Some(name))
        .map(|t| t.as_slice()[1..].to_vec())
        .unwrap_or_default()
}

pub fn first(e: &Event, name: &str) -> String {
    tag_values(e, name).into_iter().next().unwrap_or_default()
}

fn matches_pm(e: &Event, f: &OrderFilter) -> bool {
    match &f.payment_method {
        None => true,
        Some(want) => tag_values(e, "pm")
            .iter()
            .any(|m| m.eq_ignore_ascii_case(want)),
    }
}

/// Orders merged across boards: newest version per (maker, order id), with the boards that have it.
#[derive(Default)]
pub struct Book {
    pub orders: BTreeMap<(String, String), (Event, Vec<String>)>,
}

impl Book {
    /// Add an event seen on `board`; `true` if it is new or newer.
    fn add(&mut self, e: Event, board: &str) -> bool {
        let key = (e.pubkey.to_hex(), first(&e, "d"));
        match self.orders.get_mut(&key) {
            Some((old, boards)) if old.id == e.id => {
                if !boards.iter().any(|b| b == board) {
                    boards.push(board.to_string());
                }
                false
            }
            Some((old, _)) if old.created_at >= e.created_at => false,
            _ => {
                self.orders.insert(key, (e, vec![board.to_string()]));
                true
            }
        }
    }
}

fn header() -> String {
    format!(
        "{:<4} {:>16} {:<4} {:>10} {:>7} {:<24} {:<11} {:<17} {:<8} {:<4} {:<16} {}",
        "SIDE",
        "FIAT",
        "CUR",
        "SATS",
        "PREM%",
        "PAYMENT",
        "STATUS",
        "EXPIRES (UTC)",
        "MAKER",
        "TIER",
        "ID",
        "BOARDS"
    )
}

/// An order's row; `tier` is its stake key's tier (`-`: no stake tag).
fn row(e: &Event, boards: usize, tier: Option<u8>) -> String {
    let fa = tag_values(e, "fa").join("-");
    let sats = match first(e, "amt").as_str() {
        "0" => "market".to_string(),
        s => s.to_string(),
    };
    let expires = first(e, "expires_at")
        .parse::<u64>()
        .map(|t| Timestamp::from_secs(t).to_human_datetime())
        .unwrap_or_default();
    let expires: String = expires.chars().take(16).collect();
    let mut pm = tag_values(e, "pm").join(", ");
    if pm.chars().count() > 24 {
        pm = pm.chars().take(21).collect::<String>() + "...";
    }
    format!(
        "{:<4} {:>16} {:<4} {:>10} {:>7} {:<24} {:<11} {:<17} {:<8} {:<4} {:<16} {}",
        first(e, "k"),
        fa,
        first(e, "f"),
        sats,
        first(e, "premium"),
        pm,
        first(e, "s"),
        expires,
        &e.pubkey.to_hex()[..8],
        tier.map_or("-".to_string(), |t| t.to_string()),
        first(e, "d"),
        boards
    )
}

pub async fn collect(cli: &Cli, filter: &Filter, keys: Option<&Keys>) -> Result<Book> {
    let connected = Boards::connect(&cli.boards, keys).await?;
    let boards = &connected;
    let results = futures_util::future::join_all(
        cli.boards
            .iter()
            .map(|url| async move { (url, boards.fetch(url, filter.clone()).await) }),
    )
    .await;
    connected.close().await;
    let mut book = Book::default();
    for (url, r) in results {
        match r {
            Ok(events) => {
                for e in events {
                    book.add(e, url);
                }
            }
            Err(e) => eprintln!("{url}: {e:#}"),
        }
    }
    Ok(book)
}

pub async fn list(cli: &Cli, f: &OrderFilter) -> Result<()> {
    let keys = load_keys(cli).ok();
    let book = collect(cli, &order_filters(f), keys.as_ref()).await?;
    let rows: Vec<_> = book
        .orders
        .values()
        .filter(|(e, _)| matches_pm(e, f))
        .collect();
    // Tiers of the stake keys, by the rank service the first board trusts.
    let stakes: Vec<_> = rows
        .iter()
        .filter_map(|(e, _)| crate::stake::stake_of(e))
        .collect();
    let tiers: BTreeMap<_, u8> = match crate::stake::board_rank_key(cli).ok().flatten() {
        Some(rank) if !stakes.is_empty() => crate::stake::tiers(cli, &rank, &stakes)
            .await?
            .into_iter()
            .map(|a| (a.stake_key, a.tier))
            .collect(),
        _ => BTreeMap::new(),
    };
    let tier_of =
        |e: &Event| crate::stake::stake_of(e).map(|k| tiers.get(&k).copied().unwrap_or(0));
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|(e, _)| f.min_tier.is_none_or(|min| tier_of(e).unwrap_or(0) >= min))
        .collect();
    println!("{}", header());
    for (e, boards) in &rows {
        println!("{}", row(e, boards.len(), tier_of(e)));
    }
    println!("{} order(s) from {} board(s)", rows.len(), cli.boards.len());
    Ok(())
}

pub async fn watch(cli: &Cli, f: &OrderFilter, for_secs: Option<u64>) -> Result<()> {
    let keys = load_keys(cli).ok();
    let filter = order_filters(f);
    let boards = Boards::connect(&cli.boards, keys.as_ref()).await?;
    let mut notes = boards.client().notifications();
    let sub = boards.client().subscribe(filter, None).await?.val;
    let rank = crate::stake::board_rank_key(cli).ok().flatten();
    println!("{}", header());
    let mut book = Book::default();
    let deadline = for_secs.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, notes.recv()).await {
                Ok(v) => v,
                Err(_) => break,
            },
            None => tokio::select! {
                v = notes.recv() => v,
                _ = tokio::signal::ctrl_c() => break,
            },
        };
        match next {
            Ok(RelayPoolNotification::Event {
                relay_url,
                subscription_id,
                event,
            }) if subscription_id == sub => {
                if matches_pm(&event, f) && book.add((*event).clone(), relay_url.as_str()) {
                    let tier = match (crate::stake::stake_of(&event), &rank) {
                        (Some(k), Some(rank)) => Some(
                            crate::stake::tiers(cli, rank, &[k])
                                .await
                                .ok()
                                .and_then(|a| a.first().map(|a| a.tier))
                                .unwrap_or(0),
                        ),
                        (Some(_), None) => Some(0),
                        (None, _) => None,
                    };
                    if f.min_tier.is_none_or(|min| tier.unwrap_or(0) >= min) {
                        println!("{}", row(&event, 1, tier));
                    }
                }
            }
            Ok(RelayPoolNotification::Shutdown) => break,
            // Lagging behind the notification buffer only loses rows already printed or
            // still to come from the boards' own order; carry on.
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    boards.close().await;
    Ok(())
}
