//! The PostgreSQL persister passes the shared persister conformance suite
//! against a real server, and holds up when two persisters (two nodes)
//! share one database.
//!
//! `bash .ci/test` starts a throwaway cluster and sets `TEST_POSTGRES_URL`;
//! each test gets a database of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::sync::Arc;

use civkit_framework::testing::conformance::events::event;
use civkit_framework::{Claim, Persister, SaveOutcome};
use civkit_postgres::testing::fresh_database;
use civkit_postgres::{PostgresConfig, PostgresPersister};
use nostr::{Filter, Keys, Timestamp};

fn open(url: &str) -> Arc<dyn Persister> {
    Arc::new(PostgresPersister::connect(url, &PostgresConfig::default()).expect("connect"))
        as Arc<dyn Persister>
}

civkit_framework::persister_conformance!(|| async {
    let url = fresh_database();
    (open(&url), ())
});

const NOW: u64 = 1_700_000_000;

#[tokio::test]
async fn two_nodes_on_one_database_converge() {
    let url = fresh_database();
    let (a, b) = (open(&url), open(&url));
    let k = Keys::generate();
    // Concurrent replacement of one address from two nodes: the newest
    // version is what both serve, whatever order the writes land in.
    let versions: Vec<_> = (0..20u64)
        .map(|i| event(&k, 30_402, NOW + i, "v", &[&["d", "order-1"]]))
        .collect();
    let mut tasks = Vec::new();
    for (i, e) in versions.iter().cloned().enumerate() {
        let p = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(
            async move { p.save_event(&e, &[]).await.unwrap() },
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let f = [Filter::new().author(k.public_key())];
    let now = Timestamp::from_secs(NOW + 100);
    for p in [&a, &b] {
        let got = p.query(&f, now).await.unwrap();
        assert_eq!(got, vec![versions[19].clone()]);
    }
    // Concurrent redemption of one credential on two nodes: exactly one wins.
    let mut tasks = Vec::new();
    for (i, p) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let e = event(&k, 1, NOW + i as u64, "spend", &[]);
        let claim = Claim {
            namespace: "credentials".into(),
            key: b"secret-1".to_vec(),
            value: b"spent".to_vec(),
        };
        tasks.push(tokio::spawn(async move {
            p.save_event(&e, &[claim]).await.unwrap()
        }));
    }
    let mut stored = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), SaveOutcome::Stored { .. }) {
            stored += 1;
        }
    }
    assert_eq!(stored, 1, "one redemption wins");
}

#[tokio::test]
async fn hostile_filter_values_are_parameters_not_sql() {
    let p = open(&fresh_database());
    let k = Keys::generate();
    let e = event(&k, 1, NOW, "x", &[&["t", "'; DROP TABLE events; --"]]);
    p.save_event(&e, &[]).await.unwrap();
    let now = Timestamp::from_secs(NOW);
    let f = [Filter::new().hashtag("'; DROP TABLE events; --")];
    assert_eq!(p.query(&f, now).await.unwrap(), vec![e.clone()]);
    let f = [Filter::new().hashtag("x' OR '1'='1")];
    assert!(p.query(&f, now).await.unwrap().is_empty());
    // A NUL in a tag value (text columns cannot hold one) is stored and
    // found like any other value.
    let nul = event(&k, 1, NOW, "nul", &[&["t", "a\u{0}b"]]);
    assert!(matches!(
        p.save_event(&nul, &[]).await.unwrap(),
        SaveOutcome::Stored { .. }
    ));
    let f = [Filter::new().hashtag("a\u{0}b")];
    assert_eq!(p.query(&f, now).await.unwrap(), vec![nul]);
    // So is an address whose `d` holds one, replaced as any other.
    let v1 = event(&k, 30_402, NOW, "v1", &[&["d", "x\u{0}y"]]);
    let v2 = event(&k, 30_402, NOW + 1, "v2", &[&["d", "x\u{0}y"]]);
    p.save_event(&v1, &[]).await.unwrap();
    p.save_event(&v2, &[]).await.unwrap();
    let f = [Filter::new().kind(nostr::Kind::from(30_402))];
    assert_eq!(p.query(&f, now).await.unwrap(), vec![v2]);
    // A value repeated in one event: that event is one result.
    let twice = event(&k, 1, NOW + 5, "twice", &[&["t", "dup"], &["t", "dup"]]);
    p.save_event(&twice, &[]).await.unwrap();
    let f = [Filter::new().hashtag("dup").limit(10)];
    assert_eq!(p.query(&f, now).await.unwrap(), vec![twice]);
    assert_eq!(p.count(&f, now).await.unwrap(), 1);
    // Nothing of the hostile values ran as SQL: all four events are there.
    assert_eq!(p.stats().await.unwrap().events, 4);
    // Key-value prefixes are bytes, not LIKE patterns.
    p.kv_put("svc", b"a%b", b"1").await.unwrap();
    p.kv_put("svc", b"axb", b"2").await.unwrap();
    assert_eq!(p.kv_scan("svc", b"a%").await.unwrap().len(), 1);
}

