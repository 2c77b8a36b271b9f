//! A websocket test client (tokio-tungstenite) and a harness that starts the
//! transport on a free port.

#![allow(dead_code)]

use std::time::Duration;

use async_trait::async_trait;
use civkit_framework::testing::conformance::TransportHarness;
use civkit_framework::testing::TestClient;
use civkit_framework::{Node, Shutdown, Transport};
use civkit_nostr_ws::{NostrWs, NostrWsConfig};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct WsClient {
    pub ws: Ws,
    pub challenge: Option<String>,
}

#[async_trait]
impl TestClient for WsClient {
    async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("websocket send");
    }
    async fn recv_text(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                _ => return None,
            }
        }
    }
}

pub struct WsHarness {
    pub url: String,
    pub addr: std::net::SocketAddr,
}

impl WsHarness {
    pub async fn raw(&self) -> Ws {
        tokio_tungstenite::connect_async(&self.url)
            .await
            .expect("connect")
            .0
    }
}

#[async_trait]
impl TransportHarness for WsHarness {
    async fn connect(&self) -> Box<dyn TestClient> {
        Box::new(connect(&self.url).await)
    }
}

/// Connect and read the NIP-42 challenge the relay sends first.
pub async fn connect(url: &str) -> WsClient {
    let ws = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0;
    let mut c = WsClient {
        ws,
        challenge: None,
    };
    let first = c
        .recv_text(Duration::from_secs(5))
        .await
        .expect("AUTH challenge");
    let v: serde_json::Value = serde_json::from_str(&first).expect("json");
    assert_eq!(v[0], "AUTH", "the relay opens with a NIP-42 challenge");
    c.challenge = v[1].as_str().map(str::to_string);
    c
}

pub async fn start(node: Node, shutdown: Shutdown, config: NostrWsConfig) -> WsHarness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let t = Box::new(NostrWs::with_listener("relay", config, listener));
    tokio::spawn(t.run(node, shutdown));
    WsHarness {
        url: format!("ws://{addr}"),
        addr,
    }
}
