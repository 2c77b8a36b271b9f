//! The `nostr-sdk` crate, as an ordinary client, against a running civkitd
//! (sled store, websocket transport) over a real websocket.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use common::order;

use std::time::Duration;

use civkit_node::{components, Config, Daemon};
use nostr::{EventBuilder, Filter, Keys, Kind, Metadata};
use nostr_sdk::{Client, RelayPoolNotification};

async fn daemon(dir: &std::path::Path, extra: &str) -> (Daemon, String) {
    let cfg = format!(
        "[node]\ndata_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:0\"\n{extra}",
        dir.display()
    );
    let d = Daemon::start(&Config::from_toml(&cfg).unwrap(), &components::registry())
        .await
        .unwrap();
    let url = d.endpoint("relay").unwrap();
    (d, url)
}

async fn client(keys: &Keys, url: &str) -> Client {
    let c = Client::new(keys.clone());
    c.add_relay(url).await.unwrap();
    c.connect().await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_publishes_fetches_and_gets_live_events_after_eose() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, url) = daemon(tmp.path(), "").await;
    let maker = Keys::generate();
    let taker = Keys::generate();
    let m = client(&maker, &url).await;
    let t = client(&taker, &url).await;

    let first = EventBuilder::text_note("stored before the taker came")
        .sign_with_keys(&maker)
        .unwrap();
    let out = m.send_event(&first).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);

    let filter = Filter::new()
        .author(maker.public_key())
        .kind(Kind::TextNote);
    let stored = t
        .fetch_events(filter.clone(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        stored.into_iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![first.id]
    );

    // Live delivery after EOSE.
    let mut notes = t.notifications();
    let sub = t.subscribe(filter, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live = EventBuilder::text_note("live, after EOSE")
        .sign_with_keys(&maker)
        .unwrap();
    m.send_event(&live).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(RelayPoolNotification::Event {
                subscription_id,
                event,
                ..
            }) = notes.recv().await
            {
                if subscription_id == sub.val && event.id == live.id {
                    return *event;
                }
            }
        }
    })
    .await
    .expect("live event not delivered");
    assert_eq!(got.content, "live, after EOSE");

    // Replaceable metadata: the newer version wins.
    let meta = |name: &str, at: u64| {
        EventBuilder::metadata(&Metadata::new().name(name))
            .custom_created_at(nostr::Timestamp::from_secs(at))
            .sign_with_keys(&maker)
            .unwrap()
    };
    let now = nostr::Timestamp::now().as_secs();
    m.send_event(&meta("old", now - 10)).await.unwrap();
    m.send_event(&meta("new", now)).await.unwrap();
    let f = Filter::new()
        .author(maker.public_key())
        .kind(Kind::Metadata);
    let metas = t.fetch_events(f, Duration::from_secs(10)).await.unwrap();
    assert_eq!(metas.len(), 1);
    assert!(metas.first().unwrap().content.contains("new"));

    // NIP-09 deletion by the author.
    let del = EventBuilder::delete(nostr::nips::nip09::EventDeletionRequest::new().id(first.id))
        .sign_with_keys(&maker)
        .unwrap();
    m.send_event(&del).await.unwrap();
    let gone = t
        .fetch_events(Filter::new().id(first.id), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(gone.is_empty());

    m.shutdown().await;
    t.shutdown().await;
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_authenticates_with_nip42_when_the_relay_requires_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, url) = daemon(
        tmp.path(),
        "[transports.relay.limits]\nauth_required = true\n",
    )
    .await;
    let keys = Keys::generate();
    let c = client(&keys, &url).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let note = EventBuilder::text_note("only after AUTH")
        .sign_with_keys(&keys)
        .unwrap();
    let out = c.send_event(&note).await.unwrap();
    assert!(
        out.failed.is_empty(),
        "publish after automatic NIP-42 auth: {:?}",
        out.failed
    );
    let conns = d.node.connections();
    assert!(
        conns
            .iter()
            .any(|x| x.authenticated.as_deref() == Some(keys.public_key().to_hex().as_str())),
        "the session carries the authenticated key: {conns:?}"
    );
    let got = c
        .fetch_events(Filter::new().id(note.id), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    c.shutdown().await;
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_publishes_and_reads_orders_on_a_board() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, url) = daemon(
        tmp.path(),
        "[services.board]\ntype = \"market-board\"\ncurrencies = [\"EUR\"]\n",
    )
    .await;
    let maker = Keys::generate();
    let m = client(&maker, &url).await;
    let t = client(&Keys::generate(), &url).await;

    let good = order(&maker, "eur-1", "EUR");
    let out = m.send_event(&good).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let bad = order(&maker, "gbp-1", "GBP");
    let out = m.send_event(&bad).await.unwrap();
    let why = out.failed.values().next().cloned().unwrap_or_default();
    assert!(why.contains("restricted: currency GBP"), "{why}");

    let f = Filter::new()
        .kind(Kind::from(38383))
        .custom_tag(nostr::SingleLetterTag::lowercase(nostr::Alphabet::F), "EUR");
    let got = t.fetch_events(f, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        got.into_iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![good.id]
    );
    let policy_filter = Filter::new()
        .kind(Kind::from(10383))
        .author(d.node.keys().public_key());
    let mut policy = Vec::new();
    for _ in 0..50 {
        policy = t
            .fetch_events(policy_filter.clone(), Duration::from_secs(10))
            .await
            .unwrap()
            .into_iter()
            .collect();
        if !policy.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        policy.len(),
        1,
        "the board's policy event is readable by any client"
    );
    m.shutdown().await;
    t.shutdown().await;
    d.shutdown().await.unwrap();
}
