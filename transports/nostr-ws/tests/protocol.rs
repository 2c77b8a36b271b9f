//! NIP-01 edge cases, limits, NIP-11, NIP-42 and hostile input over a real websocket.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use civkit_framework::testing::conformance::events::event;
use civkit_framework::testing::{TestClient, TestNode, WireClient};
use civkit_framework::{
    Admission, NodeInfo, Origin, Rejection, Service, ServiceContext, SessionLimits,
};
use civkit_nostr_ws::NostrWsConfig;
use common::{connect, start, WsHarness};
use futures_util::{SinkExt, StreamExt};
use nostr::{EventBuilder, Filter, JsonUtil, Keys, Kind, Tag, Timestamp};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn now() -> u64 {
    Timestamp::now().as_secs()
}

async fn relay(config: NostrWsConfig) -> (TestNode, WsHarness) {
    let tn = TestNode::new();
    let h = start(tn.node.clone(), tn.shutdown(), config).await;
    (tn, h)
}

async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
    out
}

#[tokio::test]
async fn nip11_document_with_cors() {
    let (_tn, h) = relay(NostrWsConfig::default()).await;
    let resp = http(
        h.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nAccept: application/nostr+json\r\nConnection: close\r\n\r\n",
    )
    .await;
    let lower = resp.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{resp}");
    assert!(lower.contains("access-control-allow-origin: *"));
    assert!(lower.contains("content-type: application/nostr+json"));
    let body: Value = serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let nips: Vec<u64> = body["supported_nips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    for n in [1, 9, 11, 40, 42, 45] {
        assert!(nips.contains(&n), "NIP-{n} missing from {nips:?}");
    }
    assert_eq!(body["limitation"]["max_limit"], 500);
    assert_eq!(body["limitation"]["max_message_length"], 131072);
    assert_eq!(body["pubkey"].as_str().unwrap().len(), 64);
    let pre = http(
        h.addr,
        "OPTIONS / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        pre.to_ascii_lowercase()
            .contains("access-control-allow-methods"),
        "{pre}"
    );
}

