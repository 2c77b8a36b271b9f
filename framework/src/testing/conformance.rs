//! Conformance suites that every Persister and every Transport runs.
//!
//! ```ignore
//! civkit_framework::persister_conformance!(|| async {
//!     let dir = tempfile::tempdir().unwrap();
//!     (Arc::new(SledPersister::open(dir.path()).unwrap()) as Arc<dyn Persister>, dir)
//! });
//! civkit_framework::transport_conformance!(|node, shutdown| async move { start_my_transport(node, shutdown).await });
//! ```

use async_trait::async_trait;

use super::TestClient;

/// How a transport suite opens client connections.
#[async_trait]
pub trait TransportHarness: Send + Sync {
    /// A new client connection through the transport under test.
    async fn connect(&self) -> Box<dyn TestClient>;
}

#[async_trait]
impl TransportHarness for super::MemoryHub {
    async fn connect(&self) -> Box<dyn TestClient> {
        Box::new(super::MemoryHub::connect(self).await)
    }
}

/// Run the persister suite. `$make` is a closure returning a future of
/// `(Arc<dyn Persister>, guard)`; the guard lives as long as the test.
#[macro_export]
macro_rules! persister_conformance {
    ($make:expr) => {
        $crate::__conformance_cases!(persister, $make;
            duplicate_save, filter_fields, tag_filters, since_until_inclusive,
            limit_newest_first_ties_lowest_id, filters_are_ored, replaceable_keeps_newest,
            addressable_keyed_by_d, deletion_by_id, deletion_by_address,
            deletion_only_by_author, expiry, kv_namespaces, operator_delete_and_stats,
            claims_with_events, concurrent_claims_one_wins, export_then_import_moves_everything);
    };
}

/// Run the transport suite. `$make` is a closure `(Node, Shutdown)` returning
/// a future of something implementing [`TransportHarness`].
#[macro_export]
macro_rules! transport_conformance {
    ($make:expr) => {
        $crate::__conformance_cases!(transport, $make;
            publish_then_query, live_delivery_after_eose, close_stops_delivery,
            garbage_keeps_connection, count_matches, replaces_subscription_with_same_id);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    (persister, $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (persister, _guard) = ($make)().await;
                $crate::testing::conformance::persister::$case(persister).await;
            }
        )*
    };
    (transport, $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let test_node = $crate::testing::TestNode::new();
                let harness = ($make)(test_node.node.clone(), test_node.shutdown()).await;
                $crate::testing::conformance::transport::$case(&test_node, &harness).await;
            }
        )*
    };
}

/// Shared builders for test events.
pub mod events {
    use nostr::{Event, EventBuilder, Keys, Kind, Tag, Timestamp};

    /// A signed event of `kind` at `created_at` with `tags` (each a list of strings).
    pub fn event(
        keys: &Keys,
        kind: u16,
        created_at: u64,
        content: &str,
        tags: &[&[&str]],
    ) -> Event {
        let tags = tags
            .iter()
            .map(|t| Tag::parse(t.iter().copied()).expect("test tag"));
        EventBuilder::new(Kind::from(kind), content)
            .tags(tags)
            .custom_created_at(Timestamp::from_secs(created_at))
            .sign_with_keys(keys)
            .expect("signing a test event")
    }
}

/// The persister cases.
pub mod persister {
    use std::sync::Arc;

    use nostr::{Event, EventId, Filter, Keys, Kind, Timestamp};

    use super::events::event;
    use crate::{Claim, Persister, SaveOutcome};

    const NOW: u64 = 1_700_000_000;

