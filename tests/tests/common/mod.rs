//! Shared helpers of the end-to-end tests.

#![allow(dead_code, clippy::unwrap_used)]

use nostr::{EventBuilder, Keys, Kind};

/// A valid NIP-69 order in `currency`, pending for an hour.
pub fn order(keys: &Keys, d: &str, currency: &str) -> nostr::Event {
    let now = nostr::Timestamp::now().as_secs();
    let (exp_at, exp) = ((now + 3600).to_string(), (now + 7200).to_string());
    let tags = [
        vec!["d", d],
        vec!["k", "sell"],
        vec!["f", currency],
        vec!["s", "pending"],
        vec!["amt", "0"],
        vec!["fa", "250"],
        vec!["pm", "sepa"],
        vec!["premium", "2"],
        vec!["network", "mainnet"],
        vec!["layer", "lightning"],
        vec!["expires_at", &exp_at],
        vec!["expiration", &exp],
        vec!["y", "civkit-e2e"],
        vec!["z", "order"],
    ];
    EventBuilder::new(Kind::from(38383), "")
        .tags(
            tags.iter()
                .map(|t| nostr::Tag::parse(t.iter().copied()).unwrap()),
        )
        .sign_with_keys(keys)
        .unwrap()
}

/// Wait for `id` on subscription `sub` among a nostr-sdk client's notifications.
pub async fn wait_for_event(
    notes: &mut tokio::sync::broadcast::Receiver<nostr_sdk::RelayPoolNotification>,
    sub: &nostr::SubscriptionId,
    id: nostr::EventId,
    within: std::time::Duration,
) -> Option<nostr::Event> {
    tokio::time::timeout(within, async {
        loop {
            if let Ok(nostr_sdk::RelayPoolNotification::Event {
                subscription_id,
                event,
                ..
            }) = notes.recv().await
            {
                if &subscription_id == sub && event.id == id {
                    return *event;
                }
            }
        }
    })
    .await
    .ok()
}
