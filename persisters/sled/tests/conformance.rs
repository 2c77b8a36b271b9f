//! The embedded persister, on LMDB and on sled, passes the shared persister
//! conformance suite, and keeps what it acknowledged across a reopen.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::sync::Arc;

use civkit_framework::testing::conformance::events::event;
use civkit_framework::{Persister, SaveOutcome};
use civkit_sled::{LmdbPersister, SledPersister};
use nostr::{Filter, Keys, Timestamp};

mod lmdb {
    use super::*;
    civkit_framework::persister_conformance!(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = LmdbPersister::open(&dir.path().join("db")).expect("open lmdb");
        (Arc::new(p) as Arc<dyn Persister>, dir)
    });

    #[tokio::test]
    async fn acknowledged_writes_survive_reopen() {
        super::acknowledged_writes_survive_reopen(|p| {
            Arc::new(LmdbPersister::open(p).unwrap()) as Arc<dyn Persister>
        })
        .await;
    }
}

mod sled {
    use super::*;
    civkit_framework::persister_conformance!(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = SledPersister::open(&dir.path().join("db")).expect("open sled");
        (Arc::new(p) as Arc<dyn Persister>, dir)
    });

    #[tokio::test]
    async fn acknowledged_writes_survive_reopen() {
        super::acknowledged_writes_survive_reopen(|p| {
            Arc::new(SledPersister::open(p).unwrap()) as Arc<dyn Persister>
        })
        .await;
    }
}

async fn acknowledged_writes_survive_reopen(open: impl Fn(&std::path::Path) -> Arc<dyn Persister>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let k = Keys::generate();
    let now = Timestamp::now().as_secs();
    let events: Vec<_> = (0..50)
        .map(|i| event(&k, 1, now - i, "x", &[&["t", "tag"]]))
        .collect();
    {
        let p = open(&path);
        let mut tasks = Vec::new();
        for e in events.clone() {
            let p = p.clone();
            tasks.push(tokio::spawn(
                async move { p.save_event(&e, &[]).await.unwrap() },
            ));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), SaveOutcome::Stored { .. }));
        }
        p.kv_put("svc", b"k", b"v").await.unwrap();
    }
    let p = open(&path);
    assert_eq!(p.stats().await.unwrap().events, 50);
    let got = p
        .query(&[Filter::new().hashtag("tag")], Timestamp::from_secs(now))
        .await
        .unwrap();
    assert_eq!(got.len(), 50);
    assert_eq!(got[0].id, events[0].id, "newest first");
    assert_eq!(p.kv_get("svc", b"k").await.unwrap(), Some(b"v".to_vec()));
    assert!(
        p.kv_get("BAD NS", b"k").await.is_err(),
        "namespaces outside the alphabet are refused"
    );
}

#[tokio::test]
async fn queries_hand_back_the_stored_json() {
    let dir = tempfile::tempdir().unwrap();
    for p in [
        Arc::new(LmdbPersister::open(&dir.path().join("l")).unwrap()) as Arc<dyn Persister>,
        Arc::new(SledPersister::open(&dir.path().join("s")).unwrap()),
    ] {
        let k = Keys::generate();
        let now = Timestamp::now().as_secs();
        let e = event(&k, 1, now, "as stored \"quoted\" ünïcode", &[&["t", "x"]]);
        p.save_event(&e, &[]).await.unwrap();
        let got = p
            .query_stored(
                &[Filter::new().author(k.public_key())],
                Timestamp::from_secs(now),
            )
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event().unwrap(), &e);
        assert_eq!(got[0].json(), nostr::JsonUtil::as_json(&e));
    }
}
