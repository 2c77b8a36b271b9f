//! `--hostile-secs`: honest clients alone, then the same honest clients
//! while attackers run against the same node, in one run. Prints the honest
//! clients' publish and REQ latencies (p50, p99) and the relay's resident
//! memory in both phases, then checks that every event acknowledged to an
//! honest client is still there.
//!
//! The attackers, all at once:
//! - whole-store and unindexable `COUNT`s, back to back, on 40 connections;
//! - `REQ`s with 1,000 authors and `limit` 500, on 10 connections;
//! - 20 slow readers that subscribe to everything and never read;
//! - a connection flood from 20 loopback addresses (127.0.1.x), held open;
//! - with `--bolt8-peer`, an onion-message flood from a fresh node.
//!
//! A BOLT8 peer that never reads is added by `bench/hostile.sh` (a pyln-proto
//! peer in `stall` mode), since it needs a peer that can stop reading.
//!
//! The attackers run in a child process (`--attack-only`) at a lower CPU
//! priority, and report the rates they reached.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use nostr::{Event, EventId, Filter, Keys, Kind};
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{connect, ok_true, percentile, rss_kib, sign_batch, Args, Ws};

/// What the honest clients measured in one phase.
#[derive(Default)]
struct Phase {
    publish_ms: Vec<f64>,
    req_ms: Vec<f64>,
    acked: Vec<EventId>,
    refused: usize,
    max_rss_kib: u64,
}

impl Phase {
    fn summary(&mut self) -> serde_json::Value {
        self.publish_ms.sort_by(|a, b| a.total_cmp(b));
        self.req_ms.sort_by(|a, b| a.total_cmp(b));
        json!({
            "publish_p50_ms": percentile(&self.publish_ms, 0.5),
            "publish_p99_ms": percentile(&self.publish_ms, 0.99),
            "req_p50_ms": percentile(&self.req_ms, 0.5),
            "req_p99_ms": percentile(&self.req_ms, 0.99),
            "published": self.publish_ms.len(),
            "refused": self.refused,
            "reqs": self.req_ms.len(),
            "max_rss_mib": self.max_rss_kib as f64 / 1024.0,
        })
    }
}

async fn text(ws: &mut Ws) -> Result<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(_))) => continue,
            _ => anyhow::bail!("connection lost or timed out"),
        }
    }
}

