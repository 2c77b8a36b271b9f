//! The board side: each arriving NIP-01 client message is a session of an
//! anonymous onion sender, handled by the node's one pipeline; replies go
//! back over the sender's blinded reply path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use civkit_framework::{Node, Origin, Outgoing, SessionLimits, Source};
use lightning::ln::msgs::DecodeError;
use lightning::onion_message::messenger::{
    CustomOnionMessageHandler, MessageSendInstructions, Responder, ResponseInstruction,
};
use tracing::debug;

use crate::messages::{read_tlv, NostrOnion, CLIENT_TLV, RELAY_TLV};

/// Counters shown in `civkit-cli status`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Onion messages arriving from peers (before any check).
    pub received: AtomicU64,
    /// Dropped because a peer went over its budget.
    pub dropped_over_budget: AtomicU64,
    /// Dropped because all peers together went over the global budget.
    pub dropped_over_global_budget: AtomicU64,
    /// Dropped because `max_sessions` messages were already being handled.
    pub dropped_busy: AtomicU64,
    /// Replies not sent: over `max_replies_per_message`, or the reply queue was full.
    pub replies_dropped: AtomicU64,
    /// Dropped because the NIP-01 TLV was too big or not UTF-8.
    pub dropped_malformed: AtomicU64,
    /// NIP-01 client messages handed to the node.
    pub handled: AtomicU64,
    /// Replies sent back over reply paths.
    pub replies: AtomicU64,
}

impl Counters {
    /// Export the counters as `civkit_onion_*` metrics.
    pub fn export(self: &Arc<Self>, metrics: &civkit_framework::ScopedMetrics) {
        let read = |pick: fn(&Counters) -> &AtomicU64| {
            let c = self.clone();
            move || pick(&c).load(Ordering::Relaxed)
        };
        metrics.counter_reading(
            "onion_messages_received",
            "Onion messages arriving from peers, before any check",
            read(|c| &c.received),
        );
        metrics.counter_reading(
            "onion_budget_drops",
            "Onion messages dropped because one peer went over its budget",
            read(|c| &c.dropped_over_budget),
        );
        metrics.counter_reading(
            "onion_global_budget_drops",
            "Onion messages dropped because all peers together went over the global budget",
            read(|c| &c.dropped_over_global_budget),
        );
        metrics.counter_reading(
            "onion_busy_drops",
            "Onion messages dropped because max_sessions were being handled",
            read(|c| &c.dropped_busy),
        );
        metrics.counter_reading(
            "onion_messages_handled",
            "NIP-01 messages from onion messages handed to the node",
            read(|c| &c.handled),
        );
    }

    /// As JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "received": g(&self.received),
            "dropped_over_budget": g(&self.dropped_over_budget),
            "dropped_over_global_budget": g(&self.dropped_over_global_budget),
            "dropped_busy": g(&self.dropped_busy),
            "replies_dropped": g(&self.replies_dropped),
            "dropped_malformed": g(&self.dropped_malformed),
            "handled": g(&self.handled),
            "replies": g(&self.replies),
        })
    }
}

type Pending = Arc<Mutex<Vec<(NostrOnion, MessageSendInstructions)>>>;

/// The custom onion-message handler of a board.
pub struct Gateway {
    pub(crate) node: Node,
    pub(crate) instance: Arc<str>,
    pub(crate) limits: SessionLimits,
    pub(crate) max_bytes: usize,
    pub(crate) pending: Pending,
    pub(crate) wake: Arc<dyn Fn() + Send + Sync>,
    pub(crate) counters: Arc<Counters>,
    /// One permit per onion message being handled.
    pub(crate) sessions: Arc<tokio::sync::Semaphore>,
    pub(crate) max_replies: usize,
    pub(crate) max_pending: usize,
}

impl CustomOnionMessageHandler for Gateway {
    type CustomMessage = NostrOnion;

    fn handle_custom_message(
        &self,
        msg: NostrOnion,
        _context: Option<Vec<u8>>,
        responder: Option<Responder>,
    ) -> Option<(NostrOnion, ResponseInstruction)> {
        if msg.tlv_type != CLIENT_TLV {
            return None;
        }
        let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
            self.counters.dropped_busy.fetch_add(1, Ordering::Relaxed);
            debug!("onion sessions at their cap; message dropped");
            return None;
        };
        self.counters.handled.fetch_add(1, Ordering::Relaxed);
        let origin = Origin::new(
            self.instance.clone(),
            Source::OnionSender {
                has_reply_path: responder.is_some(),
            },
        );
        let (node, limits) = (self.node.clone(), self.limits.clone());
        let (pending, wake, counters) = (
            self.pending.clone(),
            self.wake.clone(),
            self.counters.clone(),
        );
        let (max_replies, max_pending) = (self.max_replies, self.max_pending);
        // The pipeline is async; answer from a task once it is done.
        tokio::spawn(async move {
            let _permit = permit;
            let (mut session, mut outbox) = node.open_session(origin, limits);
            session.handle_text(&msg.json).await;
            // One message, one session: nothing stays subscribed for a sender
            // who has no stable identity.
            drop(session);
            let mut replies = Vec::new();
            while let Some(Outgoing::Message(m)) = outbox.next().await {
                replies.push(m);
            }
            let Some(responder) = responder else {
                debug!(replies = replies.len(), "no reply path: replies dropped");
                return;
            };
            {
                let mut q = pending.lock().unwrap_or_else(|p| p.into_inner());
                let n = replies.len();
                let mut queued = 0;
                for json in replies.into_iter().take(max_replies) {
                    if q.len() >= max_pending {
                        break;
                    }
                    queued += 1;
                    q.push((
                        NostrOnion::relay(json),
                        responder.clone().respond().into_instructions(),
                    ));
                }
                counters.replies.fetch_add(queued, Ordering::Relaxed);
                counters
                    .replies_dropped
                    .fetch_add(n as u64 - queued, Ordering::Relaxed);
            }
            wake();
        });
        None
    }

    fn read_custom_message<R: lightning::io::Read>(
        &self,
        message_type: u64,
        buffer: &mut R,
    ) -> Result<Option<NostrOnion>, DecodeError> {
        if message_type != CLIENT_TLV && message_type != RELAY_TLV {
            return Ok(None);
        }
        match read_tlv(message_type, buffer, self.max_bytes) {
            Some(msg) => Ok(Some(msg)),
            None => {
                self.counters
                    .dropped_malformed
                    .fetch_add(1, Ordering::Relaxed);
                Err(DecodeError::InvalidValue)
            }
        }
    }

    fn release_pending_custom_messages(&self) -> Vec<(NostrOnion, MessageSendInstructions)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
