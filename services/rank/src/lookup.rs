//! How a service finds a stake key's tier: the attestation signed by the
//! rank service's key, read from this node's store (a rank service on the
//! same board publishes there) or fetched from a remote rank service's
//! relay over NIP-01. Either way it is checked against the rank key, so
//! the answer does not depend on trusting whoever served it.

use std::time::Duration;

use bitcoin::key::XOnlyPublicKey;
use civkit_framework::{Rejection, ServiceContext};
use futures_util::{SinkExt, StreamExt};
use nostr::{Event, JsonUtil, PublicKey};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tracing::warn;

use crate::tier::{Attestation, TierCache};

/// Most remote lookups in flight; more wait (within the timeout).
const REMOTE_FETCHES: usize = 4;
/// Largest websocket message read from a remote rank service.
const MAX_MESSAGE: usize = 64 * 1024;
/// Most cached answers from a remote rank service.
const CACHE_ENTRIES: usize = 10_000;

/// Where tiers come from.
pub struct TierLookup {
    rank_key: PublicKey,
    /// A remote rank service's relay URL; `None`: this node's store.
    relay: Option<String>,
    cache: TierCache,
    fetches: Semaphore,
    timeout: Duration,
}

impl TierLookup {
    /// Attestations by `rank_key`, from `relay` (cached `cache_secs`) or
    /// from this node's store (`relay` empty).
    pub fn new(rank_key: PublicKey, relay: &str, cache_secs: u64, timeout: Duration) -> Self {
        TierLookup {
            rank_key,
            relay: (!relay.is_empty()).then(|| relay.to_string()),
            cache: TierCache::new(Duration::from_secs(cache_secs), CACHE_ENTRIES),
            fetches: Semaphore::new(REMOTE_FETCHES),
            timeout,
        }
    }

    /// The rank service's key.
    pub fn rank_key(&self) -> &PublicKey {
        &self.rank_key
    }

    /// The stake key's current attestation, if it has one.
    pub async fn attestation(
        &self,
        ctx: &ServiceContext,
        stake: &XOnlyPublicKey,
    ) -> Result<Option<Attestation>, Rejection> {
        let now = ctx.now().as_secs();
        let filter = Attestation::filter(&self.rank_key, stake);
        let events = match &self.relay {
            None => {
                let store = ctx
                    .persister()
                    .map_err(|_| Rejection::error("the node is shutting down"))?;
                store.query(&[filter], ctx.now()).await.map_err(|e| {
                    warn!(error = %e, "attestation lookup failed");
                    Rejection::error("could not read the store")
                })?
            }
            Some(url) => {
                if let Some(cached) = self.cache.get(stake) {
                    return Ok(cached.filter(|a| a.expires_at > now));
                }
                let fetched = tokio::time::timeout(self.timeout, async {
                    let _permit = self
                        .fetches
                        .acquire()
                        .await
                        .map_err(|_| "closed".to_string())?;
                    fetch(url, &filter).await
                })
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
                .map_err(|e| {
                    warn!(error = %e, "remote rank service unreachable");
                    Rejection::error("the rank service could not be reached; try again")
                })?;
                let best = Attestation::newest(&fetched, &self.rank_key, stake, now);
                self.cache.put(*stake, best.clone());
                return Ok(best);
            }
        };
        Ok(Attestation::newest(&events, &self.rank_key, stake, now))
    }
}

/// One NIP-01 `REQ` to `url`: the events until `EOSE`.
async fn fetch(url: &str, filter: &nostr::Filter) -> Result<Vec<Event>, String> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false)
        .await
        .map_err(|e| e.to_string())?;
    let req = serde_json::json!(["REQ", "tier", filter]).to_string();
    ws.send(WsMessage::text(req))
        .await
        .map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    while let Some(message) = ws.next().await {
        let text = match message.map_err(|e| e.to_string())? {
            WsMessage::Text(t) => t,
            WsMessage::Close(_) => break,
            _ => continue,
        };
        let Ok(serde_json::Value::Array(parts)) = serde_json::from_str(text.as_str()) else {
            continue;
        };
        match parts.first().and_then(|v| v.as_str()) {
            Some("EVENT") if events.len() < 16 => {
                if let Some(e) = parts
                    .get(2)
                    .and_then(|v| Event::from_json(v.to_string()).ok())
                {
                    events.push(e);
                }
            }
            Some("EOSE") | Some("CLOSED") => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    Ok(events)
}
