//! civkit-bench: drive many websocket clients against any Nostr relay URL and
//! print ingest rate, REQ latency, relay CPU per event and memory per idle
//! connection. Works against civkitd and any other relay (nostr-rs-relay, ...).
//!
//! Give `--pid` of the relay process to read its CPU time and resident memory
//! from /proc.

mod hostile;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use civkit_framework::wire::RelayMessage;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use nostr::{Event, EventBuilder, Filter, Keys, Kind};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Parser, Clone)]
#[command(version, about = "Load generator for Nostr relays")]
struct Args {
    /// Relay websocket URL.
    #[arg(long)]
    url: String,
    /// PID of the relay process (for CPU time and memory from /proc).
    #[arg(long)]
    pid: Option<u32>,
    /// Name printed in the result line.
    #[arg(long, default_value = "relay")]
    name: String,
    /// Also count the CPU time of every process of this name (a database
    /// server such as `postgres`, with the children it reaped) during
    /// ingest, printed as `db_cpu_us_per_event`.
    #[arg(long)]
    db_process: Option<String>,
    /// Concurrent publishing clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Events each client keeps in flight.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Events in the measured ingest phase.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Total events in the store before REQ latency is measured.
    #[arg(long, default_value_t = 100_000)]
    store: usize,
    /// REQ round trips to time.
    #[arg(long, default_value_t = 300)]
    req_samples: usize,
    /// Idle connections for the memory measure.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Instead of the websocket run: benchmark the BOLT8 transport at
    /// `<node id>@host:port` (handshakes per second, then events per second
    /// over one connection); `--url` then names the same board's websocket for
    /// a one-connection comparison in the same run.
    #[arg(long)]
    bolt8: Option<String>,
    /// Instead of the websocket run: send events as onion messages to the
    /// board at `<node id>@host:port` (its onion budget must be off).
    #[arg(long)]
    onion: Option<String>,
    /// Instead of a relay run: time credential issuance and redemption
    /// in-process (N credentials; redemption includes the sled spent-set write).
    #[arg(long)]
    credentials: Option<usize>,
    /// Handshakes to time in the BOLT8 run.
    #[arg(long, default_value_t = 200)]
    handshakes: usize,
    /// Instead of the full run: open `--fanout-conns` connections holding
    /// this many subscriptions in all (almost none matching), then measure
    /// ingest (events per second, relay CPU per event) while they are open.
    #[arg(long)]
    fanout_subs: Option<usize>,
    /// Connections that hold the subscriptions of `--fanout-subs`.
    #[arg(long, default_value_t = 1000)]
    fanout_conns: usize,
    /// Instead of the full run: honest clients alone, then the same clients
    /// while attackers run (whole-store COUNTs, REQs with a thousand
    /// authors, slow readers, a connection flood, and with `--bolt8-peer`
    /// an onion flood), this many seconds each; prints honest latencies and
    /// the relay's memory for both, then checks every acknowledged event.
    #[arg(long)]
    hostile_secs: Option<u64>,
    /// The board's `<node id>@host:port`, for the onion flood of `--hostile-secs`.
    #[arg(long)]
    bolt8_peer: Option<String>,
    /// Which attackers `--hostile-secs` runs (comma-separated): count,
    /// authors, slow, flood, onion.
    #[arg(long, default_value = "count,authors,slow,flood,onion")]
    attackers: String,
    /// The `nice` level of the attackers' process in `--hostile-secs`.
    #[arg(long, default_value_t = 10)]
    attacker_nice: i32,
    /// Run only the attackers of `--hostile-secs` until stdin closes, then
    /// print how hard they pushed (used by `--hostile-secs` itself).
    #[arg(long, hide = true)]
    attack_only: bool,
}

fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of a process, in microseconds.
fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1_000_000 / clk_tck())
}

