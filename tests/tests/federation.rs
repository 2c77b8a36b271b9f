//! Boards federate over BOLT8: a line A-B-C and a ring, with nostr-sdk as
//! the maker and the taker on the websocket side.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use common::order;

use std::time::Duration;

use civkit_node::{components, Config, Daemon};
use nostr::{Filter, Keys, Kind};
use nostr_sdk::Client;
use serde_json::Value;

struct Board {
    daemon: Daemon,
    ws: String,
    ln: String,
}

async fn board(dir: &std::path::Path, import_from: &[&str]) -> Board {
    board_on(dir, import_from, 0).await
}

async fn board_on(dir: &std::path::Path, import_from: &[&str], ln_port: u16) -> Board {
    let mut cfg = format!(
        "[node]\ndata_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:0\"\n\
         [services.board]\ntype = \"market-board\"\n\
         [transports.ln]\ntype = \"bolt8\"\nlisten = \"127.0.0.1:{ln_port}\"\nredial_max_secs = 2\nstranger_export = [{{}}]\n",
        dir.display()
    );
    for peer in import_from {
        cfg.push_str(&format!(
            "[[transports.ln.peers]]\naddress = \"{peer}\"\nimport = [{{ kinds = [38383] }}]\n"
        ));
    }
    let daemon = Daemon::start(&Config::from_toml(&cfg).unwrap(), &components::registry())
        .await
        .unwrap();
    let ws = daemon.endpoint("relay").unwrap();
    let ln = daemon
        .endpoint("ln")
        .unwrap()
        .trim_start_matches("ln://")
        .to_string();
    Board { daemon, ws, ln }
}

async fn client(url: &str) -> Client {
    let c = Client::new(Keys::generate());
    c.add_relay(url).await.unwrap();
    c.connect().await;
    c
}

async fn wait_peers(b: &Board, n: usize) {
    for _ in 0..200 {
        let list = b
            .daemon
            .node
            .control("ln", "list", Value::Null)
            .await
            .unwrap();
        let connected = list["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["connected"] == true)
            .count();
        if connected >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("peers did not connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_posted_at_a_reaches_a_websocket_subscriber_at_c() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = board(dirs[0].path(), &[]).await;
    let b = board(dirs[1].path(), &[&a.ln]).await;
    let c = board(dirs[2].path(), &[&b.ln]).await;
    wait_peers(&c, 1).await;
    wait_peers(&b, 2).await;

    let taker = client(&c.ws).await;
    let mut notes = taker.notifications();
    let sub = taker
        .subscribe(Filter::new().kind(Kind::from(38383)), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let maker_keys = Keys::generate();
    let maker = client(&a.ws).await;
    let o = order(&maker_keys, "line-1", "EUR");
    assert!(maker.send_event(&o).await.unwrap().failed.is_empty());

    let got = common::wait_for_event(&mut notes, &sub.val, o.id, Duration::from_secs(15))
        .await
        .expect("the order did not reach C");
    assert_eq!(got.id, o.id);

    let stats = b
        .daemon
        .node
        .control("ln", "list", Value::Null)
        .await
        .unwrap();
    let peers = stats["peers"].as_array().unwrap();
    assert!(
        peers
            .iter()
            .any(|p| p["events_imported"].as_u64() >= Some(1)),
        "B imported from A: {stats}"
    );
    assert!(
        peers
            .iter()
            .any(|p| p["events_exported"].as_u64() >= Some(1)),
        "B exported to C: {stats}"
    );

    for d in [a.daemon, b.daemon, c.daemon] {
        d.shutdown().await.unwrap();
    }
    maker.shutdown().await;
    taker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_boards_does_not_loop_and_identity_survives_restart() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = board(dirs[0].path(), &[]).await;
    let b = board(dirs[1].path(), &[&a.ln]).await;
    let c = board(dirs[2].path(), &[&b.ln]).await;
    // Close the ring: A imports from C. Restart A with the same data dir.
    let a_id = a.ln.split('@').next().unwrap().to_string();
    a.daemon.shutdown().await.unwrap();
    let a = board(dirs[0].path(), &[&c.ln]).await;
    assert_eq!(
        a.ln.split('@').next().unwrap(),
        a_id,
        "the node id survives a restart"
    );
    // B redials A at its new port? No: B dials the old address; give B the new one.
    let r = b
        .daemon
        .node
        .control("ln", "connect", serde_json::json!({ "address": a.ln }))
        .await
        .unwrap();
    assert_eq!(r["connected"], true, "{r}");
    wait_peers(&a, 1).await;

    let maker = client(&a.ws).await;
    let o = order(&Keys::generate(), "ring-1", "EUR");
    assert!(maker.send_event(&o).await.unwrap().failed.is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, board) in [("A", &a), ("B", &b), ("C", &c)] {
        let n = board
            .daemon
            .node
            .persister()
            .count(&[Filter::new().id(o.id)], board.daemon.node.now())
            .await
            .unwrap();
        assert_eq!(n, 1, "board {name} holds the order once");
    }
    let total_imported: u64 = {
        let mut t = 0;
        for board in [&a, &b, &c] {
            let list = board
                .daemon
                .node
                .control("ln", "list", Value::Null)
                .await
                .unwrap();
            t += list["peers"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["events_imported"].as_u64())
                .sum::<u64>();
        }
        t
    };
    assert!(
        total_imported <= 2,
        "the ring settles (duplicates dropped by id), imported {total_imported}"
    );

    let r = a
        .daemon
        .node
        .control(
            "ln",
            "disconnect",
            serde_json::json!({ "node_id": c.ln.split('@').next().unwrap() }),
        )
        .await
        .unwrap();
    assert_eq!(r["was_connected"], true, "{r}");
    maker.shutdown().await;
    for d in [a.daemon, b.daemon, c.daemon] {
        d.shutdown().await.unwrap();
    }
}

async fn connected_to(b: &Board, id: &str) -> bool {
    let list = b
        .daemon
        .node
        .control("ln", "list", Value::Null)
        .await
        .unwrap();
    list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["node_id"] == id && p["connected"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_peer_is_redialed_and_the_policy_names_the_lightning_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = board_on(da.path(), &[], port).await;
    let a_id = a.ln.split('@').next().unwrap().to_string();
    let b = board(db.path(), &[&a.ln]).await;
    wait_peers(&b, 1).await;

    // A's policy event lists its Lightning address.
    let mut content = Value::Null;
    for _ in 0..100 {
        let policy = a
            .daemon
            .node
            .persister()
            .query(
                &[Filter::new().kind(Kind::from(10383))],
                a.daemon.node.now(),
            )
            .await
            .unwrap();
        if let Some(e) = policy.first() {
            content = serde_json::from_str(&e.content).unwrap();
            if content["endpoints"]["lightning"][0] == a.ln.as_str() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        content["endpoints"]["lightning"][0],
        a.ln.as_str(),
        "{content}"
    );
    assert_eq!(
        content["endpoints"]["websocket"][0],
        a.ws.as_str(),
        "{content}"
    );

    a.daemon.shutdown().await.unwrap();
    for _ in 0..100 {
        if !connected_to(&b, &a_id).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!connected_to(&b, &a_id).await, "B saw A go away");
    let a = board_on(da.path(), &[], port).await;
    let mut back = false;
    for _ in 0..200 {
        if connected_to(&b, &a_id).await {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "B redialed A by itself after A came back");
    a.daemon.shutdown().await.unwrap();
    b.daemon.shutdown().await.unwrap();
}