#[tokio::test]
async fn every_kind_of_bad_input_gets_an_answer_and_the_connection_survives() {
    let (_tn, h) = relay(NostrWsConfig::default()).await;
    let mut c = connect(&h.url).await;
    let mut bystander = connect(&h.url).await;
    let k = Keys::generate();

    let expect_notice = |v: Value| {
        assert_eq!(v[0], "NOTICE", "{v}");
        assert!(
            v[1].as_str().unwrap().starts_with("invalid:")
                || v[1].as_str().unwrap().starts_with("unsupported:"),
            "{v}"
        );
    };
    c.send_text("{not json".into()).await;
    expect_notice(c.recv_json().await);
    c.send_text(r#"["EVENT"]"#.into()).await;
    expect_notice(c.recv_json().await);
    c.send_text(r#"["EVENT", {"id": "zz"}, 3]"#.into()).await;
    expect_notice(c.recv_json().await);
    c.send_text(r#"["HELLO", 1]"#.into()).await;
    expect_notice(c.recv_json().await);
    c.send_text(r#"[42]"#.into()).await;
    expect_notice(c.recv_json().await);

    // Bad hex inside an event whose id is readable: OK false.
    let good = event(&k, 1, now(), "x", &[]);
    let mut v: Value = serde_json::from_str(&good.as_json()).unwrap();
    v["pubkey"] = json!("not-hex");
    c.send_json(json!(["EVENT", v])).await;
    let r = c.recv_json().await;
    assert_eq!(
        (r[0].as_str(), r[2].as_bool()),
        (Some("OK"), Some(false)),
        "{r}"
    );
    assert!(r[3].as_str().unwrap().starts_with("invalid:"));

    // Tampered content: id no longer matches.
    let mut v: Value = serde_json::from_str(&good.as_json()).unwrap();
    v["content"] = json!("tampered");
    c.send_json(json!(["EVENT", v])).await;
    let r = c.recv_json().await;
    assert_eq!(r[2], false);
    assert!(r[3].as_str().unwrap().starts_with("invalid:"), "{r}");

    // Valid id, forged signature.
    let other = event(&k, 1, now(), "y", &[]);
    let mut v: Value = serde_json::from_str(&good.as_json()).unwrap();
    v["sig"] = json!(other.sig.to_string());
    c.send_json(json!(["EVENT", v])).await;
    let r = c.recv_json().await;
    assert_eq!(r[2], false);
    assert!(r[3].as_str().unwrap().contains("signature"), "{r}");

    // Bad hex in a filter: CLOSED invalid.
    c.send_text(r#"["REQ", "s1", {"authors": ["xyz"]}]"#.into())
        .await;
    let r = c.recv_json().await;
    assert_eq!(r[0], "CLOSED");
    assert!(r[2].as_str().unwrap().starts_with("invalid:"));

    // Binary frame and an oversized text frame: NOTICE.
    c.ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    expect_notice(c.recv_json().await);
    let big = format!(r#"["REQ","big",{{"search":"{}"}}]"#, "a".repeat(200_000));
    c.send_text(big).await;
    expect_notice(c.recv_json().await);

    // Already expired and kind 22242 over EVENT are refused.
    let expired = event(
        &k,
        1,
        now(),
        "old",
        &[&["expiration", &(now() - 10).to_string()]],
    );
    let (ok, msg) = c.publish(&expired).await;
    assert!(!ok && msg.starts_with("invalid:"), "{msg}");

    // The same connection and every other one keep working.
    assert_eq!(c.publish(&good).await, (true, String::new()));
    assert_eq!(
        bystander.req("b", vec![Filter::new().id(good.id)]).await,
        vec![good]
    );
}

#[tokio::test]
async fn frames_over_the_hard_cap_close_only_that_connection() {
    let (_tn, h) = relay(NostrWsConfig::default()).await;
    let mut bad = connect(&h.url).await;
    let mut good = connect(&h.url).await;
    let huge = "x".repeat(1024 * 1024);
    let _ = bad.ws.send(Message::Text(huge.into())).await;
    assert!(
        bad.recv_text(Duration::from_secs(5)).await.is_none(),
        "connection closed"
    );
    let e = event(&Keys::generate(), 1, now(), "fine", &[]);
    assert!(good.publish(&e).await.0);
}

#[tokio::test]
async fn floods_over_the_rate_limit_are_refused_then_recover() {
    let mut cfg = NostrWsConfig::default();
    cfg.limits.events_per_second = 5.0;
    cfg.limits.event_burst = 5;
    let (_tn, h) = relay(cfg).await;
    let mut c = connect(&h.url).await;
    let k = Keys::generate();
    let mut refused = 0;
    for i in 0..20 {
        let (ok, msg) = c
            .publish(&event(&k, 1, now(), &format!("flood {i}"), &[]))
            .await;
        if !ok {
            assert!(msg.starts_with("rate-limited:"), "{msg}");
            refused += 1;
        }
    }
    assert!(refused >= 10, "only {refused} of 20 refused");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        c.publish(&event(&k, 1, now(), "later", &[])).await.0,
        "the bucket refills"
    );
}

#[tokio::test]
async fn configured_limits_are_enforced() {
    let cfg = NostrWsConfig {
        limits: SessionLimits {
            max_subscriptions: 2,
            max_filters: 2,
            max_limit: 3,
            default_limit: 3,
            max_subid_length: 8,
            created_at_lower_limit: 3600,
            created_at_upper_limit: 60,
            ..SessionLimits::default()
        },
        ..NostrWsConfig::default()
    };
    let (_tn, h) = relay(cfg).await;
    let mut c = connect(&h.url).await;
    let k = Keys::generate();
    for i in 0..5 {
        assert!(c.publish(&event(&k, 1, now() - i, "", &[])).await.0);
    }
    assert_eq!(
        c.req("a", vec![Filter::new().limit(100)]).await.len(),
        3,
        "limit capped"
    );
    assert_eq!(
        c.req("b", vec![Filter::new()]).await.len(),
        3,
        "default limit"
    );
    let err = c.req_result("c", vec![Filter::new()]).await.unwrap_err();
    assert!(err.starts_with("blocked:"), "{err}");
    c.send_json(json!(["CLOSE", "b"])).await;
    let three = vec![Filter::new(), Filter::new(), Filter::new()];
    assert!(c
        .req_result("d", three)
        .await
        .unwrap_err()
        .starts_with("invalid:"));
    assert!(c
        .req_result("waytoolongid", vec![Filter::new()])
        .await
        .unwrap_err()
        .starts_with("invalid:"));
    let future = event(&k, 1, now() + 3600, "", &[]);
    let (ok, msg) = c.publish(&future).await;
    assert!(!ok && msg.starts_with("invalid:"), "{msg}");
    let past = event(&k, 1, now() - 7200, "", &[]);
    assert!(!c.publish(&past).await.0);
}

/// A service that lets an event in only when its author authenticated on the session.
struct AuthorMustAuthenticate;

#[async_trait]
impl Service for AuthorMustAuthenticate {
    async fn admit_event(
        &self,
        _ctx: &ServiceContext,
        origin: &Origin,
        event: &nostr::Event,
    ) -> Admission {
        if origin.authenticated == Some(event.pubkey) {
            Admission::Accept
        } else {
            Admission::Reject(Rejection::restricted(
                "only the authenticated author may publish",
            ))
        }
    }
}

#[tokio::test]
async fn nip42_auth_is_checked_and_visible_to_services() {
    let tn = TestNode::builder()
        .service("gate", Arc::new(AuthorMustAuthenticate))
        .info(NodeInfo {
            relay_url: Some("wss://relay.example.com".into()),
            ..NodeInfo::default()
        })
        .build();
    let mut cfg = NostrWsConfig::default();
    cfg.limits.auth_required = true;
    let h = start(tn.node.clone(), tn.shutdown(), cfg).await;
    let mut c = connect(&h.url).await;
    let k = Keys::generate();
    let challenge = c.challenge.clone().unwrap();
    assert!(c
        .req_result("s", vec![Filter::new()])
        .await
        .unwrap_err()
        .starts_with("auth-required:"));
    let note = event(&k, 1, now(), "hi", &[]);
    let (ok, msg) = c.publish(&note).await;
    assert!(!ok && msg.starts_with("auth-required:"), "{msg}");

    let auth = |challenge: &str, relay: &str, at: u64| {
        EventBuilder::new(Kind::from(22242), "")
            .tag(Tag::parse(["relay", relay]).unwrap())
            .tag(Tag::parse(["challenge", challenge]).unwrap())
            .custom_created_at(Timestamp::from_secs(at))
            .sign_with_keys(&k)
            .unwrap()
    };
    let send_auth = |ev: nostr::Event| json!(["AUTH", ev]);
    for (bad, why) in [
        (auth("wrong", "wss://relay.example.com", now()), "challenge"),
        (auth(&challenge, "wss://evil.example.org", now()), "relay"),
        (
            auth(&challenge, "wss://relay.example.com", now() - 3600),
            "time",
        ),
    ] {
        c.send_json(send_auth(bad)).await;
        let r = c.recv_json().await;
        assert_eq!(
            (r[0].as_str(), r[2].as_bool()),
            (Some("OK"), Some(false)),
            "{why}: {r}"
        );
    }
    // Only the configured URL counts, not the one the client dialed.
    c.send_json(send_auth(auth(&challenge, &h.url, now())))
        .await;
    let r = c.recv_json().await;
    assert_eq!(r[2], false, "{r}");
    c.send_json(send_auth(auth(
        &challenge,
        "wss://relay.example.com",
        now(),
    )))
    .await;
    let r = c.recv_json().await;
    assert_eq!(r[2], true, "{r}");
    assert_eq!(c.publish(&note).await, (true, String::new()));
    let other = event(&Keys::generate(), 1, now(), "not me", &[]);
    let (ok, msg) = c.publish(&other).await;
    assert!(
        !ok && msg.starts_with("restricted:"),
        "service sees the authenticated key: {msg}"
    );
    let conns = tn.node.connections();
    assert!(conns
        .iter()
        .any(|c| c.authenticated == Some(k.public_key().to_hex())));
}

/// An AUTH signed for another relay cannot be replayed by naming that relay
/// in the `Host` header: with no URL configured, only loopback names pass.
#[tokio::test]
async fn nip42_auth_ignores_a_forged_host_header() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;
    async fn next_json(ws: &mut Ws) -> Value {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        }
    }
    let (_tn, h) = relay(NostrWsConfig::default()).await;
    let mut req = h.url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Host", "victim-relay.example".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let first = next_json(&mut ws).await;
    assert_eq!(first[0], "AUTH");
    let challenge = first[1].as_str().unwrap().to_string();
    let k = Keys::generate();
    for (relay, accepted) in [
        ("wss://victim-relay.example", false),
        ("ws://localhost:7777", true),
    ] {
        let ev = EventBuilder::new(Kind::from(22242), "")
            .tag(Tag::parse(["relay", relay]).unwrap())
            .tag(Tag::parse(["challenge", challenge.as_str()]).unwrap())
            .sign_with_keys(&k)
            .unwrap();
        ws.send(Message::Text(json!(["AUTH", ev]).to_string().into()))
            .await
            .unwrap();
        let r = next_json(&mut ws).await;
        assert_eq!(
            (r[0].as_str(), r[2].as_bool()),
            (Some("OK"), Some(accepted)),
            "{relay}: {r}"
        );
    }
}

#[tokio::test]
async fn ping_pong_and_clean_close() {
    let (tn, h) = relay(NostrWsConfig::default()).await;
    let mut ws = h.raw().await;
    let _challenge = ws.next().await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("no pong: {other:?}"),
        }
    }
    assert_eq!(tn.node.connection_counts().get("relay"), Some(&1));
    ws.close(None).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                return true;
            }
        }
        true
    })
    .await;
    assert_eq!(end, Ok(true));
    for _ in 0..50 {
        if !tn.node.connection_counts().contains_key("relay") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("session not closed after the websocket closed");
}