/// One honest publisher: one event at a time, 20 per second.
async fn publisher(url: String, events: Vec<Event>, until: Instant) -> Result<Phase> {
    let mut ws = connect(&url).await?;
    let mut p = Phase::default();
    for e in events {
        if Instant::now() >= until {
            break;
        }
        let t = Instant::now();
        ws.send(Message::Text(json!(["EVENT", e]).to_string().into()))
            .await?;
        loop {
            if let Some(ok) = ok_true(&text(&mut ws).await?) {
                if ok {
                    p.publish_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    p.acked.push(e.id);
                } else {
                    p.refused += 1;
                }
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(p)
}

/// One honest reader: `REQ` the latest 50 notes, 5 per second.
async fn reader(url: String, until: Instant) -> Result<Phase> {
    let mut ws = connect(&url).await?;
    let mut p = Phase::default();
    let filter = Filter::new().kind(Kind::TextNote).limit(50);
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let sub = format!("h{i}");
        let t = Instant::now();
        ws.send(Message::Text(
            json!(["REQ", sub, filter]).to_string().into(),
        ))
        .await?;
        loop {
            let m = text(&mut ws).await?;
            let v: serde_json::Value = serde_json::from_str(&m).unwrap_or_default();
            if (v[0] == "EOSE" || v[0] == "CLOSED") && v[1] == sub.as_str() {
                if v[0] == "EOSE" {
                    p.req_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    p.refused += 1;
                }
                break;
            }
        }
        ws.send(Message::Text(json!(["CLOSE", sub]).to_string().into()))
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(p)
}

/// Four publishers and two readers for `secs`, with the relay's RSS sampled.
async fn honest(args: &Args, secs: u64) -> Result<Phase> {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let events = sign_batch((secs as usize + 1) * 25, "honest");
        tasks.push(tokio::spawn(publisher(args.url.clone(), events, until)));
    }
    for _ in 0..2 {
        tasks.push(tokio::spawn(reader(args.url.clone(), until)));
    }
    let pid = args.pid;
    let sampler = tokio::spawn(async move {
        let mut max = 0;
        while Instant::now() < until {
            max = max.max(pid.and_then(rss_kib).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        max
    });
    let mut all = Phase::default();
    for t in tasks {
        let p = t.await??;
        all.publish_ms.extend(p.publish_ms);
        all.req_ms.extend(p.req_ms);
        all.acked.extend(p.acked);
        all.refused += p.refused;
    }
    all.max_rss_kib = sampler.await?;
    Ok(all)
}

/// A websocket connection from a chosen loopback source address.
async fn connect_from(url: &str, addr: SocketAddr, from: IpAddr) -> Result<Ws> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .context("handshake")?;
    Ok(ws)
}

/// How hard the attackers pushed: what each of them got done.
#[derive(Default)]
struct Intensity {
    counts_answered: AtomicU64,
    author_reqs_sent: AtomicU64,
    slow_readers: AtomicU64,
    flood_connections: AtomicU64,
    onion_sent: AtomicU64,
}

impl Intensity {
    fn summary(&self, secs: f64) -> serde_json::Value {
        let per_sec = |a: &AtomicU64| (a.load(Ordering::Relaxed) as f64 / secs).round();
        json!({
            "counts_answered_per_sec": per_sec(&self.counts_answered),
            "author_reqs_sent_per_sec": per_sec(&self.author_reqs_sent),
            "onion_messages_sent_per_sec": per_sec(&self.onion_sent),
            "slow_readers": self.slow_readers.load(Ordering::Relaxed),
            "flood_connections_held": self.flood_connections.load(Ordering::Relaxed),
        })
    }
}

/// Start every attacker; they stop when `stop` turns true.
fn attackers(
    args: &Args,
    stop: watch::Receiver<bool>,
    done: Arc<Intensity>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let url = args.url.clone();
    let addr: SocketAddr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .context("--url must be ws://ip:port for the hostile run")?;
    let mut tasks = Vec::new();
    let running = |stop: &watch::Receiver<bool>| !*stop.borrow();
    let on = |name: &str| args.attackers.split(',').any(|a| a.trim() == name);
    // Whole-store and unindexable COUNTs.
    for i in 0..if on("count") { 40u8 } else { 0 } {
        let (url, stop, done) = (url.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let from = IpAddr::from([127, 0, 2, i]);
            let Ok(mut ws) = connect_from(&url, addr, from).await else {
                return;
            };
            let filters = [
                json!({}),
                json!({"kinds": [1]}),
                json!({"kinds": [1], "#t": ["never"]}),
            ];
            let mut n = 0usize;
            while running(&stop) {
                n += 1;
                let m = json!(["COUNT", format!("c{n}"), filters[n % 3]]).to_string();
                if ws.send(Message::Text(m.into())).await.is_err() {
                    return;
                }
                if tokio::time::timeout(Duration::from_secs(5), ws.next())
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                {
                    return;
                }
                done.counts_answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // REQs with a thousand authors.
    let authors: Arc<Vec<nostr::PublicKey>> =
        Arc::new((0..1000).map(|_| Keys::generate().public_key()).collect());
    for i in 0..if on("authors") { 10u8 } else { 0 } {
        let (url, stop, authors, done) = (url.clone(), stop.clone(), authors.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut ws) = connect_from(&url, addr, IpAddr::from([127, 0, 3, i])).await else {
                return;
            };
            let f = Filter::new().authors(authors.iter().copied()).limit(500);
            // Serialized once: the attacker spends its CPU on the node, not here.
            let m: tokio_tungstenite::tungstenite::Utf8Bytes =
                json!(["REQ", "a", f]).to_string().into();
            while running(&stop) {
                if ws.send(Message::Text(m.clone())).await.is_err() {
                    return;
                }
                done.author_reqs_sent.fetch_add(1, Ordering::Relaxed);
                // Read whatever comes, a little at a time.
                let _ = tokio::time::timeout(Duration::from_millis(20), ws.next()).await;
            }
        }));
    }
    // Slow readers: subscribe to everything, never read.
    for i in 0..if on("slow") { 20u8 } else { 0 } {
        let (url, mut stop, done) = (url.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut ws) = connect_from(&url, addr, IpAddr::from([127, 0, 4, i])).await else {
                return;
            };
            let m = json!(["REQ", "all", {"limit": 500}]).to_string();
            if ws.send(Message::Text(m.into())).await.is_ok() {
                done.slow_readers.fetch_add(1, Ordering::Relaxed);
            }
            let _ = stop.wait_for(|s| *s).await;
            drop(ws);
        }));
    }
    // A connection flood: 100 connections from each of 20 addresses, held.
    for i in 0..if on("flood") { 20u8 } else { 0 } {
        let (url, mut stop, done) = (url.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..110 {
                if !running(&stop) {
                    break;
                }
                if let Ok(ws) = connect_from(&url, addr, IpAddr::from([127, 0, 5, i])).await {
                    held.push(ws);
                    done.flood_connections.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = stop.wait_for(|s| *s).await;
            drop(held);
        }));
    }
    // An onion-message flood from a fresh node (no reply path).
    if let Some(target) = args.bolt8_peer.clone().filter(|_| on("onion")) {
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            use civkit_onion::client::OnionNode;
            use lightning::onion_message::messenger::Destination;
            let Ok((id, peer)) = civkit_bolt8::parse_address(&target) else {
                return;
            };
            let Ok(node) = OnionNode::start(vec![], None).await else {
                return;
            };
            if node.connect(id, peer).await.is_err() {
                return;
            }
            let flood = sign_batch(2_000, "onion-flood");
            let mut i = 0usize;
            while running(&stop) {
                let m = json!(["EVENT", flood[i % flood.len()]]).to_string();
                if node.send(Destination::Node(id), m, None).is_ok() {
                    done.onion_sent.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                if i.is_multiple_of(100) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    Ok(tasks)
}

/// The attackers, in a child process (this binary with `--attack-only`)
/// at a lower CPU priority (`--attacker-nice`): on a machine this small,
/// their own CPU would otherwise be charged to the node, which on the
/// internet they pay for on their own machines. The rates they reached are
/// part of the report.
struct Attack {
    child: tokio::process::Child,
}

impl Attack {
    fn start(args: &Args) -> Result<Self> {
        let mut cmd = tokio::process::Command::new("nice");
        cmd.arg("-n")
            .arg(args.attacker_nice.to_string())
            .arg(std::env::current_exe()?)
            .args([
                "--attack-only",
                "--url",
                &args.url,
                "--attackers",
                &args.attackers,
            ]);
        if let Some(peer) = &args.bolt8_peer {
            cmd.args(["--bolt8-peer", peer]);
        }
        let child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the attackers")?;
        Ok(Attack { child })
    }

    /// Close the attackers' stdin, which stops them, and read what they did.
    async fn stop(mut self) -> Result<serde_json::Value> {
        drop(self.child.stdin.take());
        let out = tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output())
            .await
            .context("the attackers did not stop")??;
        serde_json::from_slice(&out.stdout).context("the attackers' report")
    }
}

/// `--attack-only`: run the attackers until stdin closes, then print what
/// they got done.
pub async fn attack_only(args: &Args) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let (stop_tx, stop_rx) = watch::channel(false);
    let done = Arc::new(Intensity::default());
    let started = Instant::now();
    let tasks = attackers(args, stop_rx, done.clone())?;
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    let _ = stop_tx.send(true);
    let report = done.summary(started.elapsed().as_secs_f64());
    for t in tasks {
        t.abort();
    }
    println!("{report}");
    Ok(())
}

/// Every acknowledged event, asked for by id after the run.
async fn missing(url: &str, acked: &[EventId]) -> Result<usize> {
    let mut ws = connect(url).await?;
    let mut found = std::collections::HashSet::new();
    for (n, chunk) in acked.chunks(500).enumerate() {
        let sub = format!("check{n}");
        let f = Filter::new().ids(chunk.iter().copied()).limit(500);
        ws.send(Message::Text(json!(["REQ", sub, f]).to_string().into()))
            .await?;
        loop {
            let v: serde_json::Value = serde_json::from_str(&text(&mut ws).await?)?;
            if v[0] == "EVENT" {
                if let Some(id) = v[2]["id"].as_str().and_then(|h| EventId::from_hex(h).ok()) {
                    found.insert(id);
                }
            } else if (v[0] == "EOSE" || v[0] == "CLOSED") && v[1] == sub.as_str() {
                break;
            }
        }
    }
    Ok(acked.iter().filter(|id| !found.contains(*id)).count())
}

pub async fn run(args: &Args, secs: u64) -> Result<()> {
    // A store to query, so COUNTs and REQs have work to do.
    let fill = sign_batch(args.store.min(20_000), "hostile-fill");
    super::publish(&args.url, super::split(fill, 8), 16).await?;

    let mut calm = honest(args, secs).await?;
    let attack = Attack::start(args)?;
    tokio::time::sleep(Duration::from_secs(2)).await; // let the attack build up
    let mut attacked = honest(args, secs).await?;
    let intensity = attack.stop().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let alive = connect(&args.url).await.is_ok();
    let mut acked = calm.acked.clone();
    acked.extend(attacked.acked.iter().copied());
    let lost = missing(&args.url, &acked).await?;
    let (c, a) = (calm.summary(), attacked.summary());
    let ratio = |k: &str| a[k].as_f64().unwrap_or(f64::NAN) / c[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "{}",
        json!({
            "name": args.name,
            "secs": secs,
            "calm": c,
            "attack": a,
            "publish_p99_ratio": ratio("publish_p99_ms"),
            "req_p99_ratio": ratio("req_p99_ms"),
            "attackers": intensity,
            "node_alive": alive,
            "acknowledged": acked.len(),
            "acknowledged_missing": lost,
        })
    );
    eprintln!(
        "{:<10} honest publish p50/p99 {:.1}/{:.1} ms calm, {:.1}/{:.1} ms under attack ({:.2}x p99) | REQ p50/p99 {:.1}/{:.1} ms calm, {:.1}/{:.1} ms under attack ({:.2}x p99) | RSS max {:.0} MiB calm, {:.0} MiB under attack | alive {alive} | {} acknowledged, {lost} missing",
        args.name,
        c["publish_p50_ms"].as_f64().unwrap_or(f64::NAN),
        c["publish_p99_ms"].as_f64().unwrap_or(f64::NAN),
        a["publish_p50_ms"].as_f64().unwrap_or(f64::NAN),
        a["publish_p99_ms"].as_f64().unwrap_or(f64::NAN),
        ratio("publish_p99_ms"),
        c["req_p50_ms"].as_f64().unwrap_or(f64::NAN),
        c["req_p99_ms"].as_f64().unwrap_or(f64::NAN),
        a["req_p50_ms"].as_f64().unwrap_or(f64::NAN),
        a["req_p99_ms"].as_f64().unwrap_or(f64::NAN),
        ratio("req_p99_ms"),
        c["max_rss_mib"].as_f64().unwrap_or(0.0),
        a["max_rss_mib"].as_f64().unwrap_or(0.0),
        acked.len(),
    );
    Ok(())
}
