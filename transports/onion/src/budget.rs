//! Onion jamming defence: a token bucket per forwarding peer in front of
//! LDK's `OnionMessenger`. Messages over budget are dropped and counted.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lightning::bitcoin::secp256k1::PublicKey;
use lightning::ln::msgs::{
    BaseMessageHandler, Init, MessageSendEvent, OnionMessage, OnionMessageHandler,
};
use lightning::types::features::{InitFeatures, NodeFeatures};

use crate::gateway::Counters;

/// An onion-message handler with per-peer budgets.
pub struct Budgeted<H> {
    inner: Arc<H>,
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<PublicKey, (f64, Instant)>>,
    counters: Arc<Counters>,
}

impl<H> Budgeted<H> {
    /// `rate` messages per second per peer, bursts of `burst`.
    pub fn new(inner: Arc<H>, rate: f64, burst: u32, counters: Arc<Counters>) -> Self {
        Budgeted {
            inner,
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
            counters,
        }
    }

    fn allow(&self, peer: PublicKey) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(peer).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl<H: OnionMessageHandler> BaseMessageHandler for Budgeted<H> {
    fn get_and_clear_pending_msg_events(&self) -> Vec<MessageSendEvent> {
        self.inner.get_and_clear_pending_msg_events()
    }
    fn peer_disconnected(&self, their_node_id: PublicKey) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&their_node_id);
        self.inner.peer_disconnected(their_node_id)
    }
    fn provided_node_features(&self) -> NodeFeatures {
        self.inner.provided_node_features()
    }
    fn provided_init_features(&self, their_node_id: PublicKey) -> InitFeatures {
        self.inner.provided_init_features(their_node_id)
    }
    fn peer_connected(
        &self,
        their_node_id: PublicKey,
        msg: &Init,
        inbound: bool,
    ) -> Result<(), ()> {
        self.inner.peer_connected(their_node_id, msg, inbound)
    }
}

impl<H: OnionMessageHandler> OnionMessageHandler for Budgeted<H> {
    fn handle_onion_message(&self, peer_node_id: PublicKey, msg: &OnionMessage) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        if self.allow(peer_node_id) {
            self.inner.handle_onion_message(peer_node_id, msg)
        } else {
            self.counters
                .dropped_over_budget
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %peer_node_id, "onion message over budget; dropped");
        }
    }
    fn next_onion_message_for_peer(&self, peer_node_id: PublicKey) -> Option<OnionMessage> {
        self.inner.next_onion_message_for_peer(peer_node_id)
    }
    fn timer_tick_occurred(&self) {
        self.inner.timer_tick_occurred()
    }
}