    async fn save(p: &Arc<dyn Persister>, e: &Event) -> SaveOutcome {
        p.save_event(e, &[]).await.expect("save_event failed")
    }
    fn claim(ns: &str, key: &[u8], value: &[u8]) -> Claim {
        Claim {
            namespace: ns.into(),
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }
    async fn store(p: &Arc<dyn Persister>, e: &Event) {
        assert!(
            matches!(save(p, e).await, SaveOutcome::Stored { .. }),
            "event not stored"
        );
    }
    async fn ids(p: &Arc<dyn Persister>, filters: Vec<Filter>) -> Vec<EventId> {
        p.query(&filters, Timestamp::from_secs(NOW))
            .await
            .expect("query failed")
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    pub async fn duplicate_save(p: Arc<dyn Persister>) {
        let e = event(&Keys::generate(), 1, NOW, "a", &[]);
        store(&p, &e).await;
        assert_eq!(save(&p, &e).await, SaveOutcome::Duplicate);
        assert!(p.event_exists(&e.id).await.unwrap());
        assert_eq!(ids(&p, vec![Filter::new()]).await, vec![e.id]);
    }

    pub async fn filter_fields(p: Arc<dyn Persister>) {
        let (a, b) = (Keys::generate(), Keys::generate());
        let a1 = event(&a, 1, NOW - 3, "a1", &[]);
        let a7 = event(&a, 7, NOW - 2, "a7", &[]);
        let b1 = event(&b, 1, NOW - 1, "b1", &[]);
        for e in [&a1, &a7, &b1] {
            store(&p, e).await;
        }
        assert_eq!(ids(&p, vec![Filter::new().id(a7.id)]).await, vec![a7.id]);
        assert_eq!(
            ids(&p, vec![Filter::new().author(a.public_key())]).await,
            vec![a7.id, a1.id]
        );
        assert_eq!(
            ids(&p, vec![Filter::new().kind(Kind::from(1))]).await,
            vec![b1.id, a1.id]
        );
        let both = Filter::new().author(a.public_key()).kind(Kind::from(1));
        assert_eq!(ids(&p, vec![both]).await, vec![a1.id]);
        let none = Filter::new().author(b.public_key()).kind(Kind::from(7));
        assert!(ids(&p, vec![none]).await.is_empty());
        assert_eq!(
            ids(&p, vec![Filter::new()]).await,
            vec![b1.id, a7.id, a1.id]
        );
    }

    pub async fn tag_filters(p: Arc<dyn Persister>) {
        let k = Keys::generate();
        let target = "aa".repeat(32);
        let e1 = event(&k, 1, NOW - 2, "x", &[&["t", "bitcoin"], &["e", &target]]);
        let e2 = event(&k, 1, NOW - 1, "y", &[&["t", "nostr"]]);
        let e3 = event(&k, 1, NOW, "z", &[&["t", "bitcoinx"]]);
        for e in [&e1, &e2, &e3] {
            store(&p, e).await;
        }
        let t = |v: &[&str]| Filter::new().hashtags(v.iter().map(|s| s.to_string()));
        assert_eq!(ids(&p, vec![t(&["bitcoin"])]).await, vec![e1.id]);
        assert_eq!(
            ids(&p, vec![t(&["bitcoin", "nostr"])]).await,
            vec![e2.id, e1.id]
        );
        let by_e = Filter::new().event(EventId::from_hex(&target).unwrap());
        assert_eq!(ids(&p, vec![by_e]).await, vec![e1.id]);
        let both = t(&["nostr"]).event(EventId::from_hex(&target).unwrap());
        assert!(
            ids(&p, vec![both]).await.is_empty(),
            "tag conditions are AND'd across names"
        );
    }

    pub async fn since_until_inclusive(p: Arc<dyn Persister>) {
        let k = Keys::generate();
        let es: Vec<Event> = [100u64, 200, 300]
            .iter()
            .map(|t| event(&k, 1, NOW - 1000 + t, "", &[]))
            .collect();
        for e in &es {
            store(&p, e).await;
        }
        let ts = |t: u64| Timestamp::from_secs(NOW - 1000 + t);
        assert_eq!(
            ids(&p, vec![Filter::new().since(ts(200))]).await,
            vec![es[2].id, es[1].id]
        );
        assert_eq!(
            ids(&p, vec![Filter::new().until(ts(200))]).await,
            vec![es[1].id, es[0].id]
        );
        let exact = Filter::new().since(ts(200)).until(ts(200));
        assert_eq!(ids(&p, vec![exact]).await, vec![es[1].id]);
    }

    pub async fn limit_newest_first_ties_lowest_id(p: Arc<dyn Persister>) {
        let k = Keys::generate();
        let mut same: Vec<Event> = (0..5)
            .map(|i| event(&k, 1, NOW - 10, &format!("tie{i}"), &[]))
            .collect();
        let newest = event(&k, 1, NOW - 5, "newest", &[]);
        let oldest = event(&k, 1, NOW - 20, "oldest", &[]);
        for e in same.iter().chain([&newest, &oldest]) {
            store(&p, e).await;
        }
        same.sort_by_key(|e| e.id);
        let got = ids(&p, vec![Filter::new().limit(3)]).await;
        assert_eq!(got, vec![newest.id, same[0].id, same[1].id]);
        let all = ids(&p, vec![Filter::new()]).await;
        assert_eq!(all.len(), 7);
        assert_eq!(all.last(), Some(&oldest.id));
        assert_eq!(
            ids(&p, vec![Filter::new().limit(0)]).await,
            Vec::<EventId>::new()
        );
    }

    pub async fn filters_are_ored(p: Arc<dyn Persister>) {
        let (a, b) = (Keys::generate(), Keys::generate());
        let a1 = event(&a, 1, NOW - 4, "", &[]);
        let a2 = event(&a, 1, NOW - 3, "", &[]);
        let b1 = event(&b, 1, NOW - 2, "", &[]);
        let b2 = event(&b, 1, NOW - 1, "", &[]);
        for e in [&a1, &a2, &b1, &b2] {
            store(&p, e).await;
        }
        let fa = Filter::new().author(a.public_key()).limit(1);
        let fb = Filter::new().author(b.public_key()).limit(1);
        assert_eq!(
            ids(&p, vec![fa.clone(), fb]).await,
            vec![b2.id, a2.id],
            "limit applies per filter"
        );
        let overlap = Filter::new().kind(Kind::from(1));
        assert_eq!(
            ids(&p, vec![fa, overlap.clone()]).await.len(),
            4,
            "no duplicates across filters"
        );
        assert_eq!(
            p.count(&[overlap], Timestamp::from_secs(NOW))
                .await
                .unwrap(),
            4
        );
    }

    pub async fn replaceable_keeps_newest(p: Arc<dyn Persister>) {
        let k = Keys::generate();
        let v1 = event(&k, 0, NOW - 20, "v1", &[]);
        let v2 = event(&k, 0, NOW - 10, "v2", &[]);
        let older = event(&k, 0, NOW - 15, "older", &[]);
        store(&p, &v1).await;
        match save(&p, &v2).await {
            SaveOutcome::Stored { replaced, .. } => assert_eq!(replaced, vec![v1.id]),
            other => panic!("expected Stored, got {other:?}"),
        }
        assert_eq!(save(&p, &older).await, SaveOutcome::Stale);
        let f = Filter::new().author(k.public_key()).kind(Kind::from(0));
        assert_eq!(ids(&p, vec![f.clone()]).await, vec![v2.id]);
        // Same created_at: the lowest id wins.
        let (x, y) = (
            event(&k, 0, NOW - 10, "x", &[]),
            event(&k, 0, NOW - 10, "y", &[]),
        );
        let (low, high) = if x.id < y.id { (x, y) } else { (y, x) };
        let _ = save(&p, &high).await;
        let _ = save(&p, &low).await;
        let want = if low.id < v2.id { low.id } else { v2.id };
        assert_eq!(ids(&p, vec![f.clone()]).await, vec![want]);
        // Other kinds of the same author are untouched; 10000-19999 replace too.
        let l1 = event(&k, 10_002, NOW - 5, "l1", &[]);
        let l2 = event(&k, 10_002, NOW - 4, "l2", &[]);
        store(&p, &l1).await;
        store(&p, &l2).await;
        assert_eq!(
            ids(&p, vec![Filter::new().kind(Kind::from(10_002))]).await,
            vec![l2.id]
        );
        assert_eq!(ids(&p, vec![f]).await, vec![want]);
    }

    pub async fn addressable_keyed_by_d(p: Arc<dyn Persister>) {
        let k = Keys::generate();
        let a1 = event(&k, 30_000, NOW - 20, "a1", &[&["d", "a"]]);
        let b1 = event(&k, 30_000, NOW - 19, "b1", &[&["d", "b"]]);
        let a2 = event(&k, 30_000, NOW - 10, "a2", &[&["d", "a"]]);
        let a0 = event(&k, 30_000, NOW - 30, "a0", &[&["d", "a"]]);
        for e in [&a1, &b1, &a2] {
            store(&p, e).await;
        }
        assert_eq!(save(&p, &a0).await, SaveOutcome::Stale);
        let f = Filter::new().kind(Kind::from(30_000));
        assert_eq!(ids(&p, vec![f.clone()]).await, vec![a2.id, b1.id]);
        // Another author's event with the same d is a different address.
        let other = event(&Keys::generate(), 30_000, NOW - 50, "o", &[&["d", "a"]]);
        store(&p, &other).await;
        assert_eq!(ids(&p, vec![f]).await.len(), 3);
    }

    pub async fn deletion_by_id(p: Arc<dyn Persister>) {
        let k = Keys::generate();
        let note = event(&k, 1, NOW - 10, "bye", &[]);
        let keep = event(&k, 1, NOW - 9, "keep", &[]);
        store(&p, &note).await;
        store(&p, &keep).await;
        let del = event(&k, 5, NOW - 5, "", &[&["e", &note.id.to_hex()]]);
        match save(&p, &del).await {
            SaveOutcome::Stored { deleted, .. } => assert_eq!(deleted, vec![note.id]),
            other => panic!("expected Stored, got {other:?}"),
        }
        assert!(!p.event_exists(&note.id).await.unwrap());
        assert_eq!(
            save(&p, &note).await,
            SaveOutcome::Deleted,
            "a deleted event cannot come back"
        );
        assert_eq!(
            ids(&p, vec![Filter::new().kind(Kind::from(1))]).await,
            vec![keep.id]
        );
        assert_eq!(
            ids(&p, vec![Filter::new().kind(Kind::from(5))]).await,
            vec![del.id],
            "the request is stored"
        );
    }

    pub async fn deletion_by_address(p: Arc<dyn Persister>) {
        let k = Keys::generate();
        let v1 = event(&k, 30_001, NOW - 20, "v1", &[&["d", "x"]]);
        store(&p, &v1).await;
        let addr = format!("30001:{}:x", k.public_key().to_hex());
        let del = event(&k, 5, NOW - 10, "", &[&["a", &addr]]);
        store(&p, &del).await;
        assert!(!p.event_exists(&v1.id).await.unwrap());
        let old = event(&k, 30_001, NOW - 15, "old", &[&["d", "x"]]);
        assert_eq!(
            save(&p, &old).await,
            SaveOutcome::Deleted,
            "versions up to the request stay deleted"
        );
        let newer = event(&k, 30_001, NOW - 5, "newer", &[&["d", "x"]]);
        store(&p, &newer).await;
        assert_eq!(
            ids(&p, vec![Filter::new().kind(Kind::from(30_001))]).await,
            vec![newer.id]
        );
    }

    pub async fn deletion_only_by_author(p: Arc<dyn Persister>) {
        let (owner, thief) = (Keys::generate(), Keys::generate());
        let note = event(&owner, 1, NOW - 10, "mine", &[]);
        let addr_ev = event(&owner, 30_002, NOW - 10, "mine", &[&["d", "z"]]);
        store(&p, &note).await;
        store(&p, &addr_ev).await;
        let addr = format!("30002:{}:z", owner.public_key().to_hex());
        let del = event(
            &thief,
            5,
            NOW - 5,
            "",
            &[&["e", &note.id.to_hex()], &["a", &addr]],
        );
        match save(&p, &del).await {
            SaveOutcome::Stored { deleted, .. } => assert!(deleted.is_empty()),
            other => panic!("expected Stored, got {other:?}"),
        }
        assert!(p.event_exists(&note.id).await.unwrap());
        assert!(p.event_exists(&addr_ev.id).await.unwrap());
        // And the thief's request does not block the owner's events later.
        let later = event(&owner, 30_002, NOW - 1, "again", &[&["d", "z"]]);
        store(&p, &later).await;
    }

    pub async fn expiry(p: Arc<dyn Persister>) {
        let k = Keys::generate();
        let exp = (NOW + 100).to_string();
        let short = event(
            &k,
            1,
            NOW - 10,
            "short",
            &[&["expiration", &exp], &["t", "x"]],
        );
        let forever = event(&k, 1, NOW - 11, "forever", &[&["t", "x"]]);
        store(&p, &short).await;
        store(&p, &forever).await;
        let all = [Filter::new()];
        let at = |t: u64| Timestamp::from_secs(t);
        assert_eq!(p.query(&all, at(NOW)).await.unwrap().len(), 2);
        assert_eq!(p.count(&all, at(NOW)).await.unwrap(), 2);
        // Every shape of filter (each a different index, some expressing
        // the whole filter, some not), and both query calls.
        let shapes = [
            Filter::new(),
            Filter::new().kind(Kind::TextNote),
            Filter::new().author(k.public_key()),
            Filter::new().author(k.public_key()).kind(Kind::TextNote),
            Filter::new().hashtag("x"),
            Filter::new().kind(Kind::TextNote).hashtag("x"),
            Filter::new().ids([short.id, forever.id]),
        ];
        for f in shapes {
            let f = [f];
            let later = p.query(&f, at(NOW + 100)).await.unwrap();
            assert_eq!(
                later.iter().map(|e| e.id).collect::<Vec<_>>(),
                vec![forever.id],
                "expired never served ({:?})",
                f[0]
            );
            let stored = p.query_stored(&f, at(NOW + 100)).await.unwrap();
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0].event().unwrap(), &forever);
            assert_eq!(p.count(&f, at(NOW + 100)).await.unwrap(), 1);
            assert_eq!(p.query(&f, at(NOW + 99)).await.unwrap().len(), 2);
        }
        assert_eq!(p.count(&all, at(NOW + 100)).await.unwrap(), 1);
        assert_eq!(p.remove_expired(at(NOW + 50)).await.unwrap(), 0);
        assert_eq!(p.remove_expired(at(NOW + 100)).await.unwrap(), 1);
        assert!(!p.event_exists(&short.id).await.unwrap());
        assert_eq!(p.stats().await.unwrap().events, 1);
    }

