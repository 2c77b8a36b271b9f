//! The node pipeline as a client sees it, through the memory transport.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use civkit_framework::testing::conformance::events::event;
use civkit_framework::testing::{MemoryPersister, TestClient, TestNode, WireClient};
use civkit_framework::{
    Admission, NodeBuilder, Origin, Outgoing, Rejection, Service, ServiceContext, SessionLimits,
    Source,
};
use nostr::{Event, Filter, Keys, Kind, Timestamp};
use serde_json::json;

fn now() -> u64 {
    Timestamp::now().as_secs()
}

#[tokio::test]
async fn ephemeral_events_are_delivered_live_but_never_stored() {
    let tn = TestNode::new();
    let mut sub = tn.client().await;
    let mut pubr = tn.client().await;
    let k = Keys::generate();
    sub.req("live", vec![Filter::new().kind(Kind::from(20_001))])
        .await;
    let e = event(&k, 20_001, now(), "typing...", &[]);
    assert_eq!(pubr.publish(&e).await, (true, String::new()));
    assert_eq!(
        sub.next_event("live", Duration::from_secs(5)).await,
        Some(e.clone())
    );
    assert!(sub
        .req("history", vec![Filter::new().kind(Kind::from(20_001))])
        .await
        .is_empty());
    let (ok, msg) = pubr.publish(&e).await;
    assert!(ok && msg.starts_with("duplicate:"), "{msg}");
}

#[tokio::test]
async fn expiration_is_enforced_with_the_node_clock() {
    let tn = TestNode::new();
    let mut c = tn.client().await;
    let k = Keys::generate();
    let exp = now() + 60;
    let e = event(
        &k,
        1,
        now(),
        "soon gone",
        &[&["expiration", &exp.to_string()]],
    );
    assert!(c.publish(&e).await.0);
    assert_eq!(c.req("a", vec![Filter::new().id(e.id)]).await.len(), 1);
    tn.clock.advance(61);
    assert!(
        c.req("b", vec![Filter::new().id(e.id)]).await.is_empty(),
        "never served once expired"
    );
    c.send_json(json!(["COUNT", "c", {"ids": [e.id]}])).await;
    assert_eq!(c.recv_json().await[2]["count"], 0);
    let stale = event(
        &k,
        1,
        now(),
        "already expired",
        &[&["expiration", &(now() + 30).to_string()]],
    );
    let (ok, msg) = c.publish(&stale).await;
    assert!(!ok && msg.starts_with("invalid:"), "{msg}");
    // The node's own sweeper may have run already; either way a sweep leaves
    // the expired event gone from the store.
    let p = tn.node.persister();
    p.remove_expired(tn.node.now()).await.unwrap();
    assert!(
        !p.event_exists(&e.id).await.unwrap(),
        "swept from the store"
    );
}

#[tokio::test]
async fn auth_kind_over_event_is_refused() {
    let tn = TestNode::new();
    let mut c = tn.client().await;
    let (ok, msg) = c
        .publish(&event(&Keys::generate(), 22242, now(), "", &[]))
        .await;
    assert!(!ok && msg.starts_with("invalid:"), "{msg}");
}

/// Records what it sees, rejects content "no".
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Service for Recorder {
    async fn admit_event(&self, _c: &ServiceContext, _o: &Origin, e: &Event) -> Admission {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:admit", self.name));
        if e.content == "no" {
            return Admission::Reject(Rejection::restricted(format!("{} says no", self.name)));
        }
        Admission::Accept
    }
    async fn admit_query(&self, _c: &ServiceContext, _o: &Origin, f: &[Filter]) -> Admission {
        if f.iter().any(|f| {
            f.kinds
                .as_ref()
                .is_some_and(|k| k.contains(&Kind::from(666)))
        }) {
            return Admission::Reject(Rejection::blocked("kind 666 is not served"));
        }
        Admission::Accept
    }
    async fn on_stored(&self, ctx: &ServiceContext, _o: &Origin, e: &Event) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:stored", self.name));
        if e.content == "count me" {
            let n = ctx.kv_get(b"n").await.unwrap().map_or(0, |v| v[0]);
            ctx.kv_put(b"n", &[n + 1]).await.unwrap();
        }
    }
}