#[tokio::test]
async fn peer_events_survive_a_cut_notification_connection() {
    let url = fresh_database();
    let (a, b) = (open(&url), open(&url));
    let mut from_a = b.peer_events().expect("a shared store has peer events");
    let mut own = a.peer_events().expect("a shared store has peer events");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let k = Keys::generate();
    let first = event(&k, 1, NOW, "before the cut", &[]);
    a.save_event(&first, &[]).await.unwrap();
    assert_eq!(recv(&mut from_a).await.id, first.id);

    // Cut every listener's connection, and store while they are down.
    let admin = url.clone();
    let cut = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        c.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&civkit_postgres::listen::APPLICATION_NAME],
        )
        .unwrap()
        .len()
    })
    .join()
    .unwrap();
    assert_eq!(cut, 2, "both listeners were connected");
    let during: Vec<_> = (1..=3u64)
        .map(|i| event(&k, 1, NOW + i, "during the cut", &[]))
        .collect();
    for e in &during {
        a.save_event(e, &[]).await.unwrap();
    }
    // Caught up after the reconnect, in commit order, each once.
    for e in &during {
        assert_eq!(recv(&mut from_a).await.id, e.id);
    }
    let after = event(&Keys::generate(), 1, NOW, "from b", &[]);
    b.save_event(&after, &[]).await.unwrap();
    // A node never gets its own events back; A sees B's.
    assert_eq!(recv(&mut own).await.id, after.id);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(from_a.try_recv().is_err(), "nothing delivered twice");
    assert!(own.try_recv().is_err(), "nothing delivered twice");
}

async fn recv(rx: &mut tokio::sync::mpsc::Receiver<nostr::Event>) -> nostr::Event {
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("no peer event within 10 s")
        .expect("the listener stopped")
}

#[tokio::test]
async fn the_board_lease_is_held_by_one_node_and_moves_when_it_lapses() {
    let url = fresh_database();
    let (a, b) = (open(&url), open(&url));
    let ttl = std::time::Duration::from_millis(800);
    assert!(a.hold_lease("board", ttl).await.unwrap());
    assert!(!b.hold_lease("board", ttl).await.unwrap(), "one holder");
    assert!(
        a.hold_lease("board", ttl).await.unwrap(),
        "the holder renews"
    );
    // Another lease is independent.
    assert!(b.hold_lease("other", ttl).await.unwrap());
    // A stops renewing (as a killed node does): B takes it once it lapses.
    let start = std::time::Instant::now();
    while !b.hold_lease("board", ttl).await.unwrap() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "the lease never moved"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(500),
        "not before it lapsed"
    );
    assert!(!a.hold_lease("board", ttl).await.unwrap(), "A lost it");
}

