//! The boards a command talks to: one nostr-sdk client over every
//! `--board`. It answers NIP-42 when a board asks (with the client's key,
//! when it has one), verifies every event it receives, and reports per board.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nostr::{Event, Filter, Keys, Kind};
use nostr_sdk::{Client, ClientOptions};
use serde_json::Value;

use crate::{Cli, POLICY_KIND};

/// How long a board has to answer one request.
const ANSWER: Duration = Duration::from_secs(15);

/// Why a board did not accept an event.
#[derive(Debug)]
pub enum Refused {
    /// The board answered `OK false` with this message (NIP-01 prefix included).
    Board(String),
    /// No answer: not connected, timed out, the connection failed.
    Failed(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Board(m) => write!(f, "rejected: {m}"),
            Refused::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

/// A nostr-sdk client connected to a set of boards.
pub struct Boards {
    client: Client,
}

impl Boards {
    /// Connect to every URL; with `keys`, authenticate (NIP-42) when a board asks.
    pub async fn connect(urls: &[String], keys: Option<&Keys>) -> Result<Boards> {
        let mut opts = ClientOptions::new().automatic_authentication(keys.is_some());
        if let Some(proxy) = crate::tor::proxy() {
            opts = opts.connection(
                nostr_sdk::client::Connection::new()
                    .proxy(proxy)
                    .target(nostr_sdk::client::ConnectionTarget::All),
            );
        }
        let client = Client::builder()
            .signer(keys.cloned().unwrap_or_else(Keys::generate))
            .opts(opts)
            .build();
        for url in urls {
            client
                .add_relay(url)
                .await
                .with_context(|| format!("board URL {url}"))?;
        }
        // One attempt per board: a board that cannot be reached is reported
        // per board by what follows, not retried in the background.
        client.try_connect(Duration::from_secs(10)).await;
        Ok(Boards { client })
    }

    /// The nostr-sdk client (subscriptions, notifications).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stored events of one board matching `filter`, until its `EOSE`.
    pub async fn fetch(&self, url: &str, filter: Filter) -> Result<Vec<Event>> {
        let events = self
            .client
            .fetch_events_from([url], filter, ANSWER)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        Ok(events.into_iter().collect())
    }

    /// Publish to one board and wait for its `OK`.
    pub async fn publish(&self, url: &str, event: &Event) -> Result<(), Refused> {
        let relay = self
            .client
            .relay(url)
            .await
            .map_err(|e| Refused::Failed(e.to_string()))?;
        match relay.send_event(event).await {
            Ok(_) => Ok(()),
            Err(nostr_sdk::pool::relay::Error::RelayMessage(m)) => Err(Refused::Board(m)),
            Err(e) => Err(Refused::Failed(e.to_string())),
        }
    }

    /// Disconnect from every board.
    pub async fn close(self) {
        self.client.shutdown().await;
    }
}

/// The newest policy event the board at `url` published under its key `board`.
pub async fn policy_event(url: &str, board: nostr::PublicKey) -> Result<Option<Event>> {
    let boards = Boards::connect(&[url.to_string()], None).await?;
    let f = Filter::new()
        .kind(Kind::from(POLICY_KIND))
        .author(board)
        .limit(1);
    let events = boards.fetch(url, f).await;
    boards.close().await;
    Ok(events?.into_iter().max_by_key(|e| e.created_at))
}

/// Publish to every board concurrently; print per-board result and time.
pub async fn publish_everywhere(cli: &Cli, keys: &Keys, event: &Event) -> Result<()> {
    let boards = Boards::connect(&cli.boards, Some(keys)).await?;
    let results = futures_util::future::join_all(cli.boards.iter().map(|url| {
        let boards = &boards;
        async move {
            let t = Instant::now();
            let r = boards.publish(url, event).await;
            (url, r, t.elapsed())
        }
    }))
    .await;
    boards.close().await;
    let mut accepted = 0;
    for (url, r, took) in results {
        let ms = took.as_secs_f64() * 1000.0;
        match r {
            Ok(()) => {
                accepted += 1;
                println!("{url:<28} accepted in {ms:.1} ms");
            }
            Err(why) => println!("{url:<28} {why} ({ms:.1} ms)"),
        }
    }
    if accepted == 0 {
        bail!("no board accepted the event");
    }
    Ok(())
}

/// `board info`: each board's NIP-11 document and its policy event.
pub async fn info(cli: &Cli) -> Result<()> {
    for url in &cli.boards {
        println!("== {url}");
        let doc = match nip11_of(url) {
            Ok(d) => d,
            Err(e) => {
                println!("NIP-11 unavailable: {e:#}");
                continue;
            }
        };
        println!("name            {}", doc["name"].as_str().unwrap_or("-"));
        println!(
            "description     {}",
            doc["description"].as_str().unwrap_or("-")
        );
        println!("board key       {}", doc["pubkey"].as_str().unwrap_or("-"));
        println!("supported NIPs  {}", doc["supported_nips"]);
        println!(
            "software        {} {}",
            doc["software"].as_str().unwrap_or("-"),
            doc["version"].as_str().unwrap_or("")
        );
        println!("limitation      {}", doc["limitation"]);
        if doc.get("civkit_board").is_some() {
            println!("policy (NIP-11) {}", doc["civkit_board"]);
        }
        let Some(pk) = doc["pubkey"]
            .as_str()
            .and_then(|p| nostr::PublicKey::from_hex(p).ok())
        else {
            continue;
        };
        match policy_event(url, pk).await {
            Ok(Some(e)) => {
                println!(
                    "policy event    {} (kind {POLICY_KIND}, signed by the board key)",
                    e.id
                );
                let content: Value = serde_json::from_str(&e.content).unwrap_or_default();
                println!("policy          {content}");
                let reach: Vec<String> = e
                    .tags
                    .iter()
                    .filter(|t| t.as_slice().first().map(String::as_str) == Some("r"))
                    .filter_map(|t| t.as_slice().get(1).cloned())
                    .collect();
                println!("reach it at     {}", reach.join(", "));
            }
            Ok(None) => println!("policy event    none published"),
            Err(e) => println!("policy event    unavailable: {e:#}"),
        }
    }
    Ok(())
}

/// The board's NIP-11 document (first --board).
pub fn nip11(cli: &Cli) -> Result<Value> {
    nip11_of(cli.boards.first().ok_or_else(|| anyhow!("give --board"))?)
}

/// The NIP-11 document of the board at websocket URL `url`.
pub fn nip11_of(url: &str) -> Result<Value> {
    let http = url
        .replacen("ws://", "http://", 1)
        .replacen("wss://", "https://", 1);
    let mut agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60));
    if let Some(p) = crate::tor::proxy() {
        agent = agent.proxy(ureq::Proxy::new(format!("socks5://{p}"))?);
    }
    let agent = agent.build();
    Ok(agent
        .get(&http)
        .set("Accept", "application/nostr+json")
        .call()?
        .into_json()?)
}
