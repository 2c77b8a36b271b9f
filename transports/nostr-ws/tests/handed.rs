//! Connections handed over in-process (as an onion service hands its
//! streams to the websocket transport): served as HTTP and websocket, with
//! an origin that says Tor and has no address, under one Tor-wide budget.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::time::Duration;

use civkit_framework::testing::conformance::events::event;
use civkit_framework::testing::{TestNode, WireClient};
use civkit_framework::Transport;
use civkit_nostr_ws::{NostrWs, NostrWsConfig};
use futures_util::{SinkExt, StreamExt};
use nostr::{JsonUtil, Keys};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

async fn running(cfg: NostrWsConfig) -> (TestNode, std::sync::Arc<civkit_nostr_ws::WsHandle>) {
    let tn = TestNode::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let t = NostrWs::with_listener("relay", cfg, listener);
    let handle = t.handle();
    tokio::spawn(Box::new(t).run(tn.node.clone(), tn.shutdown()));
    while !tn.node.endpoints().contains_key("relay") {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (tn, handle)
}

type HandedWs = tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>;

/// A websocket over a freshly handed stream.
async fn handed_ws(
    handle: &civkit_nostr_ws::WsHandle,
) -> Result<HandedWs, tokio_tungstenite::tungstenite::Error> {
    let (near, far) = tokio::io::duplex(64 * 1024);
    assert!(handle.serve_tor(Box::new(far)));
    tokio_tungstenite::client_async("ws://x.onion/", near)
        .await
        .map(|(ws, _)| ws)
}

/// Retry `handed_ws` until a place is free (a closed connection's place is
/// freed a moment after the client sees it close), at most `tries` times.
async fn admitted_within(handle: &civkit_nostr_ws::WsHandle, tries: usize) -> Option<HandedWs> {
    for _ in 0..tries {
        if let Ok(ws) = handed_ws(handle).await {
            return Some(ws);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn a_handed_stream_speaks_websocket_and_nip11_as_tor() {
    let (tn, handle) = running(NostrWsConfig::default()).await;

    // NIP-11 over a handed stream.
    let (mut near, far) = tokio::io::duplex(64 * 1024);
    assert!(handle.serve_tor(Box::new(far)));
    near.write_all(b"GET / HTTP/1.1\r\nHost: x.onion\r\nAccept: application/nostr+json\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    near.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"supported_nips\""),
        "{answer}"
    );

    // A websocket over a handed stream publishes; a local subscriber gets it.
    let mut local = tn.client().await;
    local
        .req(
            "live",
            vec![nostr::Filter::new().kind(nostr::Kind::from(1))],
        )
        .await;
    let mut ws = handed_ws(&handle).await.unwrap();
    let e = event(
        &Keys::generate(),
        1,
        nostr::Timestamp::now().as_secs(),
        "over tor",
        &[],
    );
    ws.send(Message::text(format!(r#"["EVENT",{}]"#, e.as_json())))
        .await
        .unwrap();
    let reply = loop {
        let m = ws.next().await.unwrap().unwrap().into_text().unwrap();
        if m.starts_with(r#"["OK","#) {
            break m;
        }
    };
    assert!(reply.contains("true"), "{reply}");
    let got = local
        .next_event("live", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got.id, e.id);
}

#[tokio::test]
async fn tor_connections_share_one_budget() {
    let cfg = NostrWsConfig {
        max_tor_connections: 2,
        ..NostrWsConfig::default()
    };
    let (_tn, handle) = running(cfg).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(handed_ws(&handle).await.unwrap());
    }
    // The third is refused with 429 although it "comes from" nowhere.
    let err = handed_ws(&handle).await.unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    // Closing one frees its place.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    assert!(
        admitted_within(&handle, 50).await.is_some(),
        "a freed place is reused"
    );
}

/// A Tor stream that never sends a request holds its place in the Tor
/// budget only until `header_timeout_secs`; then it is closed and the place
/// serves the next client.
#[tokio::test]
async fn a_silent_tor_stream_is_closed_and_frees_its_place() {
    let cfg = NostrWsConfig {
        max_tor_connections: 1,
        header_timeout_secs: 1,
        ..NostrWsConfig::default()
    };
    let (_tn, handle) = running(cfg).await;
    let (mut silent, far) = tokio::io::duplex(1024);
    assert!(handle.serve_tor(Box::new(far)));
    // Streams are served in the order they were handed: the silent one
    // holds the only place.
    let err = handed_ws(&handle).await.unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");

    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the silent stream is closed: {read:?}"
    );
    assert!(
        admitted_within(&handle, 20).await.is_some(),
        "its place serves the next client"
    );
}
