//! Test clients: anything that sends and receives NIP-01 text.

use std::time::Duration;

use async_trait::async_trait;
use nostr::{Event, Filter, JsonUtil, SubscriptionId};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::wire::{self, ClientMessage, RelayMessage};
use crate::{Outgoing, SessionOutbox};

/// How long helpers wait for a reply before failing the test.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A client under test: one connection that carries NIP-01 text.
#[async_trait]
pub trait TestClient: Send {
    /// Send one client message.
    async fn send_text(&mut self, text: String);
    /// The next relay message, or `None` if nothing arrives within `timeout`
    /// or the connection closed.
    async fn recv_text(&mut self, timeout: Duration) -> Option<String>;
}

/// Helpers on top of any [`TestClient`]. They panic on timeouts: tests only.
#[async_trait]
pub trait WireClient: TestClient {
    /// Send a JSON value.
    async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }
    /// The next relay message as JSON; panics after [`REPLY_TIMEOUT`].
    async fn recv_json(&mut self) -> Value {
        let text = self
            .recv_text(REPLY_TIMEOUT)
            .await
            .expect("no relay message within the timeout");
        serde_json::from_str(&text).expect("relay sent invalid JSON")
    }
    /// The next relay message, parsed by [`wire::parse_relay`]; panics after
    /// [`REPLY_TIMEOUT`] or on a message that does not parse.
    async fn recv_relay(&mut self) -> RelayMessage<'static> {
        let text = self
            .recv_text(REPLY_TIMEOUT)
            .await
            .expect("no relay message within the timeout");
        wire::parse_relay(&text).unwrap_or_else(|e| panic!("relay sent {text}: {e}"))
    }
    /// Publish and wait for the matching `OK`: (accepted, message).
    async fn publish(&mut self, event: &Event) -> (bool, String) {
        self.send_text(ClientMessage::event(event.clone()).as_json())
            .await;
        loop {
            if let RelayMessage::Ok {
                event_id,
                status,
                message,
            } = self.recv_relay().await
            {
                if event_id == event.id {
                    return (status, message.into_owned());
                }
            }
        }
    }
    /// Subscribe and collect stored events until `EOSE`. Panics on `CLOSED`.
    async fn req(&mut self, sub: &str, filters: Vec<Filter>) -> Vec<Event> {
        match self.req_result(sub, filters).await {
            Ok(events) => events,
            Err(msg) => panic!("subscription closed: {msg}"),
        }
    }
    /// Subscribe and collect until `EOSE` (Ok) or `CLOSED` (Err with its message).
    async fn req_result(&mut self, sub: &str, filters: Vec<Filter>) -> Result<Vec<Event>, String> {
        let id = SubscriptionId::new(sub);
        self.send_text(ClientMessage::req(id.clone(), filters).as_json())
            .await;
        let mut events = Vec::new();
        loop {
            match self.recv_relay().await {
                RelayMessage::Event {
                    subscription_id,
                    event,
                } if *subscription_id == id => events.push(event.into_owned()),
                RelayMessage::EndOfStoredEvents(s) if *s == id => return Ok(events),
                RelayMessage::Closed {
                    subscription_id,
                    message,
                } if *subscription_id == id => return Err(message.into_owned()),
                _ => {}
            }
        }
    }
    /// The next live `EVENT` for `sub`, skipping other messages; `None` after `timeout`.
    async fn next_event(&mut self, sub: &str, timeout: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let text = self.recv_text(left).await?;
            if let Ok(RelayMessage::Event {
                subscription_id,
                event,
            }) = wire::parse_relay(&text)
            {
                if subscription_id.as_str() == sub {
                    return Some(event.into_owned());
                }
            }
        }
    }
}

impl<T: TestClient + ?Sized> WireClient for T {}

/// An in-process client of a [`super::MemoryHub`].
#[derive(Debug)]
pub struct MemoryClient {
    tx: mpsc::Sender<String>,
    outbox: SessionOutbox,
}

impl MemoryClient {
    pub(crate) fn new(tx: mpsc::Sender<String>, outbox: SessionOutbox) -> Self {
        MemoryClient { tx, outbox }
    }
}

#[async_trait]
impl TestClient for MemoryClient {
    async fn send_text(&mut self, text: String) {
        let _ = self.tx.send(text).await;
    }
    async fn recv_text(&mut self, timeout: Duration) -> Option<String> {
        match tokio::time::timeout(timeout, self.outbox.next()).await {
            Ok(Some(Outgoing::Message(m))) => Some(m),
            _ => None,
        }
    }
}