/// utime + stime, with those of reaped children, of every process named
/// `name`, in microseconds.
fn cpu_micros_named(name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ticks = 0u64;
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        ticks += (11..15)
            .filter_map(|i| f.get(i)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    ticks * 1_000_000 / clk_tck()
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn connect(url: &str) -> Result<Ws> {
    // Nagle off: back-to-back small frames (CLOSE then REQ) must not wait for
    // a delayed ACK, or every relay measures ~40 ms per REQ.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .context("connect")?;
    Ok(ws)
}

fn sign_batch(n: usize, tag: &str) -> Vec<Event> {
    let keys = Keys::generate();
    (0..n)
        .map(|i| {
            EventBuilder::new(
                Kind::TextNote,
                format!("civkit-bench {tag} event {i} {}", "x".repeat(64)),
            )
            .sign_with_keys(&keys)
            .expect("signing")
        })
        .collect()
}

/// Authors of the main run's events.
const AUTHORS: usize = 1_000;
/// Distinct `t` tag values of the main run's events.
const TAGS: usize = 50;

/// Events `range` of the main run: event `i` is a text note by author
/// `i % AUTHORS` tagged `t` = `tag<(i / AUTHORS) % TAGS>`, so every author
/// has events under every tag.
fn sign_market(range: std::ops::Range<usize>, authors: &[Keys]) -> Vec<Event> {
    range
        .map(|i| {
            EventBuilder::new(
                Kind::TextNote,
                format!("civkit-bench event {i} {}", "x".repeat(64)),
            )
            .tag(nostr::Tag::hashtag(market_tag(i / AUTHORS)))
            .sign_with_keys(&authors[i % authors.len()])
            .expect("signing")
        })
        .collect()
}

fn market_tag(n: usize) -> String {
    format!("tag{}", n % TAGS)
}

/// Publish every batch over its own connection with a window of in-flight
/// events; returns the number of `OK true`.
async fn publish(url: &str, batches: Vec<Vec<Event>>, window: usize) -> Result<usize> {
    let mut tasks = Vec::new();
    for batch in batches {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut ws = connect(&url).await?;
            let mut accepted = 0usize;
            for chunk in batch.chunks(window.max(1)) {
                for e in chunk {
                    ws.send(Message::Text(json!(["EVENT", e]).to_string().into()))
                        .await?;
                }
                let mut answered = 0;
                while answered < chunk.len() {
                    match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) => {
                            if let Some(ok) = ok_true(&t) {
                                answered += 1;
                                accepted += usize::from(ok);
                            }
                        }
                        Ok(Some(Ok(_))) => {}
                        _ => bail!("connection lost or timed out during ingest"),
                    }
                }
            }
            Ok::<usize, anyhow::Error>(accepted)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

fn split(events: Vec<Event>, parts: usize) -> Vec<Vec<Event>> {
    let parts = parts.max(1);
    let mut out: Vec<Vec<Event>> = (0..parts).map(|_| Vec::new()).collect();
    for (i, e) in events.into_iter().enumerate() {
        out[i % parts].push(e);
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Events per second over one connection: `send` queues a window of events,
/// `answered` waits for the `OK`s of that window.
async fn one_connection_rate<S, R, SF, RF>(
    events: &[Event],
    window: usize,
    mut send: S,
    mut answered: R,
) -> Result<f64>
where
    S: FnMut(Vec<String>) -> SF,
    SF: std::future::Future<Output = Result<()>>,
    R: FnMut(usize) -> RF,
    RF: std::future::Future<Output = Result<usize>>,
{
    let t = Instant::now();
    let mut accepted = 0;
    for chunk in events.chunks(window.max(1)) {
        send(
            chunk
                .iter()
                .map(|e| json!(["EVENT", e]).to_string())
                .collect(),
        )
        .await?;
        accepted += answered(chunk.len()).await?;
    }
    Ok(accepted as f64 / t.elapsed().as_secs_f64())
}

/// Send `REQ sub filter`, read until its `EOSE` (or `CLOSED`), close it;
/// returns the events it got.
async fn req_round_trip(ws: &mut Ws, sub: &str, filter: &Filter) -> Result<usize> {
    ws.send(Message::Text(
        json!(["REQ", sub, filter]).to_string().into(),
    ))
    .await?;
    let mut got = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(m)))) => match civkit_framework::wire::parse_relay(&m) {
                Ok(RelayMessage::Event {
                    subscription_id, ..
                }) if subscription_id.as_str() == sub => got += 1,
                Ok(
                    RelayMessage::EndOfStoredEvents(id)
                    | RelayMessage::Closed {
                        subscription_id: id,
                        ..
                    },
                ) if id.as_str() == sub => break,
                _ => {}
            },
            Ok(Some(Ok(_))) => {}
            _ => bail!("REQ timed out"),
        }
    }
    ws.send(Message::Text(json!(["CLOSE", sub]).to_string().into()))
        .await?;
    Ok(got)
}