#[tokio::test]
async fn admission_chain_runs_in_order_and_hooks_after_storage() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let tn = TestNode::builder()
        .service(
            "first",
            Arc::new(Recorder {
                name: "first",
                log: log.clone(),
            }),
        )
        .service(
            "second",
            Arc::new(Recorder {
                name: "second",
                log: log.clone(),
            }),
        )
        .build();
    let mut c = tn.client().await;
    let k = Keys::generate();
    let (ok, msg) = c.publish(&event(&k, 1, now(), "no", &[])).await;
    assert_eq!((ok, msg.as_str()), (false, "restricted: first says no"));
    assert_eq!(
        *log.lock().unwrap(),
        vec!["first:admit"],
        "the first rejection stops the chain"
    );
    log.lock().unwrap().clear();
    assert!(c.publish(&event(&k, 1, now(), "count me", &[])).await.0);
    // Hooks run after the OK; give them a moment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "first:admit",
            "second:admit",
            "first:stored",
            "second:stored"
        ]
    );
    let p = tn.node.persister();
    assert_eq!(p.kv_get("first", b"n").await.unwrap(), Some(vec![1]));
    assert_eq!(
        p.kv_get("second", b"n").await.unwrap(),
        Some(vec![1]),
        "each service has its own namespace"
    );
    let err = c
        .req_result("q", vec![Filter::new().kind(Kind::from(666))])
        .await
        .unwrap_err();
    assert_eq!(err, "blocked: kind 666 is not served");
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_disconnected_not_the_node() {
    let node = NodeBuilder::new(Arc::new(MemoryPersister::new()), Keys::generate())
        .outbox_capacity(16)
        .build();
    let limits = SessionLimits {
        max_limit: 0,
        ..SessionLimits::default()
    };
    let (mut slow, mut slow_out) = node.open_session(
        Origin::new("mem", Source::Memory { client: 1 }),
        limits.clone(),
    );
    slow.handle_text(r#"["REQ","all",{}]"#).await;
    let (mut fast, mut fast_out) =
        node.open_session(Origin::new("mem", Source::Memory { client: 2 }), limits);
    let k = Keys::generate();
    for i in 0..40 {
        let e = event(&k, 1, now(), &format!("{i}"), &[]);
        fast.handle_text(&json!(["EVENT", e]).to_string()).await;
        assert!(matches!(fast_out.next().await, Some(Outgoing::Message(m)) if m.contains("true")));
    }
    let mut kicked = false;
    while let Some(o) = tokio::time::timeout(Duration::from_millis(100), slow_out.next())
        .await
        .ok()
        .flatten()
    {
        if o == Outgoing::Kick {
            kicked = true;
            break;
        }
    }
    assert!(kicked, "the slow subscriber is asked to disconnect");
    assert_eq!(
        node.persister().stats().await.unwrap().events,
        40,
        "nothing accepted is lost"
    );
}

#[tokio::test]
async fn memory_client_sees_the_same_answers() {
    let tn = TestNode::new();
    let mut c = tn.client().await;
    c.send_text(r#"["CLOSE"]"#.into()).await;
    assert_eq!(c.recv_json().await[0], "NOTICE");
}

/// A client that pipelines: every EVENT gets its OK (in any order), and a
/// REQ sent after them is answered only once they are stored.
async fn pipeline_of(events_in_flight: usize) {
    let tn = TestNode::builder()
        .limits(SessionLimits {
            events_in_flight,
            ..SessionLimits::default()
        })
        .build();
    let mut c = tn.client().await;
    let k = Keys::generate();
    let sent: Vec<Event> = (0..100)
        .map(|i| event(&k, 1, now() - i, &format!("pipelined {i}"), &[]))
        .collect();
    for e in &sent {
        c.send_json(json!(["EVENT", e])).await;
    }
    c.send_json(json!(["REQ", "after", {"authors": [k.public_key()], "limit": 500}]))
        .await;
    let mut oks = std::collections::HashSet::new();
    let mut served = 0;
    loop {
        let m = c.recv_json().await;
        match m[0].as_str() {
            Some("OK") => {
                assert_eq!(m[2], true, "{m}");
                assert_eq!(served, 0, "an OK after the REQ's answer began: {m}");
                assert!(
                    oks.insert(m[1].as_str().unwrap().to_string()),
                    "two OKs for {m}"
                );
            }
            Some("EVENT") => served += 1,
            Some("EOSE") => break,
            _ => panic!("unexpected {m}"),
        }
    }
    assert_eq!(oks.len(), sent.len());
    assert_eq!(
        served,
        sent.len(),
        "the REQ sees every EVENT sent before it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_events_all_get_their_ok_before_a_later_req() {
    pipeline_of(8).await;
    pipeline_of(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_events_in_flight_from_config_is_clamped_not_a_panic() {
    // Semaphore::new panics above its maximum; the session clamps to 4,096.
    pipeline_of(usize::MAX).await;
}
