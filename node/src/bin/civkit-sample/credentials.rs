//! Credentials: buying them from a board over NIP-44 requests, holding
//! them in `<home>/credentials.json` (mode 0600), spending them on orders.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nostr::{Event, Filter, Keys, Kind};
use nostr_sdk::RelayPoolNotification;
use serde_json::Value;

use crate::boards::{nip11, Boards};
use crate::home::{home, load_keys};
use crate::{Cli, ORDER_KIND};

/// (board key, credentials per order) when the first board wants credentials on orders.
pub async fn credentials_needed(cli: &Cli) -> Result<Option<(String, usize)>> {
    let Ok(doc) = nip11(cli) else { return Ok(None) };
    let c = &doc["civkit_credentials"];
    let wants = c["kinds"]
        .as_array()
        .is_some_and(|k| k.iter().any(|k| k.as_u64() == Some(u64::from(ORDER_KIND))));
    if !wants {
        return Ok(None);
    }
    let board = doc["pubkey"]
        .as_str()
        .ok_or_else(|| anyhow!("the board has no pubkey"))?
        .to_string();
    Ok(Some((board, c["per_event"].as_u64().unwrap_or(1) as usize)))
}

/// Credentials held, by board key; stored in `<home>/credentials.json`, mode 0600.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Wallet {
    boards: BTreeMap<String, Vec<civkit_credentials::scheme::Credential>>,
}

impl Wallet {
    fn path(cli: &Cli) -> Result<PathBuf> {
        Ok(home(cli)?.join("credentials.json"))
    }
    pub fn load(cli: &Cli) -> Result<Wallet> {
        match std::fs::read_to_string(Self::path(cli)?) {
            Ok(t) => Ok(serde_json::from_str(&t).context("credentials.json is damaged")?),
            Err(_) => Ok(Wallet::default()),
        }
    }
    pub fn save(&self, cli: &Cli) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let path = Self::path(cli)?;
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        civkit_framework::keyfile::write_secret(&path, &serde_json::to_string_pretty(self)?)?;
        Ok(())
    }
    pub fn take(
        &mut self,
        board: &str,
        n: usize,
    ) -> Result<Vec<civkit_credentials::scheme::Credential>> {
        let held = self.boards.entry(board.to_string()).or_default();
        if held.len() < n {
            bail!("this board wants {n} credential(s) per order and you hold {}: run `civkit-sample credentials buy N`", held.len());
        }
        Ok(held.drain(..n).collect())
    }
}

pub fn list(cli: &Cli) -> Result<()> {
    let w = Wallet::load(cli)?;
    if w.boards.values().all(Vec::is_empty) {
        println!("no credentials");
    }
    for (board, creds) in &w.boards {
        let mut epochs: BTreeMap<u64, usize> = BTreeMap::new();
        for c in creds {
            *epochs.entry(c.epoch).or_default() += 1;
        }
        let by_epoch: Vec<String> = epochs
            .iter()
            .map(|(e, n)| format!("{n} of epoch {e}"))
            .collect();
        println!(
            "board {board}: {} credential(s) ({})",
            creds.len(),
            by_epoch.join(", ")
        );
    }
    Ok(())
}

/// Send a request to the board and wait for its encrypted answer, which
/// arrives on the subscription the caller opened before (`notes`). Only an
/// answer signed by the board's key counts: anyone can publish an event of
/// the answer kinds tagged to us (with an invoice of their own).
async fn ask(
    boards: &Boards,
    url: &str,
    notes: &mut tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    keys: &Keys,
    board: &nostr::PublicKey,
    request: &Event,
) -> Result<Value> {
    boards
        .publish(url, request)
        .await
        .map_err(|why| anyhow!("the board did not take the request: {why}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let note = tokio::time::timeout_at(deadline, notes.recv())
            .await
            .map_err(|_| anyhow!("the board did not answer"))?;
        let event: Box<Event> = match note {
            Ok(RelayPoolNotification::Event { event, .. }) => event,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                bail!("the connection to the board closed")
            }
        };
        if event.pubkey == *board && event.tags.event_ids().any(|x| *x == request.id) {
            return Ok(civkit_credentials::wallet::open(keys, &event)?);
        }
    }
}

pub async fn buy(cli: &Cli, count: usize, wait: u64) -> Result<()> {
    use civkit_credentials::{MINT, QUOTE};
    let keys = load_keys(cli)?;
    let doc = nip11(cli)?;
    let announced = doc["civkit_credentials"]["pubkey"]
        .as_str()
        .ok_or_else(|| {
            anyhow!("this board sells no credentials (no civkit_credentials in NIP-11)")
        })?
        .to_string();
    let board_hex = doc["pubkey"]
        .as_str()
        .ok_or_else(|| anyhow!("the board has no pubkey"))?
        .to_string();
    let board = nostr::PublicKey::from_hex(&board_hex)?;
    let url = cli.boards.first().ok_or_else(|| anyhow!("give --board"))?;
    let boards = Boards::connect(std::slice::from_ref(url), Some(&keys)).await?;
    let mut notes = boards.client().notifications();
    let f = Filter::new()
        .kinds([Kind::from(QUOTE), Kind::from(MINT)])
        .author(board)
        .pubkey(keys.public_key());
    boards.client().subscribe_to([url], f, None).await?;
    let bought = buy_on(
        cli, &boards, url, &mut notes, &keys, &board, &board_hex, &announced, count, wait,
    )
    .await;
    boards.close().await;
    bought
}

/// The quote, payment and mint exchange of `credentials buy`.
#[allow(clippy::too_many_arguments)]
async fn buy_on(
    cli: &Cli,
    boards: &Boards,
    url: &str,
    notes: &mut tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    keys: &Keys,
    board: &nostr::PublicKey,
    board_hex: &str,
    announced: &str,
    count: usize,
    wait: u64,
) -> Result<()> {
    use civkit_credentials::wallet;
    let req = wallet::quote_request(keys, board, count)?;
    let quote = ask(boards, url, notes, keys, board, &req).await?;
    if let Some(e) = quote["error"].as_str() {
        bail!("the board refused the quote: {e}");
    }
    println!(
        "pay {} msat for {count} credential(s):",
        quote["amount_msat"]
    );
    println!("{}", quote["invoice"].as_str().unwrap_or(""));
    let qid = quote["quote"].as_str().unwrap_or_default().to_string();
    let pending = wallet::Pending::new(count)?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let req = wallet::mint_request(keys, board, &qid, &pending)?;
        let answer = ask(boards, url, notes, keys, board, &req).await?;
        match answer["error"].as_str() {
            Some(e) if e.starts_with("payment-required:") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Some(e) => bail!("{e}"),
            None => {
                let creds = wallet::finish(&pending, &answer, announced)?;
                let mut w = Wallet::load(cli)?;
                w.boards
                    .entry(board_hex.to_string())
                    .or_default()
                    .extend(creds);
                w.save(cli)?;
                println!(
                    "received {count} credential(s) of epoch {}; DLEQ proofs checked",
                    answer["epoch"]
                );
                return Ok(());
            }
        }
    }
}
