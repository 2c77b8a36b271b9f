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
use civkit_tor::{Tor, TorConfig};
use futures_util::{SinkExt, StreamExt};
use nostr::{JsonUtil, Keys};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/tor/network.sh");

/// The private network; stopped when dropped, whatever happened.
struct Network {
    dir: tempfile::TempDir,
    info: Value,
}

impl Network {
    fn start() -> Network {
        assert!(
            Path::new("/usr/sbin/tor").exists(),
            "Debian's tor is needed: `bash .ci/test` installs it (apt-get install tor)"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("bash")
            .args([SCRIPT, "start"])
            .arg(dir.path())
            .output()
            .unwrap();
        let mut net = Network {
            info: Value::Null,
            dir,
        };
        assert!(
            out.status.success(),
            "the private Tor network did not come up: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
        let info = std::fs::read_to_string(net.dir.path().join("network.json")).unwrap();
        net.info = serde_json::from_str(&info).unwrap();
        net
    }

    /// arti's configuration for this network.
    fn arti(&self) -> serde_json::Map<String, Value> {
        let caches: Vec<Value> = self.info["caches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                json!({
                    "rsa_identity": c["rsa_identity"],
                    "ed_identity": c["ed_identity"],
                    "orports": [c["orport"]],
                })
            })
            .collect();
        json!({
            "tor_network": {
                "authorities": { "v3idents": self.info["authorities"] },
                "fallback_caches": caches,
            },
            // Every relay is on 127.0.0.1.
            "address_filter": { "allow_local_addrs": true },
            "path_rules": { "ipv4_subnet_family_prefix": 33, "ipv6_subnet_family_prefix": 129 },
            // C Tor's onion time period on a TestingTorNetwork: 24 voting intervals of 15 s.
            "override_net_params": { "hsdir_interval": 6 },
            // Test directories live under /tmp.
            "storage": { "permissions": { "dangerously_trust_everyone": true } },
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn socks(&self) -> u16 {
        self.info["socks_port"].as_u64().unwrap() as u16
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .args([SCRIPT, "stop"])
            .arg(self.dir.path())
            .status();
    }
}

/// A board: websocket on loopback, and the tor transport in front of it.
async fn board(net: &Network, data: &Path) -> (TestNode, String) {
    let tn = TestNode::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws = NostrWs::with_listener("relay", NostrWsConfig::default(), listener);
    let cfg = TorConfig {
        arti: net.arti(),
        ..TorConfig::default()
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
        match connect().await {
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

/// Publish `e` over a websocket on `io`; the OK.
async fn publish_over<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    url: &str,
    e: &nostr::Event,
) -> String {
    let (mut ws, _) = tokio_tungstenite::client_async(url, io).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_is_an_onion_service_reachable_by_arti_and_c_tor() {
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
    let client = TorClient::create_bootstrapped(client_cfg).await.unwrap();
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
    let e = event(
        &Keys::generate(),
        1,
        nostr::Timestamp::now().as_secs(),
        "over tor",
        &[],
    );
    let ok = publish_over(stream, &url, &e).await;
    assert!(ok.contains("true"), "{ok}");
    let got = local
        .next_event("live", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        got.id, e.id,
        "the clearnet subscriber got the order published over Tor"
    );

    // The C Tor client, through its SOCKS port.
    let socks = format!("127.0.0.1:{}", net.socks());
    let stream = reach("C Tor", || {
        let (socks, onion) = (socks.clone(), onion.clone());
        async move {
            tokio_socks::tcp::Socks5Stream::connect(socks.as_str(), (onion.as_str(), 80))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let e = event(
        &Keys::generate(),
        1,
        nostr::Timestamp::now().as_secs(),
        "via c tor",
        &[],
    );
    let ok = publish_over(stream, &url, &e).await;
    assert!(ok.contains("true"), "{ok}");
    let got = local
        .next_event("live", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(got.id, e.id);
    drop(tn);

    // A restart on the same data dir keeps the address.
    let (_again, url2) = board(&net, data.path()).await;
    assert_eq!(url2, url, "the .onion address survives a restart");
    let key_dir: PathBuf = data.path().join("tor/state");
    assert!(key_dir.exists());
}