/// A write that the database refuses (here a trigger plays a failing disk or
/// a constraint) fails alone: the writes grouped with it commit, each is
/// answered, and the refused one leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_database_refuses_fails_alone_in_its_group() {
    let url = fresh_database();
    drop(open(&url)); // applies the schema
    sql(&url, |c| {
        c.batch_execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$
             BEGIN
               IF NEW.json LIKE '%poison%' THEN RAISE EXCEPTION 'refused'; END IF;
               RETURN NEW;
             END $$ LANGUAGE plpgsql;
             CREATE TRIGGER refuse_poison BEFORE INSERT ON events
               FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
        )
        .unwrap()
    });
    let p = open(&url);
    let k = Keys::generate();
    let events: Vec<_> = (0..40u64)
        .map(|i| {
            let text = if i == 17 { "poison" } else { "fine" };
            event(&k, 1, NOW + i, text, &[&["t", "group"]])
        })
        .collect();
    // All at once, so that they share groups.
    let tasks: Vec<_> = events
        .iter()
        .cloned()
        .map(|e| {
            let p = p.clone();
            tokio::spawn(async move { p.save_event(&e, &[]).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        if i == 17 {
            assert!(r.is_err(), "the refused write was answered {r:?}");
        } else {
            assert!(matches!(r, Ok(SaveOutcome::Stored { .. })), "{i}: {r:?}");
        }
    }
    let f = [Filter::new().hashtag("group").limit(100)];
    let got = p.query(&f, Timestamp::from_secs(NOW + 100)).await.unwrap();
    assert_eq!(got.len(), 39);
    assert!(got.iter().all(|e| e.content == "fine"));
    assert!(!p.event_exists(&events[17].id).await.unwrap());
    // The tag row of the refused event did not stay either.
    let tags: i64 = sql(&url, |c| {
        c.query_one("SELECT count(*) FROM tags", &[])
            .unwrap()
            .get(0)
    });
    assert_eq!(tags, 39);
}

/// Run `f` on a connection of its own, off the async runtime (the
/// `postgres` client blocks).
fn sql<T: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_string();
    std::thread::spawn(move || f(&mut postgres::Client::connect(&url, postgres::NoTls).unwrap()))
        .join()
        .unwrap()
}

/// A database a node of schema 1 left (tag rows without the event id) is
/// upgraded at open, and its tag queries answer as before, in NIP-01 order.
#[tokio::test]
async fn a_schema_1_database_is_upgraded_and_its_tags_still_answer() {
    let url = civkit_postgres::testing::database_at_schema(1);
    let k = Keys::generate();
    // Three events of one second under one tag, written as schema 1 did.
    let events: Vec<_> = (0..3)
        .map(|i| event(&k, 1, NOW, &format!("n{i}"), &[&["t", "old"]]))
        .collect();
    let rows = events.clone();
    sql(&url, move |c| {
        for e in &rows {
            let seq: i64 = c
                .query_one(
                    "INSERT INTO events (id, pubkey, kind, created_at, json, node)
                     VALUES ($1, $2, 1, $3, $4, 0) RETURNING seq",
                    &[
                        &e.id.as_bytes().as_slice(),
                        &e.pubkey.to_bytes().as_slice(),
                        &(NOW as i64),
                        &nostr::JsonUtil::as_json(e),
                    ],
                )
                .unwrap()
                .get(0);
            c.execute(
                "INSERT INTO tags (seq, letter, value, created_at) VALUES ($1, 't', 'old', $2)",
                &[&seq, &(NOW as i64)],
            )
            .unwrap();
        }
    });
    let p = open(&url);
    let f = [Filter::new().hashtag("old").limit(2)];
    let got = p.query(&f, Timestamp::from_secs(NOW + 1)).await.unwrap();
    let mut want: Vec<_> = events.iter().map(|e| e.id).collect();
    want.sort();
    assert_eq!(
        got.iter().map(|e| e.id).collect::<Vec<_>>(),
        want[..2].to_vec(),
        "newest first, then lowest id"
    );
}