/// `Some(status)` when `text` is an `OK`.
fn ok_true(text: &str) -> Option<bool> {
    match civkit_framework::wire::parse_relay(text) {
        Ok(RelayMessage::Ok { status, .. }) => Some(status),
        _ => None,
    }
}

/// The filter of the `i`th held subscription. None can match the text
/// notes the bench publishes: other authors, tag values nobody uses, or
/// kinds nobody sends; each is the shape a real taker holds.
fn held_filter(i: usize, authors: &[nostr::PublicKey]) -> Filter {
    match i % 3 {
        0 => Filter::new().author(authors[i % authors.len()]),
        1 => Filter::new()
            .kind(Kind::TextNote)
            .hashtag(format!("bench-{i}")),
        _ => Filter::new().kind(Kind::Custom(30_000 + (i % 5_000) as u16)),
    }
}

/// Hold `subs` subscriptions over `args.fanout_conns` connections, then
/// measure ingest. The holders read (and drop) what they are sent, as a
/// live client would, so the relay never has to disconnect them.
async fn fanout_bench(args: &Args, subs: usize) -> Result<()> {
    let conns = args.fanout_conns.max(1).min(subs.max(1));
    let authors: Vec<nostr::PublicKey> = (0..64).map(|_| Keys::generate().public_key()).collect();
    let mut holders = Vec::new();
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for c in 0..conns {
        let mut ws = connect(&args.url).await?;
        let mine: Vec<usize> = (0..subs).filter(|i| i % conns == c).collect();
        for &i in &mine {
            let req = civkit_framework::wire::ClientMessage::req(
                nostr::SubscriptionId::new(format!("h{i}")),
                vec![held_filter(i, &authors)],
            );
            ws.send(Message::Text(nostr::JsonUtil::as_json(&req).into()))
                .await?;
        }
        let mut eose = 0;
        while eose < mine.len() {
            match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => match civkit_framework::wire::parse_relay(&t) {
                    Ok(RelayMessage::EndOfStoredEvents(_)) => eose += 1,
                    Ok(RelayMessage::Closed { message, .. }) => {
                        bail!("the relay refused a held subscription: {message}")
                    }
                    _ => {}
                },
                Ok(Some(Ok(_))) => {}
                _ => bail!("no EOSE for the held subscriptions of connection {c}"),
            }
        }
        let delivered = delivered.clone();
        holders.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, Message::Text(_)) {
                    delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    let events: Vec<Event> = sign_batch(args.events, "fanout");
    let cpu0 = args.pid.and_then(cpu_micros);
    let t0 = Instant::now();
    let accepted = publish(&args.url, split(events, args.clients), args.window).await?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = args.pid.and_then(cpu_micros);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for h in &holders {
        h.abort();
    }
    let cpu_per_event = match (cpu0, cpu1) {
        (Some(a), Some(b)) if accepted > 0 => Some((b - a) as f64 / accepted as f64),
        _ => None,
    };
    let result = json!({
        "name": args.name,
        "held_subscriptions": subs,
        "held_connections": conns,
        "accepted": accepted,
        "events_per_sec": accepted as f64 / secs,
        "cpu_us_per_event": cpu_per_event,
        "deliveries": delivered.load(std::sync::atomic::Ordering::Relaxed),
    });
    println!("{result}");
    eprintln!(
        "{:<18} {:>6} subs on {:>5} conns | ingest {:>8.0} ev/s | cpu {:>7} us/ev | {} deliveries",
        args.name,
        subs,
        conns,
        accepted as f64 / secs,
        cpu_per_event.map_or("n/a".into(), |c| format!("{c:.0}")),
        delivered.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(())
}

async fn bolt8_bench(args: &Args, target: &str) -> Result<()> {
    use civkit_bolt8::client::Bolt8Client;
    let (id, addr) = civkit_bolt8::parse_address(target).map_err(|e| anyhow::anyhow!(e))?;

    // Handshakes: TCP connect, Noise act 1-3, init exchange, then disconnect.
    // Each handshake is a new peer identity: the board refuses a second
    // connection from a node id it still holds, which a reused identity would
    // race into.
    let t = Instant::now();
    for _ in 0..args.handshakes {
        let mut one = Bolt8Client::new()?;
        one.connect(id, addr).await?;
        one.disconnect(id).await;
    }
    let mut client = Bolt8Client::new()?;
    let hps = args.handshakes as f64 / t.elapsed().as_secs_f64();

    // Events over one BOLT8 connection.
    let events = sign_batch(args.events, "bolt8");
    client.connect(id, addr).await?;
    let client = std::sync::Arc::new(tokio::sync::Mutex::new(client));
    let c1 = client.clone();
    let c2 = client.clone();
    let bolt8_eps = one_connection_rate(
        &events,
        args.window,
        move |msgs| {
            let c = c1.clone();
            async move {
                c.lock().await.send(id, msgs)?;
                Ok(())
            }
        },
        move |n| {
            let c = c2.clone();
            async move {
                let mut c = c.lock().await;
                let (mut got, mut ok) = (0, 0);
                while got < n {
                    let text = c
                        .recv(Duration::from_secs(30))
                        .await
                        .context("no OK over BOLT8")?;
                    if let Some(accepted) = ok_true(&text) {
                        got += 1;
                        ok += usize::from(accepted);
                    }
                }
                Ok(ok)
            }
        },
    )
    .await?;

    // The same over one websocket connection to the same board, for scale.
    let ws_eps = ws_one_connection(args).await?;
    let result = json!({
        "name": args.name,
        "bolt8_handshakes_per_sec": hps,
        "bolt8_events_per_sec": bolt8_eps,
        "ws_one_connection_events_per_sec": ws_eps,
        "window": args.window,
        "events": args.events,
    });
    println!("{result}");
    eprintln!(
        "{:<14} BOLT8: {hps:.0} handshakes/s, {bolt8_eps:.0} events/s over one connection | websocket, one connection: {ws_eps:.0} events/s (window {})",
        args.name, args.window
    );
    Ok(())
}

/// Events per second over one websocket connection to `args.url`, with
/// `args.window` in flight (the scale next to the Lightning transports).
async fn ws_one_connection(args: &Args) -> Result<f64> {
    let ws_events = sign_batch(args.events, "ws-one");
    let ws = std::sync::Arc::new(tokio::sync::Mutex::new(connect(&args.url).await?));
    let (w1, w2) = (ws.clone(), ws.clone());
    let ws_eps = one_connection_rate(
        &ws_events,
        args.window,
        move |msgs| {
            let w = w1.clone();
            async move {
                let mut w = w.lock().await;
                for m in msgs {
                    w.feed(Message::Text(m.into())).await?;
                }
                w.flush().await?;
                Ok(())
            }
        },
        move |n| {
            let w = w2.clone();
            async move {
                let mut w = w.lock().await;
                let (mut got, mut ok) = (0, 0);
                while got < n {
                    match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) => {
                            if let Some(accepted) = ok_true(&t) {
                                got += 1;
                                ok += usize::from(accepted);
                            }
                        }
                        Ok(Some(Ok(_))) => {}
                        _ => bail!("websocket closed or timed out"),
                    }
                }
                Ok(ok)
            }
        },
    )
    .await?;
    Ok(ws_eps)
}

