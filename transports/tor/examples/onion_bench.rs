//! Publishing over the onion service beside the same node's clearnet
//! websocket, on the private Tor network (`bash bench/tor.sh`): events/s
//! and p50/p99 publish latency (EVENT to OK, one connection, one at a
//! time), both measured in one run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark, not a service

use std::time::{Duration, Instant};

use arti_client::TorClient;
use civkit_framework::testing::conformance::events::event;
use civkit_framework::testing::TestNode;
use civkit_framework::Transport;
use civkit_nostr_ws::{NostrWs, NostrWsConfig};
use civkit_tor::testing::Network;
use civkit_tor::{Tor, TorConfig};
use futures_util::{SinkExt, StreamExt};
use nostr::{JsonUtil, Keys};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

const EVENTS: usize = 300;

async fn run<S: AsyncRead + AsyncWrite + Unpin>(io: S, url: &str) -> (f64, f64, f64) {
    let (mut ws, _) = tokio_tungstenite::client_async(url, io).await.unwrap();
    let keys = Keys::generate();
    let now = nostr::Timestamp::now().as_secs();
    let mut lat = Vec::with_capacity(EVENTS);
    let started = Instant::now();
    for i in 0..EVENTS {
        let e = event(&keys, 1, now, &format!("bench {i}"), &[]);
        let t = Instant::now();
        ws.send(Message::text(format!(r#"["EVENT",{}]"#, e.as_json())))
            .await
            .unwrap();
        loop {
            let m = ws.next().await.unwrap().unwrap().into_text().unwrap();
            if m.starts_with(r#"["OK","#) {
                assert!(m.contains("true"), "{m}");
                break;
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let per_sec = EVENTS as f64 / started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    (per_sec, lat[EVENTS / 2], lat[EVENTS * 99 / 100])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let net = Network::start();
    let data = tempfile::tempdir().unwrap();
    let tn = TestNode::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clear = listener.local_addr().unwrap();
    // Rate limits off: the benchmark measures the path, not the policy.
    let mut ws_cfg = NostrWsConfig::default();
    ws_cfg.limits.events_per_second = 0.0;
    let ws = NostrWs::with_listener("relay", ws_cfg, listener);
    let cfg = TorConfig {
        arti: net.arti(),
        ..TorConfig::default()
    };
    let tor = Tor::new("tor", &cfg, data.path(), ws.handle()).unwrap();
    tokio::spawn(Box::new(ws).run(tn.node.clone(), tn.shutdown()));
    tokio::spawn(Box::new(tor).run(tn.node.clone(), tn.shutdown()));
    let url = loop {
        if let Some(u) = tn.node.endpoints().get("tor") {
            break u.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let onion = url.trim_start_matches("ws://").to_string();
    let client_dir = tempfile::tempdir().unwrap();
    let client =
        TorClient::create_bootstrapped(civkit_tor::arti_config(&cfg, client_dir.path()).unwrap())
            .await
            .unwrap();
    let stream = loop {
        match client.connect((onion.as_str(), 80)).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    let (onion_rate, onion_p50, onion_p99) = run(stream, &url).await;
    let tcp = tokio::net::TcpStream::connect(clear).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (clear_rate, clear_p50, clear_p99) = run(tcp, &format!("ws://{clear}/")).await;
    println!("{EVENTS} events, one connection, one at a time, same node, same run:");
    println!("  onion service (arti client, private Tor network): {onion_rate:.0} events/s, p50 {onion_p50:.1} ms, p99 {onion_p99:.1} ms");
    println!("  clearnet websocket (loopback):                     {clear_rate:.0} events/s, p50 {clear_p50:.2} ms, p99 {clear_p99:.2} ms");
    println!(
        "  onion / clearnet: {:.3}x events/s, {:.0}x p50 latency",
        onion_rate / clear_rate,
        onion_p50 / clear_p50
    );
}
