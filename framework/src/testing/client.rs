//! Test clients: anything that sends and receives NIP-01 text.

use std::time::Duration;

use async_trait::async_trait;
use nostr::{Event, Filter, JsonUtil};
use serde_json::{json, Value};
use tokio::sync::mpsc;

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
    /// Publish and wait for the matching `OK`: (accepted, message).
    async fn publish(&mut self, event: &Event) -> (bool, String) {
        self.send_text(json!(["EVENT", event]).to_string()).await;
        loop {
            let v = self.recv_json().await;
            if v[0] == "OK" && v[1] == event.id.to_hex() {
                return (
                    v[2].as_bool().unwrap_or(false),
                    v[3].as_str().unwrap_or("").to_string(),
                );
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
        let mut msg = vec![json!("REQ"), json!(sub)];
        msg.extend(
            filters
                .iter()
                .map(|f| serde_json::from_str::<Value>(&f.as_json()).unwrap_or_default()),
        );
        self.send_json(Value::Array(msg)).await;
        let mut events = Vec::new();
        loop {
            let v = self.recv_json().await;
            match (v[0].as_str(), v[1].as_str()) {
                (Some("EVENT"), Some(s)) if s == sub => {
                    events.push(Event::from_json(v[2].to_string()).expect("relay sent a bad event"))
                }
                (Some("EOSE"), Some(s)) if s == sub => return Ok(events),
                (Some("CLOSED"), Some(s)) if s == sub => {
                    return Err(v[2].as_str().unwrap_or("").to_string())
                }
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
            let v: Value = serde_json::from_str(&text).ok()?;
            if v[0] == "EVENT" && v[1] == sub {
                return Event::from_json(v[2].to_string()).ok();
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