/// A client that stops reading is dropped within two ping intervals even
/// when nothing is sent to it: it never answers the ping.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let cfg = NostrWsConfig {
        ping_interval_secs: 1,
        write_timeout_secs: 1,
        ..NostrWsConfig::default()
    };
    let (tn, h) = relay(cfg).await;
    let stalled = h.raw().await; // never polled again: reads nothing, answers no ping
    let mut live = connect(&h.url).await;
    assert_eq!(tn.node.connections().len(), 2);
    let started = std::time::Instant::now();
    while tn.node.connections().len() > 1 && started.elapsed() < Duration::from_secs(10) {
        // The live client keeps answering pings by reading.
        let _ = live.recv_text(Duration::from_millis(100)).await;
    }
    assert_eq!(tn.node.connections().len(), 1, "the stalled client is gone");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (ok, _) = live
        .publish(&event(&Keys::generate(), 1, now(), "still served", &[]))
        .await;
    assert!(ok);
    drop(stalled);
}

/// Connections beyond the caps are refused at once, per address and in total.
#[tokio::test]
async fn connection_caps_refuse_at_once() {
    let status_of = |r: Result<_, tokio_tungstenite::tungstenite::Error>| match r {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
    };
    let cfg = NostrWsConfig {
        max_connections_per_ip: 3,
        ..NostrWsConfig::default()
    };
    let (_tn, h) = relay(cfg).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            tokio_tungstenite::connect_async(h.url.as_str())
                .await
                .unwrap(),
        );
    }
    let refused = tokio_tungstenite::connect_async(h.url.as_str())
        .await
        .map(|_| ());
    assert_eq!(status_of(refused), 429);
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = tokio_tungstenite::connect_async(h.url.as_str())
        .await
        .map(|_| ());
    assert_eq!(status_of(again), 101, "a freed slot is reusable");

    let cfg = NostrWsConfig {
        max_connections: 2,
        max_connections_per_ip: 0,
        ..NostrWsConfig::default()
    };
    let (_tn, h) = relay(cfg).await;
    let _a = tokio_tungstenite::connect_async(h.url.as_str())
        .await
        .unwrap();
    let _b = tokio_tungstenite::connect_async(h.url.as_str())
        .await
        .unwrap();
    let refused = tokio_tungstenite::connect_async(h.url.as_str())
        .await
        .map(|_| ());
    assert_eq!(status_of(refused), 503);
}

