//! Building orders for tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use civkit_board::{Board, BoardConfig};
use civkit_framework::testing::TestNode;
use nostr::{Event, EventBuilder, Keys, Kind, Tag, Timestamp};

pub fn board(cfg: BoardConfig) -> TestNode {
    TestNode::builder()
        .service("board", Arc::new(Board::new(cfg)))
        .build()
}

/// A valid NIP-69 order at `now`, with `change` applied to its tags: each
/// entry replaces the tag of that name, or removes it if it has no values.
pub fn order(keys: &Keys, now: u64, d: &str, change: &[&[&str]]) -> Event {
    let exp_at = (now + 3600).to_string();
    let exp = (now + 7200).to_string();
    let mut tags: Vec<Vec<String>> = [
        vec!["d", d],
        vec!["k", "sell"],
        vec!["f", "NGN"],
        vec!["s", "pending"],
        vec!["amt", "0"],
        vec!["fa", "100000"],
        vec!["pm", "bank-transfer", "face to face"],
        vec!["premium", "1"],
        vec!["network", "mainnet"],
        vec!["layer", "lightning"],
        vec!["expires_at", exp_at.as_str()],
        vec!["expiration", exp.as_str()],
        vec!["y", "civkit"],
        vec!["z", "order"],
    ]
    .iter()
    .map(|t| t.iter().map(|s| s.to_string()).collect())
    .collect();
    for c in change {
        tags.retain(|t| t[0] != c[0]);
        if c.len() > 1 {
            tags.push(c.iter().map(|s| s.to_string()).collect());
        }
    }
    EventBuilder::new(Kind::from(38383), "")
        .tags(tags.into_iter().map(|t| Tag::parse(t).unwrap()))
        .custom_created_at(Timestamp::from_secs(now))
        .sign_with_keys(keys)
        .unwrap()
}
