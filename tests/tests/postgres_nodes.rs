//! Several civkitd nodes on one PostgreSQL database serve one board: an
//! event accepted on one node reaches live subscribers on the others, once,
//! and ephemeral events cross too. nostr-sdk is the client on both sides.
//! Needs the test server of `bash .ci/test`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::time::Duration;

use civkit_node::{components, Config, Daemon};
use nostr::{EventBuilder, Filter, Keys, Kind};
use nostr_sdk::{Client, RelayPoolNotification};

async fn node(dir: &std::path::Path, url: &str) -> (Daemon, String) {
    let cfg = format!(
        "[node]\ndata_dir = \"{}\"\nlease_ttl_secs = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [persister]\ntype = \"postgres\"\nurl = \"{url}\"\n\
         [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:0\"\nauth_challenge = false\n",
        dir.display()
    );
    let daemon = Daemon::start(&Config::from_toml(&cfg).unwrap(), &components::registry())
        .await
        .unwrap();
    let ws = daemon.endpoint("relay").unwrap();
    (daemon, ws)
}

async fn client(url: &str) -> Client {
    let c = Client::new(Keys::generate());
    c.add_relay(url).await.unwrap();
    c.connect().await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_accepted_on_one_node_reaches_subscribers_on_the_others_once() {
    let url = civkit_postgres::testing::fresh_database();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, a_ws) = node(dirs[0].path(), &url).await;
    let (b, b_ws) = node(dirs[1].path(), &url).await;
    let (c, c_ws) = node(dirs[2].path(), &url).await;

    let maker_keys = Keys::generate();
    let filter = Filter::new().author(maker_keys.public_key());
    let mut takers = Vec::new();
    for ws in [&b_ws, &c_ws, &a_ws] {
        let t = client(ws).await;
        let notes = t.notifications();
        let sub = t.subscribe(filter.clone(), None).await.unwrap();
        takers.push((t, notes, sub.val));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let maker = client(&a_ws).await;
    let stored = EventBuilder::text_note("on node A")
        .sign_with_keys(&maker_keys)
        .unwrap();
    let ephemeral = EventBuilder::new(Kind::from(20_001), "passing through")
        .sign_with_keys(&maker_keys)
        .unwrap();
    for e in [&stored, &ephemeral] {
        assert!(maker.send_event(e).await.unwrap().failed.is_empty());
    }

    for (_, notes, sub) in &mut takers {
        for e in [&stored, &ephemeral] {
            let got = common::wait_for_event(notes, sub, e.id, Duration::from_secs(10))
                .await
                .expect("the event did not reach a node's subscriber");
            assert_eq!(got.id, e.id);
        }
    }
    // Once each: nothing more arrives for these ids.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (_, notes, _) in &mut takers {
        while let Ok(n) = notes.try_recv() {
            if let RelayPoolNotification::Event { event, .. } = n {
                assert!(
                    event.id != stored.id && event.id != ephemeral.id,
                    "delivered twice"
                );
            }
        }
    }
    // And the stored event is in the one store, on every node.
    for ws in [&b_ws, &c_ws] {
        let t = client(ws).await;
        let got = t
            .fetch_events(filter.clone(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        t.shutdown().await;
    }

    maker.shutdown().await;
    for (t, _, _) in takers {
        t.shutdown().await;
    }
    for d in [a, b, c] {
        d.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_does_the_board_work_and_another_takes_over_when_it_dies() {
    let url = civkit_postgres::testing::fresh_database();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, _) = node(dirs[0].path(), &url).await;
    let (b, _) = node(dirs[1].path(), &url).await;
    let leaders = |a: &Daemon, b: &Daemon| [a.node.is_leader(), b.node.is_leader()];
    let start = std::time::Instant::now();
    while leaders(&a, &b).iter().filter(|l| **l).count() != 1 {
        assert!(start.elapsed() < Duration::from_secs(5), "no single leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Never two at once, over a few renewals.
    for _ in 0..30 {
        assert!(
            leaders(&a, &b).iter().filter(|l| **l).count() <= 1,
            "two leaders"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (leader, follower) = if a.node.is_leader() { (a, b) } else { (b, a) };
    // The leader goes away without releasing the lease, as a killed node
    // does; within the lease (1 s) and a renewal, the other node leads.
    leader.shutdown().await.unwrap();
    let gone = std::time::Instant::now();
    while !follower.node.is_leader() {
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "the work did not move"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the lease moved {} ms after the leader stopped",
        gone.elapsed().as_millis()
    );
    follower.shutdown().await.unwrap();
}