/// Onion messages received, decrypted and admitted per second at the board:
/// one sender connected to the board sends signed events as onion messages
/// with a reply path and counts the `OK true` that come back over it.
async fn onion_bench(args: &Args, target: &str) -> Result<()> {
    use civkit_onion::client::OnionNode;
    use lightning::onion_message::messenger::Destination;
    let (id, addr) = civkit_bolt8::parse_address(target).map_err(|e| anyhow::anyhow!(e))?;
    let mut sender = OnionNode::start(vec![], None).await?;
    sender.connect(id, addr).await?;
    let reply = sender.reply_path(&[])?;
    let events = sign_batch(args.events, "onion");
    let t = Instant::now();
    let mut accepted = 0usize;
    for chunk in events.chunks(args.window.max(1)) {
        for e in chunk {
            sender.send(
                Destination::Node(id),
                json!(["EVENT", e]).to_string(),
                Some(reply.clone()),
            )?;
        }
        let mut got = 0;
        while got < chunk.len() {
            let text = sender
                .reply(Duration::from_secs(30))
                .await
                .context("no OK over the reply path (is the board's onion budget on? set messages_per_sec_per_peer = 0)")?;
            if let Some(ok) = ok_true(&text) {
                got += 1;
                accepted += usize::from(ok);
            }
        }
    }
    let onion_eps = accepted as f64 / t.elapsed().as_secs_f64();
    let ws_eps = ws_one_connection(args).await?;
    println!(
        "{}",
        json!({
            "name": args.name,
            "onion_events_per_sec": onion_eps,
            "ws_one_connection_events_per_sec": ws_eps,
            "window": args.window,
            "events": args.events,
        })
    );
    eprintln!(
        "{:<14} onion messages: {onion_eps:.0} events/s admitted over one peer | websocket, one connection: {ws_eps:.0} events/s (window {})",
        args.name, args.window
    );
    Ok(())
}

