//! Onion jamming defence: a token bucket per forwarding peer, and one for
//! all peers together, in front of LDK's `OnionMessenger`. Node ids cost
//! nothing and a peer's bucket starts full when it reconnects, so the global
//! bucket is what bounds the work onion messages can cause. Messages over
//! either budget are dropped and counted.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use lightning::bitcoin::secp256k1::PublicKey;
use lightning::ln::msgs::{
    BaseMessageHandler, Init, MessageSendEvent, OnionMessage, OnionMessageHandler,
};
use lightning::types::features::{InitFeatures, NodeFeatures};

use civkit_framework::rate::TokenBucket;

use crate::gateway::Counters;

/// A rate: `rate` per second (0: unlimited) with bursts of `burst`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub rate: f64,
    pub burst: u32,
}

/// An onion-message handler with per-peer and global budgets.
pub struct Budgeted<H> {
    inner: Arc<H>,
    per_peer: Rate,
    buckets: Mutex<(HashMap<PublicKey, TokenBucket>, TokenBucket)>,
    counters: Arc<Counters>,
}

impl<H> Budgeted<H> {
    /// `per_peer` messages from each peer, `total` from all peers together.
    pub fn new(inner: Arc<H>, per_peer: Rate, total: Rate, counters: Arc<Counters>) -> Self {
        Budgeted {
            inner,
            per_peer,
            buckets: Mutex::new((HashMap::new(), TokenBucket::new(total.rate, total.burst))),
            counters,
        }
    }

    fn allow(&self, peer: PublicKey) -> bool {
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (peers, global) = &mut *guard;
        let (rate, burst) = (self.per_peer.rate, self.per_peer.burst);
        if !peers
            .entry(peer)
            .or_insert_with(|| TokenBucket::new(rate, burst))
            .take()
        {
            self.counters
                .dropped_over_budget
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if !global.take() {
            self.counters
                .dropped_over_global_budget
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
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
            .0
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
