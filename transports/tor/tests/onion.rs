//! The board as an onion service on a private Tor network built from
//! Debian's tor (tests/tor/network.sh): arti and the C Tor client reach it,
//! a clearnet subscriber sees what arrives over Tor, and a restart keeps
//! the address.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arti_client::TorClient;
use civkit_framework::testing::conformance::events::event;
use civkit_framework::testing::{TestNode, WireClient};
use civkit_framework::Transport;
use civkit_nostr_ws::{NostrWs, NostrWsConfig};
use civkit_tor::testing::Network;
use civkit_tor::{Tor, TorConfig};
use futures_util::{SinkExt, StreamExt};
use nostr::{JsonUtil, Keys};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

/// The boards' Tor-wide stream budget, small enough to flood.
const MAX_STREAMS: usize = 3;
/// How long the boards wait for a request head: a stream that an abandoned
/// attempt left open holds a place no longer than this.
const HEADER_TIMEOUT_SECS: u64 = 3;

/// A board: websocket on loopback, and the tor transport in front of it.
async fn board(net: &Network, data: &Path) -> (TestNode, String) {
    board_with(net, data, TorConfig::default()).await
}

/// A board whose tor transport has `tor` (the network and the test's
/// budget filled in).
async fn board_with(net: &Network, data: &Path, tor: TorConfig) -> (TestNode, String) {
    let tn = TestNode::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_cfg = NostrWsConfig {
        header_timeout_secs: HEADER_TIMEOUT_SECS,
        ..NostrWsConfig::default()
    };
    let ws = NostrWs::with_listener("relay", ws_cfg, listener);
    let cfg = TorConfig {
        arti: net.arti(),
        max_streams: MAX_STREAMS,
        ..tor
    };
    let tor = Tor::new("tor", &cfg, data, ws.handle()).unwrap();
    tokio::spawn(Box::new(ws).run(tn.node.clone(), tn.shutdown()));
    tokio::spawn(Box::new(tor).run(tn.node.clone(), tn.shutdown()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let url = loop {
        if let Some(u) = tn.node.endpoints().get("tor") {
            break u.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the onion service did not launch in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    (tn, url)
}

/// Retry `connect` until the onion service answers (its descriptor takes a
/// while to reach the HSDirs), at most 180 s.
async fn reach<S, F, Fut>(what: &str, mut connect: F) -> S
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<S, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(180);
    let started = Instant::now();
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(60), connect())
            .await
            .unwrap_or_else(|_| Err("an attempt took over 60 s".into()));
        match attempt {
            Ok(s) => {
                eprintln!(
                    "{what} reached the onion service after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
                return s;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "{what} could not reach the onion service in 180 s: {e}"
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// A stream to `onion`'s port 80 through the C Tor client's SOCKS port.
async fn via_c_tor(
    socks: String,
    onion: String,
) -> Result<tokio_socks::tcp::Socks5Stream<tokio::net::TcpStream>, String> {
    tokio_socks::tcp::Socks5Stream::connect(socks.as_str(), (onion.as_str(), 80))
        .await
        .map_err(|e| e.to_string())
}

/// Publish `e` over a websocket on `io`; the OK.
async fn publish_over<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    url: &str,
    e: &nostr::Event,
) -> String {
    tokio::time::timeout(Duration::from_secs(60), publish_once(io, url, e))
        .await
        .expect("no OK within 60 s over the stream")
}

async fn publish_once<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    url: &str,
    e: &nostr::Event,
) -> String {
    let (mut ws, _) = tokio_tungstenite::client_async(url, io).await.unwrap();
    publish_on(&mut ws, e).await
}

/// Publish `e` on an open websocket; the OK.
async fn publish_on<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    e: &nostr::Event,
) -> String {
    ws.send(Message::text(format!(r#"["EVENT",{}]"#, e.as_json())))
        .await
        .unwrap();
    loop {
        let m = ws
            .next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .to_string();
        if m.starts_with(r#"["OK","#) {
            return m;
        }
    }
}

/// Publish a note over `io` and check the clearnet subscriber `local` gets it.
async fn publish_and_see<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    url: &str,
    local: &mut civkit_framework::testing::MemoryClient,
    text: &str,
) {
    let e = note(text);
    let ok = publish_over(io, url, &e).await;
    seen(ok, &e, local).await;
}

fn note(text: &str) -> nostr::Event {
    event(
        &Keys::generate(),
        1,
        nostr::Timestamp::now().as_secs(),
        text,
        &[],
    )
}

/// Check `ok` accepted `e`, and the clearnet subscriber `local` got it.
async fn seen(ok: String, e: &nostr::Event, local: &mut civkit_framework::testing::MemoryClient) {
    assert!(ok.contains("true"), "{ok}");
    let got = local
        .next_event("live", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        got.id, e.id,
        "the clearnet subscriber got what came over Tor"
    );
}

/// Everything logged at info level and above, by every crate (civkit and arti).
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_is_an_onion_service_reachable_by_arti_and_c_tor() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .init();
    let net = Network::start();
    let data = tempfile::tempdir().unwrap();
    let (tn, url) = board(&net, data.path()).await;
    assert!(url.starts_with("ws://") && url.ends_with(".onion"), "{url}");
    // NIP-11 over clearnet names the onion service.
    let clear = tn.node.endpoints()["relay"]
        .trim_start_matches("ws://")
        .to_string();
    let nip11 = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(&clear).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: application/nostr+json\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).await.unwrap();
        text
    };
    assert!(
        nip11.contains(&format!(r#""civkit_onion":["{url}"]"#)),
        "{nip11}"
    );
    let onion = url.trim_start_matches("ws://").to_string();

    // A clearnet subscriber on the same board.
    let mut local = tn.client().await;
    local
        .req(
            "live",
            vec![nostr::Filter::new().kind(nostr::Kind::from(1))],
        )
        .await;

    // arti, as a maker's client, publishes over the onion service.
    let client_dir = tempfile::tempdir().unwrap();
    let cfg = TorConfig {
        arti: net.arti(),
        ..TorConfig::default()
    };
    let client_cfg = civkit_tor::arti_config(&cfg, client_dir.path()).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = tokio::time::timeout(
        Duration::from_secs(120),
        TorClient::create_bootstrapped(client_cfg),
    )
    .await
    .expect("arti (the test's client) did not bootstrap in 120 s")
    .unwrap();
    let stream = reach("arti", || {
        let (client, onion) = (client.clone(), onion.clone());
        async move {
            client
                .connect((onion.as_str(), 80))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    publish_and_see(stream, &url, &mut local, "over tor").await;

    // The C Tor client, through its SOCKS port.
    let socks = format!("127.0.0.1:{}", net.socks());
    let stream = reach("C Tor", || via_c_tor(socks.clone(), onion.clone())).await;
    publish_and_see(stream, &url, &mut local, "via c tor").await;

    // A flood of streams: past the Tor-wide budget they are refused with
    // END, and the websockets already open keep their service. Streams
    // that abandoned attempts above may have left open are closed by the
    // header timeout first.
    tokio::time::sleep(Duration::from_secs(HEADER_TIMEOUT_SECS + 2)).await;
    let connect = || {
        tokio::time::timeout(
            Duration::from_secs(60),
            client.connect((onion.as_str(), 80)),
        )
    };
    let mut held = Vec::new();
    for i in 0..MAX_STREAMS {
        let stream = connect()
            .await
            .unwrap_or_else(|_| panic!("stream {i} within the budget took over 60 s"))
            .unwrap();
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(60),
            tokio_tungstenite::client_async(url.as_str(), stream),
        )
        .await
        .expect("no websocket upgrade within 60 s")
        .unwrap();
        held.push(ws);
    }
    let refused = connect()
        .await
        .expect("a stream past the budget was neither accepted nor refused in 60 s");
    assert!(refused.is_err(), "a stream past the budget is refused");
    let e = note("still served");
    let ok = tokio::time::timeout(Duration::from_secs(60), publish_on(&mut held[0], &e))
        .await
        .expect("no OK within 60 s on a held websocket");
    seen(ok, &e, &mut local).await;
    drop(held);
    drop(tn);
    // At the default level the logs name no onion address and no client.
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(text.contains("onion service launched"), "{text}");
    let host = onion.trim_end_matches(".onion");
    assert!(
        !text.contains(host),
        "the onion address leaked into the logs"
    );

    // A restart on the same data dir keeps the address.
    let (_again, url2) = board(&net, data.path()).await;
    assert_eq!(url2, url, "the .onion address survives a restart");
    // The identity key is in the data dir's keystore, readable by its owner only.
    let key_dir: PathBuf = data.path().join("tor/state");
    let mut keys = 0;
    let mut todo = vec![key_dir];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&path).unwrap().permissions(),
            );
            if path.is_dir() {
                todo.push(path);
            } else if path.to_string_lossy().contains("keystore") {
                assert_eq!(
                    mode & 0o077,
                    0,
                    "{} is mode {:o}",
                    path.display(),
                    mode & 0o777
                );
                if path
                    .extension()
                    .is_some_and(|e| e == "ed25519_expanded_private")
                {
                    keys += 1;
                }
            }
        }
    }
    assert!(keys >= 1, "the onion service's identity key is kept");

    // Client authorization: a board that only authorized clients can find.
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).unwrap();
    let public = x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES);
    let b32 = |k: &[u8]| data_encoding::BASE32_NOPAD.encode(k);
    let restricted_data = tempfile::tempdir().unwrap();
    let restricted = TorConfig {
        nickname: "restricted".into(),
        authorized_clients: [(
            "tester".to_string(),
            format!("descriptor:x25519:{}", b32(&public)),
        )]
        .into(),
        ..TorConfig::default()
    };
    let (_restricted, r_url) = board_with(&net, restricted_data.path(), restricted).await;
    let r_onion = r_url.trim_start_matches("ws://").to_string();
    // The C Tor client holds the key: it reaches the board and publishes.
    net.authorize_c_tor(&r_onion, &b32(&secret));
    let stream = reach("C Tor (authorized)", || {
        via_c_tor(socks.clone(), r_onion.clone())
    })
    .await;
    let ok = publish_over(stream, &r_url, &note("authorized")).await;
    assert!(ok.contains("true"), "{ok}");
    // The descriptor is published (C Tor used it), yet arti, without the
    // key, cannot find the board.
    let denied = tokio::time::timeout(
        Duration::from_secs(60),
        client.connect((r_onion.as_str(), 80)),
    )
    .await;
    let why = match denied {
        Ok(Ok(_)) => panic!("a client without the key reached a restricted onion service"),
        Ok(Err(e)) => format!("{e:?}"),
        Err(_) => panic!("arti neither reached nor gave up on the restricted service in 60 s"),
    };
    // Refused for the reason restricted discovery gives, not another.
    assert!(why.contains("MissingDecryptionKey"), "{why}");
}