/// Credential issuance (blind signature + DLEQ) and redemption (parse,
/// verify the blind signature and the event binding, atomic durable
/// spent-set insert on sled, 64 in flight), next to one BIP-340 event check.
async fn credentials_bench(n: usize) -> Result<()> {
    use civkit_credentials::scheme;
    use civkit_framework::Persister;
    let master = [9u8; 32];
    let key = scheme::epoch_key(&master, 1);
    let blinded: Vec<_> = (0..n)
        .map(|_| scheme::blind())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow::anyhow!(e))?;
    let t = Instant::now();
    let signed: Vec<_> = blinded
        .iter()
        .map(|(_, _, b)| scheme::issue(&key, b))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow::anyhow!(e))?;
    let issue_per_sec = n as f64 / t.elapsed().as_secs_f64();

    let binding = b"bench binding".to_vec();
    let mut tags = Vec::with_capacity(n);
    for ((spend, r, b), (c, e, s)) in blinded.iter().zip(&signed) {
        let cred = scheme::Credential {
            epoch: 1,
            spend_secret: spend.to_secret_hex(),
            signature: scheme::unblind(&key.public_key(), b, r, c, e, s)
                .map_err(|e| anyhow::anyhow!(e))?
                .to_hex(),
        };
        tags.push(scheme::spend_tag(&cred, &binding).map_err(|e| anyhow::anyhow!(e))?);
    }
    let dir = std::env::temp_dir().join(format!("civkit-bench-credentials-{}", std::process::id()));
    let store = std::sync::Arc::new(civkit_sled::SledPersister::open(&dir)?);
    let t = Instant::now();
    let mut spent = 0usize;
    for chunk in tags.chunks(64) {
        let tasks: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|tag| {
                let (store, key, binding) = (store.clone(), key.clone(), binding.clone());
                tokio::spawn(async move {
                    let p = scheme::parse_tag(&tag).ok()?;
                    scheme::verify(&key, &p, &binding).ok()?;
                    store
                        .kv_insert_new("credentials", &p.spend_key.to_bytes(), b"1")
                        .await
                        .ok()
                })
            })
            .collect();
        for task in tasks {
            if task.await? == Some(true) {
                spent += 1;
            }
        }
    }
    let redeem_per_sec = spent as f64 / t.elapsed().as_secs_f64();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);

    let events = sign_batch(n.min(5000), "verify");
    let t = Instant::now();
    let ok = events.iter().filter(|e| e.verify().is_ok()).count();
    let verify_per_sec = ok as f64 / t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "credentials": n,
            "issuance_per_sec": issue_per_sec,
            "redemptions_per_sec": redeem_per_sec,
            "event_signature_checks_per_sec": verify_per_sec,
        })
    );
    eprintln!(
        "credentials: {issue_per_sec:.0} issued/s (blind signature + DLEQ), {redeem_per_sec:.0} redeemed/s (verify + durable spent set, 64 in flight) | one BIP-340 event check: {verify_per_sec:.0}/s"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(target) = args.bolt8.clone() {
        return bolt8_bench(&args, &target).await;
    }
    if let Some(target) = args.onion.clone() {
        return onion_bench(&args, &target).await;
    }
    if let Some(n) = args.credentials {
        return credentials_bench(n).await;
    }
    if let Some(subs) = args.fanout_subs {
        return fanout_bench(&args, subs).await;
    }
    if args.attack_only {
        return hostile::attack_only(&args).await;
    }
    if let Some(secs) = args.hostile_secs {
        return hostile::run(&args, secs).await;
    }
    let url = args.url.as_str();

    // Sign everything first so signing does not compete with the relay.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let authors: Vec<Keys> = (0..AUTHORS).map(|_| Keys::generate()).collect();
    let sign = |range: std::ops::Range<usize>| {
        let per = range.len().div_ceil(threads).max(1);
        let authors = &authors;
        std::thread::scope(|s| {
            let hs: Vec<_> = range
                .clone()
                .step_by(per)
                .map(|from| {
                    s.spawn(move || sign_market(from..(from + per).min(range.end), authors))
                })
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect::<Vec<_>>()
        })
    };
    let measured = sign(0..args.events);
    let fill = sign(args.events..args.store.max(args.events));

    // 1. Ingest: accepted events per second and relay CPU per accepted event.
    let db_cpu = || args.db_process.as_deref().map(cpu_micros_named);
    let (cpu0, db0) = (args.pid.and_then(cpu_micros), db_cpu());
    let t0 = Instant::now();
    let accepted = publish(url, split(measured, args.clients), args.window).await?;
    let secs = t0.elapsed().as_secs_f64();
    let (cpu1, db1) = (args.pid.and_then(cpu_micros), db_cpu());
    let eps = accepted as f64 / secs;
    let per_event = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if accepted > 0 => Some(b.saturating_sub(a) as f64 / accepted as f64),
        _ => None,
    };
    let (cpu_per_event, db_cpu_per_event) = (per_event(cpu0, cpu1), per_event(db0, db1));

    // 2. Fill the store, then time REQ round trips on it.
    let filled = publish(url, split(fill, args.clients), args.window * 4).await?;
    let mut ws = connect(url).await?;
    let pk = |i: usize| authors[i % AUTHORS].public_key();
    // Each a shape a taker sends: by kind, by author, by tag, and a mix.
    let shapes: [(&str, &dyn Fn(usize) -> Filter); 4] = [
        ("kind", &|_| Filter::new().kind(Kind::TextNote)),
        ("author", &|i| Filter::new().author(pk(i))),
        ("tag", &|i| Filter::new().hashtag(market_tag(i))),
        ("mixed", &|i| {
            Filter::new()
                .kind(Kind::TextNote)
                .authors((0..10).map(|j| pk(i * 10 + j)))
                .hashtag(market_tag(i))
        }),
    ];
    let mut req = serde_json::Map::new();
    for (shape, filter) in shapes {
        let mut lat = Vec::with_capacity(args.req_samples);
        let mut got_events = 0usize;
        for i in 0..args.req_samples {
            let (sub, filter) = (format!("{shape}{i}"), filter(i).limit(100));
            let t = Instant::now();
            got_events += req_round_trip(&mut ws, &sub, &filter).await?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        req.insert(
            shape.to_string(),
            json!({
                "p50_ms": percentile(&lat, 0.5),
                "p99_ms": percentile(&lat, 0.99),
                "events_per_reply": got_events as f64 / args.req_samples.max(1) as f64,
            }),
        );
    }
    drop(ws);

    // 3. Memory per idle connection.
    let mem = match args.pid {
        Some(pid) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = rss_kib(pid);
            let mut idle = Vec::with_capacity(args.idle);
            for _ in 0..args.idle {
                idle.push(connect(url).await?);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = rss_kib(pid);
            drop(idle);
            match (before, after) {
                (Some(b), Some(a)) => {
                    Some((a.saturating_sub(b)) as f64 * 1024.0 / args.idle as f64)
                }
                _ => None,
            }
        }
        None => None,
    };

    let result = json!({
        "name": args.name,
        "accepted": accepted,
        "ingest_secs": secs,
        "events_per_sec": eps,
        "cpu_us_per_event": cpu_per_event,
        "db_cpu_us_per_event": db_cpu_per_event,
        "store_events": accepted + filled,
        "req": req,
        "idle_bytes_per_conn": mem,
    });
    println!("{result}");
    let reqs: Vec<String> = req
        .iter()
        .map(|(shape, r)| format!("{shape} p50 {:.2} p99 {:.2} ms", r["p50_ms"], r["p99_ms"]))
        .collect();
    eprintln!(
        "{:<14} ingest {:>8.0} ev/s ({} accepted) | cpu {:>7} us/ev | REQ limit 100 on {} events: {} | idle conn {} B",
        args.name,
        eps,
        accepted,
        cpu_per_event.map_or("n/a".into(), |c| format!("{c:.0}")),
        accepted + filled,
        reqs.join(", "),
        mem.map_or("n/a".into(), |m| format!("{m:.0}")),
    );
    Ok(())
}