    pub async fn kv_namespaces(p: Arc<dyn Persister>) {
        p.kv_put("alpha", b"k1", b"v1").await.unwrap();
        p.kv_put("alpha", b"k2", b"v2").await.unwrap();
        p.kv_put("alpha", b"z", b"v3").await.unwrap();
        p.kv_put("beta", b"k1", b"other").await.unwrap();
        assert_eq!(
            p.kv_get("alpha", b"k1").await.unwrap(),
            Some(b"v1".to_vec())
        );
        assert_eq!(
            p.kv_get("beta", b"k1").await.unwrap(),
            Some(b"other".to_vec())
        );
        assert_eq!(p.kv_get("gamma", b"k1").await.unwrap(), None);
        let scan = p.kv_scan("alpha", b"k").await.unwrap();
        assert_eq!(
            scan,
            vec![
                (b"k1".to_vec(), b"v1".to_vec()),
                (b"k2".to_vec(), b"v2".to_vec())
            ]
        );
        assert!(p.kv_insert_new("alpha", b"new", b"1").await.unwrap());
        assert!(!p.kv_insert_new("alpha", b"new", b"2").await.unwrap());
        assert_eq!(
            p.kv_get("alpha", b"new").await.unwrap(),
            Some(b"1".to_vec())
        );
        assert!(p.kv_delete("alpha", b"new").await.unwrap());
        assert!(!p.kv_delete("alpha", b"new").await.unwrap());
        // Concurrent insert_new of one key: exactly one wins.
        let tasks: Vec<_> = (0..8u8)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move { p.kv_insert_new("spent", b"token", &[i]).await.unwrap() })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1);
    }

    pub async fn operator_delete_and_stats(p: Arc<dyn Persister>) {
        let k = Keys::generate();
        let es: Vec<Event> = (0..3).map(|i| event(&k, 1, NOW - i, "", &[])).collect();
        for e in &es {
            store(&p, e).await;
        }
        assert_eq!(p.stats().await.unwrap().events, 3);
        assert_eq!(p.delete_events(&[es[0].id, es[0].id]).await.unwrap(), 1);
        assert_eq!(p.stats().await.unwrap().events, 2);
        assert_eq!(ids(&p, vec![Filter::new()]).await, vec![es[1].id, es[2].id]);
        p.flush().await.unwrap();
    }

    pub async fn claims_with_events(p: Arc<dyn Persister>) {
        let k = Keys::generate();
        let a = event(&k, 1, NOW, "a", &[]);
        let spend = [claim("cred", b"x1", b"a"), claim("cred", b"x2", b"a")];
        let saved = p.save_event(&a, &spend).await.unwrap();
        assert!(matches!(saved, SaveOutcome::Stored { .. }), "{saved:?}");
        assert_eq!(p.kv_get("cred", b"x1").await.unwrap(), Some(b"a".to_vec()));
        // A second event that claims a taken key is not stored, and takes
        // none of its other keys.
        let b = event(&k, 1, NOW, "b", &[]);
        let both = [claim("cred", b"x3", b"b"), claim("cred", b"x2", b"b")];
        assert_eq!(
            p.save_event(&b, &both).await.unwrap(),
            SaveOutcome::Claimed(both[1].clone())
        );
        assert!(!p.event_exists(&b.id).await.unwrap());
        assert_eq!(p.kv_get("cred", b"x3").await.unwrap(), None);
        assert_eq!(p.kv_get("cred", b"x2").await.unwrap(), Some(b"a".to_vec()));
        // The same key twice in one event is refused.
        let twice = [claim("cred", b"x4", b"b"), claim("cred", b"x4", b"b")];
        assert!(matches!(
            p.save_event(&b, &twice).await.unwrap(),
            SaveOutcome::Claimed(_)
        ));
        assert_eq!(p.kv_get("cred", b"x4").await.unwrap(), None);
        // A duplicate, a stale version or a deleted event takes no claim.
        assert_eq!(
            p.save_event(&a, &[claim("cred", b"d", b"")]).await.unwrap(),
            SaveOutcome::Duplicate
        );
        let new = event(&k, 10_000, NOW, "new", &[]);
        store(&p, &new).await;
        let old = event(&k, 10_000, NOW - 5, "old", &[]);
        assert_eq!(
            p.save_event(&old, &[claim("cred", b"s", b"")])
                .await
                .unwrap(),
            SaveOutcome::Stale
        );
        for key in [b"d".as_slice(), b"s"] {
            assert_eq!(p.kv_get("cred", key).await.unwrap(), None);
        }
        // Claims without an event: all or none.
        assert_eq!(
            p.kv_claim(&[claim("cred", b"e1", b""), claim("cred", b"x1", b"")])
                .await
                .unwrap(),
            Some(claim("cred", b"x1", b""))
        );
        assert_eq!(p.kv_get("cred", b"e1").await.unwrap(), None);
        assert_eq!(
            p.kv_claim(&[claim("cred", b"e1", b"")]).await.unwrap(),
            None
        );
        assert!(p.kv_get("cred", b"e1").await.unwrap().is_some());
    }

    /// Every record of a store, sorted: what two stores must agree on.
    async fn everything(p: &dyn Persister, page: usize) -> Vec<String> {
        let (mut out, mut cursor) = (Vec::new(), None);
        loop {
            let e = p.export(cursor, page).await.expect("export failed");
            assert!(e.records.len() <= page, "a page over its size");
            out.extend(e.records.iter().map(|r| format!("{r:?}")));
            match e.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        out.sort();
        out
    }

    /// A store's content, tombstones and keys move through export and
    /// import, page by page, into this backend and back out of it; a
    /// tampered event refuses its whole page.
    pub async fn export_then_import_moves_everything(p: Arc<dyn Persister>) {
        use crate::persister::Record;
        let src: Arc<dyn Persister> = Arc::new(crate::testing::MemoryPersister::new());
        let k = Keys::generate();
        let note = event(&k, 1, NOW - 30, "gone", &[]);
        let kept = event(&k, 1, NOW - 29, "kept", &[&["t", "x"]]);
        let v1 = event(&k, 30_001, NOW - 28, "v1", &[&["d", "a"]]);
        let v2 = event(&k, 30_001, NOW - 27, "v2", &[&["d", "a"]]);
        let addressed = event(&k, 30_001, NOW - 26, "deleted", &[&["d", "b"]]);
        for e in [&note, &kept, &v1, &v2, &addressed] {
            store(&src, e).await;
        }
        let addr = format!("30001:{}:b", k.public_key().to_hex());
        let del = event(
            &k,
            5,
            NOW - 20,
            "",
            &[&["e", &note.id.to_hex()], &["a", &addr]],
        );
        store(&src, &del).await;
        src.kv_put("alpha", b"k\x00\xff", b"v1").await.unwrap();
        src.kv_put("beta", b"", b"").await.unwrap();
        let want = everything(src.as_ref(), 1000).await;
        // kept, v2 and the deletion request; two tombstones; two keys.
        assert_eq!(want.len(), 3 + 2 + 2, "{want:#?}");

        let mut cursor = None;
        loop {
            let page = src.export(cursor, 3).await.unwrap();
            p.import(&page.records).await.expect("import failed");
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(everything(p.as_ref(), 2).await, want);
        assert_eq!(p.stats().await.unwrap().events, 3);
        assert_eq!(save(&p, &note).await, SaveOutcome::Deleted, "id tombstone");
        assert_eq!(
            save(&p, &addressed).await,
            SaveOutcome::Deleted,
            "address tombstone"
        );
        assert_eq!(save(&p, &v1).await, SaveOutcome::Stale, "the address index");
        assert_eq!(
            ids(&p, vec![Filter::new().hashtag("x")]).await,
            vec![kept.id],
            "the tag index"
        );
        assert_eq!(
            p.kv_get("alpha", b"k\x00\xff").await.unwrap(),
            Some(b"v1".to_vec())
        );

        // And back out, into the reference store.
        let back: Arc<dyn Persister> = Arc::new(crate::testing::MemoryPersister::new());
        let mut cursor = None;
        loop {
            let page = p.export(cursor, 2).await.unwrap();
            back.import(&page.records).await.unwrap();
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(everything(back.as_ref(), 1000).await, want);

        // A tampered event: the page it is in is refused whole.
        let forged = nostr::JsonUtil::as_json(&kept).replace("kept", "k3pt");
        let page = [
            Record::Kv {
                namespace: "gamma".into(),
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Record::Event(forged),
        ];
        assert!(
            p.import(&page).await.is_err(),
            "a forged event was imported"
        );
        assert_eq!(p.kv_get("gamma", b"k").await.unwrap(), None);
        assert!(p.import(&[Record::Event("{".into())]).await.is_err());
    }

    pub async fn concurrent_claims_one_wins(p: Arc<dyn Persister>) {
        let k = Keys::generate();
        let tasks: Vec<_> = (0..16u64)
            .map(|i| {
                let p = p.clone();
                let e = event(&k, 1, NOW + i, "spend", &[]);
                tokio::spawn(async move {
                    let c = [claim("cred", b"token", &i.to_be_bytes())];
                    let stored = matches!(
                        p.save_event(&e, &c).await.unwrap(),
                        SaveOutcome::Stored { .. }
                    );
                    (stored, p.event_exists(&e.id).await.unwrap())
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            let (stored, exists) = t.await.unwrap();
            assert_eq!(stored, exists);
            wins += usize::from(stored);
        }
        assert_eq!(wins, 1);
        assert_eq!(p.stats().await.unwrap().events, 1);
    }
}

/// The transport cases.
pub mod transport {
    use std::time::Duration;

    use nostr::{Filter, Keys, Kind, Timestamp};
    use serde_json::json;

    use super::events::event;
    use super::TransportHarness;
    use crate::testing::{TestNode, WireClient};

    fn now() -> u64 {
        Timestamp::now().as_secs()
    }

    pub async fn publish_then_query(_n: &TestNode, h: &impl TransportHarness) {
        let mut c = h.connect().await;
        let k = Keys::generate();
        let e = event(&k, 1, now(), "hello", &[]);
        assert_eq!(c.publish(&e).await, (true, String::new()));
        let (ok, msg) = c.publish(&e).await;
        assert!(ok && msg.starts_with("duplicate:"), "second copy: {msg}");
        let got = c.req("q", vec![Filter::new().author(k.public_key())]).await;
        assert_eq!(got, vec![e]);
    }

    pub async fn live_delivery_after_eose(_n: &TestNode, h: &impl TransportHarness) {
        let mut taker = h.connect().await;
        let mut maker = h.connect().await;
        let k = Keys::generate();
        assert!(taker
            .req("live", vec![Filter::new().author(k.public_key())])
            .await
            .is_empty());
        let e = event(&k, 1, now(), "live", &[]);
        assert!(maker.publish(&e).await.0);
        let got = taker.next_event("live", Duration::from_secs(5)).await;
        assert_eq!(got, Some(e));
    }

    pub async fn close_stops_delivery(_n: &TestNode, h: &impl TransportHarness) {
        let mut taker = h.connect().await;
        let mut maker = h.connect().await;
        let k = Keys::generate();
        taker
            .req("s", vec![Filter::new().author(k.public_key())])
            .await;
        taker.send_json(json!(["CLOSE", "s"])).await;
        // A round trip proves the CLOSE was handled before we publish.
        taker.req("sync", vec![Filter::new().limit(0)]).await;
        assert!(
            maker
                .publish(&event(&k, 1, now(), "after close", &[]))
                .await
                .0
        );
        assert!(taker
            .next_event("s", Duration::from_millis(300))
            .await
            .is_none());
    }

    pub async fn garbage_keeps_connection(_n: &TestNode, h: &impl TransportHarness) {
        let mut c = h.connect().await;
        c.send_text("this is not json".into()).await;
        let v = c.recv_json().await;
        assert_eq!(v[0], "NOTICE");
        assert!(v[1].as_str().unwrap_or("").starts_with("invalid:"));
        c.send_text(r#"["REQ"]"#.into()).await;
        assert_eq!(c.recv_json().await[0], "NOTICE");
        let e = event(&Keys::generate(), 1, now(), "still here", &[]);
        assert!(
            c.publish(&e).await.0,
            "connection keeps working after bad input"
        );
    }

    pub async fn count_matches(_n: &TestNode, h: &impl TransportHarness) {
        let mut c = h.connect().await;
        let k = Keys::generate();
        for i in 0..3 {
            assert!(c.publish(&event(&k, 7, now() - i, "+", &[])).await.0);
        }
        let f = Filter::new().author(k.public_key()).kind(Kind::from(7));
        c.send_json(json!(["COUNT", "c", f])).await;
        let v = c.recv_json().await;
        assert_eq!(v, json!(["COUNT", "c", {"count": 3}]));
    }

    pub async fn replaces_subscription_with_same_id(_n: &TestNode, h: &impl TransportHarness) {
        let mut taker = h.connect().await;
        let mut maker = h.connect().await;
        let (a, b) = (Keys::generate(), Keys::generate());
        taker
            .req("same", vec![Filter::new().author(a.public_key())])
            .await;
        taker
            .req("same", vec![Filter::new().author(b.public_key())])
            .await;
        assert!(maker.publish(&event(&a, 1, now(), "a", &[])).await.0);
        let eb = event(&b, 1, now(), "b", &[]);
        assert!(maker.publish(&eb).await.0);
        assert_eq!(
            taker.next_event("same", Duration::from_secs(5)).await,
            Some(eb)
        );
    }
}