/// Whether the server closes `s` within `within` (EOF or reset), reading and
/// discarding anything it sends.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Slowloris: connections that never finish a request are counted from
/// their first byte, so they cannot pass the per-address cap, and each is
/// closed `header_timeout_secs` after it opened, whether it sent nothing or
/// a header one byte at a time. Then the address is served again.
#[tokio::test]
async fn connections_that_never_finish_a_request_are_counted_and_closed() {
    let cfg = NostrWsConfig {
        max_connections_per_ip: 3,
        header_timeout_secs: 1,
        ..NostrWsConfig::default()
    };
    let (_tn, h) = relay(cfg).await;
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(h.addr).await.unwrap());
    }
    let mut dribbling = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    // Let the relay accept all three before the websocket tries.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The caps count them: a websocket from the same address is refused.
    let refused = tokio_tungstenite::connect_async(h.url.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429)
        }
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }

    // A header sent one byte every 200 ms is still cut off at the timeout.
    let dribble = async {
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: slow".iter() {
            if dribbling.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), dribble).await;
    assert!(
        closed_within(&mut dribbling, Duration::from_secs(2)).await,
        "a header trickling in is cut off"
    );
    for s in &mut silent {
        assert!(
            closed_within(s, Duration::from_secs(2)).await,
            "a silent connection is closed"
        );
    }

    // Their places are free again (a close is seen a moment before the
    // relay's task has let go of its place, hence the retries).
    let mut served = Vec::new();
    for _ in 0..3 {
        let mut ws = None;
        for _ in 0..20 {
            if let Ok(c) = tokio_tungstenite::connect_async(h.url.as_str()).await {
                ws = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        served.push(ws.expect("the address is served again"));
    }
}

/// Past the caps, a flood of connections is answered with the refusal
/// while few are being refused, and closed unanswered beyond that: the
/// relay keeps serving the client it admitted.
#[tokio::test]
async fn a_connection_flood_past_the_caps_does_not_pile_up() {
    let cfg = NostrWsConfig {
        max_connections: 2,
        max_connections_per_ip: 0,
        header_timeout_secs: 5,
        ..NostrWsConfig::default()
    };
    let (_tn, h) = relay(cfg).await;
    let mut admitted = connect(&h.url).await;
    let _held = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut flood = Vec::new();
    for _ in 0..500 {
        if let Ok(s) = tokio::net::TcpStream::connect(h.addr).await {
            flood.push(s);
        }
    }
    // Every one of them is answered 503 or closed at once, although none
    // of them sends a byte.
    let mut answered = 0;
    for s in &mut flood {
        let mut buf = Vec::new();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "a refused connection is not held open");
        if String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 503") {
            answered += 1;
        }
    }
    assert!(answered > 0, "refusals are answered while few are pending");
    let (ok, _) = admitted
        .publish(&event(&Keys::generate(), 1, now(), "still served", &[]))
        .await;
    assert!(ok);
}
