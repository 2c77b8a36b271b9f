//! Hostile queries get a `CLOSED` with a NIP-01 prefix, and the session
//! keeps serving: oversized filter lists, unsupported `search`, and floods.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use civkit_framework::testing::{TestNode, WireClient};
use civkit_framework::SessionLimits;
use nostr::{EventBuilder, Filter, Keys};
use serde_json::json;

#[tokio::test]
async fn hostile_queries_are_closed_with_a_reason() {
    let tn = TestNode::builder()
        .limits(SessionLimits {
            max_filter_values: 100,
            queries_per_second: 1.0,
            query_burst: 5,
            ..SessionLimits::default()
        })
        .build();
    let mut c = tn.client().await;
    let k = Keys::generate();
    assert!(
        c.publish(&EventBuilder::text_note("x").sign_with_keys(&k).unwrap())
            .await
            .0
    );

    let many: Vec<_> = (0..101).map(|_| Keys::generate().public_key()).collect();
    let err = c
        .req_result("authors", vec![Filter::new().authors(many)])
        .await
        .unwrap_err();
    assert!(
        err.starts_with("invalid: a filter takes at most 100"),
        "{err}"
    );
    let tags: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let err = c
        .req_result("tags", vec![Filter::new().hashtags(tags)])
        .await
        .unwrap_err();
    assert!(err.starts_with("invalid:"), "{err}");
    c.send_json(json!(["REQ", "search", {"search": "bitcoin"}]))
        .await;
    let closed = c.recv_json().await;
    assert_eq!(closed[0], "CLOSED");
    assert!(
        closed[2].as_str().unwrap().starts_with("unsupported:"),
        "{closed}"
    );
    // Within its burst the session is served; beyond it, refused.
    let ok = c
        .req_result("fine", vec![Filter::new().author(k.public_key())])
        .await
        .unwrap();
    assert_eq!(ok.len(), 1);
    let mut limited = 0;
    for i in 0..5 {
        c.send_json(json!(["COUNT", format!("c{i}"), {}])).await;
        let m = c.recv_json().await;
        if m[0] == "CLOSED" && m[2].as_str().unwrap().starts_with("rate-limited:") {
            limited += 1;
        }
    }
    assert!(limited >= 4, "the query burst was spent: {limited}");
    // A second session is not affected.
    let mut other = tn.client().await;
    assert_eq!(
        other
            .req_result("other", vec![Filter::new()])
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A query pays for the size of its filters: a thousand authors cost many
/// tokens, so a session cannot send them as often as small queries.
#[tokio::test]
async fn big_filters_cost_more_of_the_query_rate() {
    let tn = TestNode::builder()
        .limits(SessionLimits {
            queries_per_second: 0.5,
            query_burst: 12,
            ..SessionLimits::default()
        })
        .build();
    let mut c = tn.client().await;
    let many: Vec<_> = (0..1000).map(|_| Keys::generate().public_key()).collect();
    // About 66 KiB of filter: 9 tokens of the 12.
    let first = c
        .req_result("big1", vec![Filter::new().authors(many.clone())])
        .await;
    assert!(first.is_ok(), "{first:?}");
    let second = c
        .req_result("big2", vec![Filter::new().authors(many)])
        .await
        .unwrap_err();
    assert!(second.starts_with("rate-limited:"), "{second}");
    // Three small queries still fit in what is left.
    for i in 0..3 {
        assert!(c
            .req_result(&format!("s{i}"), vec![Filter::new()])
            .await
            .is_ok());
    }
}
