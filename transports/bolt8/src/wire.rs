//! The custom Lightning messages that carry NIP-01, and the LDK handler that
//! moves them between `PeerManager` and the transport's tasks.
//!
//! | type | direction | payload |
//! |---|---|---|
//! | 32769 | to the receiver's relay side | one NIP-01 client message, UTF-8 JSON |
//! | 32771 | to the receiver's client side | one NIP-01 relay message, UTF-8 JSON |
//!
//! Both are odd ("it's OK to be odd", BOLT1): a peer that does not speak
//! civkit ignores them. The handler also carries the staking-credentials
//! policy gossip (types 37563 and 37564, [`crate::gossip`]) to and from the
//! peers that ask for it with the init feature bit
//! [`crate::gossip::GOSSIP_FEATURE_BIT`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use civkit_framework::metrics::{PromCounter, PromGauge};
use civkit_framework::ScopedMetrics;
use lightning::bitcoin::secp256k1::PublicKey;
use lightning::ln::msgs::{
    BaseMessageHandler, DecodeError, ErrorAction, Init, LightningError, MessageSendEvent,
    OnionMessage, OnionMessageHandler, WarningMessage,
};
use lightning::ln::peer_handler::CustomMessageHandler;
use lightning::ln::types::ChannelId;
use lightning::ln::wire::{CustomMessageReader, Type};
use lightning::types::features::{InitFeatures, NodeFeatures};
use lightning::util::ser::{LengthLimitedRead, Writeable, Writer};
use tokio::sync::mpsc;

use crate::gossip::{
    SignedPolicy, CREDENTIAL_POLICY, GOSSIP_FEATURE_BIT, MAX_POLICY_BYTES, SERVICE_POLICY,
};

/// Custom message type of NIP-01 client messages.
pub const CLIENT_MSG: u16 = 32769;
/// Custom message type of NIP-01 relay messages.
pub const RELAY_MSG: u16 = 32771;

/// One NIP-01 message in a custom Lightning message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NostrWire {
    pub msg_type: u16,
    pub json: String,
}

impl Type for NostrWire {
    fn type_id(&self) -> u16 {
        self.msg_type
    }
}

impl Writeable for NostrWire {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), lightning::io::Error> {
        w.write_all(self.json.as_bytes())
    }
}

/// A custom message civkit reads or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CivkitWire {
    Nostr(NostrWire),
    Policy(Box<SignedPolicy>),
}

impl Type for CivkitWire {
    fn type_id(&self) -> u16 {
        match self {
            CivkitWire::Nostr(m) => m.msg_type,
            CivkitWire::Policy(p) => p.type_id(),
        }
    }
}

impl Writeable for CivkitWire {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), lightning::io::Error> {
        match self {
            CivkitWire::Nostr(m) => m.write(w),
            CivkitWire::Policy(p) => w.write_all(&p.encode()),
        }
    }
}

/// Policy messages waiting to go out, at most.
const POLICY_OUTBOX: usize = 4_096;
/// Policy messages received and not yet looked at, at most.
const POLICY_INBOX: usize = 1_024;

/// What the handler tells the transport.
#[derive(Debug)]
pub enum WireEvent {
    /// A peer finished the handshake; its messages arrive on `inbox`, which
    /// ends when the peer disconnects.
    Connected {
        peer: PublicKey,
        inbound: bool,
        /// The peer's `init` says it forwards onion messages.
        onion_messages: bool,
        inbox: mpsc::Receiver<NostrWire>,
    },
    /// A peer left (best effort: the inbox ending is the reliable signal).
    Disconnected { peer: PublicKey },
}

/// Counters of dropped input and refused peers, shown by `peers list`.
#[derive(Debug, Default)]
pub struct WireCounters {
    pub oversized: AtomicU64,
    pub undecodable: AtomicU64,
    /// Peers disconnected because they sent faster than their session reads.
    pub inbox_overflows: AtomicU64,
    /// Peers disconnected because they did not read what we sent.
    pub outbox_overflows: AtomicU64,
    /// Inbound connections refused over `max_inbound_peers`.
    pub refused_inbound: AtomicU64,
    /// Policy messages dropped: undecodable, or arriving faster than read.
    pub policy_dropped: AtomicU64,
    /// Custom messages (NIP-01 and policy) received from peers, and sent.
    pub received: PromCounter,
    pub sent: PromCounter,
}

/// The transport's metrics, made when it is built (so they exist, at zero,
/// before it runs).
#[derive(Debug, Clone)]
pub struct Bolt8Metrics {
    pub received: PromCounter,
    pub sent: PromCounter,
    pub peers: PromGauge,
}

impl Bolt8Metrics {
    /// Registered under the transport's instance.
    pub fn new(m: &ScopedMetrics) -> Self {
        Bolt8Metrics {
            received: m.counter(
                "bolt8_messages_received",
                "civkit custom messages received from BOLT8 peers",
            ),
            sent: m.counter(
                "bolt8_messages_sent",
                "civkit custom messages handed to BOLT8 peers",
            ),
            peers: m.gauge("bolt8_peers", "BOLT8 peers connected now"),
        }
    }
}

/// Bounds of the handler's queues and connections.
#[derive(Debug, Clone)]
pub struct WireLimits {
    /// Largest NIP-01 payload of one custom message.
    pub max_message_bytes: usize,
    /// Messages from one peer waiting for its session; one more disconnects it.
    pub inbox_messages: usize,
    /// Bytes waiting to go to one peer; more disconnects it (it does not read).
    pub outbox_bytes: usize,
    /// Inbound peers not in `trusted` connected at once; more are refused.
    pub max_inbound_peers: usize,
    /// Peers exempt from `max_inbound_peers` (the configured ones).
    pub trusted: HashSet<PublicKey>,
}

impl WireLimits {
    /// Limits for a tool or client with one or a few peers.
    pub fn client() -> Self {
        WireLimits {
            max_message_bytes: 65_000,
            inbox_messages: 4_096,
            outbox_bytes: 64 << 20,
            max_inbound_peers: 64,
            trusted: HashSet::new(),
        }
    }
}

/// Messages LDK may take for one peer after it reported the peer's send
/// buffer empty (below LDK's 32 messages between pings).
const CREDIT: usize = 16;

/// One peer's messages waiting to enter LDK's send buffer.
#[derive(Default)]
struct Outbox {
    queue: VecDeque<NostrWire>,
    bytes: usize,
    /// Messages LDK may take now; refilled when LDK reports the buffer empty.
    credit: usize,
}

/// A peer's queue is over its bound: it is not reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxFull;

/// The `CustomMessageHandler` given to LDK.
pub struct NostrHandler {
    events: mpsc::Sender<WireEvent>,
    inboxes: Mutex<HashMap<PublicKey, (mpsc::Sender<NostrWire>, bool)>>,
    outboxes: Mutex<HashMap<PublicKey, Outbox>>,
    limits: WireLimits,
    /// Set when a peer's LDK send buffer drained and its outbox has more.
    wake: tokio::sync::Notify,
    pub counters: WireCounters,
    /// Peers whose init asked for policy gossip.
    gossip_peers: Mutex<HashSet<PublicKey>>,
    policy_out: Mutex<VecDeque<(PublicKey, SignedPolicy)>>,
    policy_in: mpsc::Sender<(PublicKey, SignedPolicy)>,
    policy_rx: Mutex<Option<mpsc::Receiver<(PublicKey, SignedPolicy)>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NostrHandler {
    /// A handler reporting peers to `events`, within `limits`.
    pub fn new(events: mpsc::Sender<WireEvent>, limits: WireLimits) -> Self {
        let (policy_in, policy_rx) = mpsc::channel(POLICY_INBOX);
        NostrHandler {
            events,
            inboxes: Mutex::default(),
            outboxes: Mutex::default(),
            limits,
            wake: tokio::sync::Notify::new(),
            counters: WireCounters::default(),
            gossip_peers: Mutex::default(),
            policy_out: Mutex::default(),
            policy_in,
            policy_rx: Mutex::new(Some(policy_rx)),
        }
    }

    /// Count messages in the node's metrics (`civkit_bolt8_messages_*`).
    pub fn with_metrics(mut self, metrics: &Bolt8Metrics) -> Self {
        self.counters.received = metrics.received.clone();
        self.counters.sent = metrics.sent.clone();
        self
    }

    /// The policy messages peers send, with the peer they came from (once:
    /// the gossip task or a client takes it).
    pub fn take_policies(&self) -> Option<mpsc::Receiver<(PublicKey, SignedPolicy)>> {
        lock(&self.policy_rx).take()
    }

    /// Peers connected now that asked for policy gossip.
    pub fn gossip_peers(&self) -> Vec<PublicKey> {
        lock(&self.gossip_peers).iter().copied().collect()
    }

    /// Queue a policy message for `peer`; `false` when the queue is full.
    pub fn queue_policy(&self, peer: PublicKey, m: SignedPolicy) -> bool {
        let mut out = lock(&self.policy_out);
        if out.len() >= POLICY_OUTBOX {
            return false;
        }
        out.push_back((peer, m));
        self.wake.notify_one();
        true
    }

    /// Queue a message for a peer; `PeerManager::process_events` sends it as
    /// LDK's send buffer drains. `Err` when the peer's queue is over
    /// `outbox_bytes` (the caller disconnects it).
    pub fn queue(&self, peer: PublicKey, msg: NostrWire) -> Result<(), OutboxFull> {
        let mut all = lock(&self.outboxes);
        let out = all.entry(peer).or_insert_with(|| Outbox {
            credit: CREDIT,
            ..Outbox::default()
        });
        if out.bytes + msg.json.len() > self.limits.outbox_bytes {
            self.counters
                .outbox_overflows
                .fetch_add(1, Ordering::Relaxed);
            return Err(OutboxFull);
        }
        out.bytes += msg.json.len();
        out.queue.push_back(msg);
        Ok(())
    }

    /// LDK's send buffer for `peer` is empty: let it take more.
    fn drained(&self, peer: PublicKey) {
        let mut all = lock(&self.outboxes);
        if let Some(out) = all.get_mut(&peer) {
            out.credit = CREDIT;
            if !out.queue.is_empty() {
                self.wake.notify_one();
            }
        }
    }

    /// Resolves when a drained peer has more to send: run
    /// `PeerManager::process_events` then.
    pub async fn wants_processing(&self) {
        self.wake.notified().await
    }
}

impl CustomMessageReader for NostrHandler {
    type CustomMessage = CivkitWire;

    fn read<R: LengthLimitedRead>(
        &self,
        msg_type: u16,
        buffer: &mut R,
    ) -> Result<Option<CivkitWire>, DecodeError> {
        if msg_type == CREDENTIAL_POLICY || msg_type == SERVICE_POLICY {
            let policy = read_bytes(buffer, MAX_POLICY_BYTES)
                .ok()
                .and_then(|b| SignedPolicy::decode(msg_type, &b).ok());
            return match policy {
                Some(p) => Ok(Some(CivkitWire::Policy(Box::new(p)))),
                None => {
                    // Not the spec's layout: a protocol error (LDK disconnects).
                    self.counters.policy_dropped.fetch_add(1, Ordering::Relaxed);
                    Err(DecodeError::InvalidValue)
                }
            };
        }
        Ok(decode(
            msg_type,
            buffer,
            self.limits.max_message_bytes,
            &self.counters,
        )?
        .map(CivkitWire::Nostr))
    }
}

/// Read one custom message body: `None` for types that are not ours, an
/// error (LDK disconnects) for bodies over `max_bytes` or not UTF-8.
pub fn decode<R: lightning::io::Read>(
    msg_type: u16,
    buffer: &mut R,
    max_bytes: usize,
    counters: &WireCounters,
) -> Result<Option<NostrWire>, DecodeError> {
    if msg_type != CLIENT_MSG && msg_type != RELAY_MSG {
        // Unknown: LDK ignores odd types and disconnects on even ones.
        return Ok(None);
    }
    match read_text(buffer, max_bytes) {
        Ok(json) => Ok(Some(NostrWire { msg_type, json })),
        Err(Unreadable::Short) => Err(DecodeError::ShortRead),
        Err(Unreadable::TooLong) => {
            counters.oversized.fetch_add(1, Ordering::Relaxed);
            Err(DecodeError::InvalidValue)
        }
        Err(Unreadable::NotUtf8) => {
            counters.undecodable.fetch_add(1, Ordering::Relaxed);
            Err(DecodeError::InvalidValue)
        }
    }
}

/// Why a message body could not be read as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// The reader failed.
    Short,
    /// Over the allowed length (reading stops there).
    TooLong,
    NotUtf8,
}

/// The rest of `buffer` as UTF-8 text of at most `max` bytes, read in
/// chunks so an oversized body is refused without being held whole. Shared
/// by the custom-message and onion-message readers.
pub fn read_text<R: lightning::io::Read>(buffer: &mut R, max: usize) -> Result<String, Unreadable> {
    String::from_utf8(read_bytes(buffer, max)?).map_err(|_| Unreadable::NotUtf8)
}

/// The rest of `buffer`, at most `max` bytes (read in chunks).
fn read_bytes<R: lightning::io::Read>(buffer: &mut R, max: usize) -> Result<Vec<u8>, Unreadable> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = buffer.read(&mut chunk).map_err(|_| Unreadable::Short)?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        if bytes.len() > max {
            return Err(Unreadable::TooLong);
        }
    }
    Ok(bytes)
}

fn disconnect(why: &str) -> LightningError {
    LightningError {
        err: why.to_string(),
        action: ErrorAction::DisconnectPeerWithWarning {
            msg: WarningMessage {
                channel_id: ChannelId([0; 32]),
                data: why.to_string(),
            },
        },
    }
}

impl CustomMessageHandler for NostrHandler {
    fn handle_custom_message(
        &self,
        msg: CivkitWire,
        peer: PublicKey,
    ) -> Result<(), LightningError> {
        self.counters.received.inc();
        let msg = match msg {
            CivkitWire::Nostr(m) => m,
            CivkitWire::Policy(p) => {
                if self.policy_in.try_send((peer, *p)).is_err() {
                    self.counters.policy_dropped.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
        };
        let inbox = lock(&self.inboxes).get(&peer).map(|(tx, _)| tx.clone());
        match inbox.map(|tx| tx.try_send(msg)) {
            Some(Err(mpsc::error::TrySendError::Full(_))) => {
                self.counters
                    .inbox_overflows
                    .fetch_add(1, Ordering::Relaxed);
                Err(disconnect("civkit: sending faster than the board reads"))
            }
            _ => Ok(()),
        }
    }

    fn get_and_clear_pending_msg(&self) -> Vec<(PublicKey, CivkitWire)> {
        let mut out = Vec::new();
        let mut outboxes = lock(&self.outboxes);
        for (peer, o) in outboxes.iter_mut() {
            while o.credit > 0 {
                let Some(m) = o.queue.pop_front() else { break };
                o.bytes -= m.json.len();
                o.credit -= 1;
                out.push((*peer, CivkitWire::Nostr(m)));
            }
        }
        // Policies are few and small: they use the same credit.
        let mut policies = lock(&self.policy_out);
        let mut kept = VecDeque::new();
        while let Some((peer, m)) = policies.pop_front() {
            match outboxes.get_mut(&peer) {
                Some(o) if o.credit > 0 => {
                    o.credit -= 1;
                    out.push((peer, CivkitWire::Policy(Box::new(m))));
                }
                Some(_) => kept.push_back((peer, m)),
                None => {} // gone
            }
        }
        *policies = kept;
        self.counters.sent.inc_by(out.len() as u64);
        out
    }

    fn peer_disconnected(&self, peer: PublicKey) {
        lock(&self.gossip_peers).remove(&peer);
        lock(&self.inboxes).remove(&peer);
        lock(&self.outboxes).remove(&peer);
        let _ = self.events.try_send(WireEvent::Disconnected { peer });
    }

    fn peer_connected(&self, peer: PublicKey, msg: &Init, inbound: bool) -> Result<(), ()> {
        let mut inboxes = lock(&self.inboxes);
        if inbound && !self.limits.trusted.contains(&peer) {
            let strangers = inboxes
                .iter()
                .filter(|(id, (_, inb))| *inb && !self.limits.trusted.contains(id))
                .count();
            if strangers >= self.limits.max_inbound_peers {
                self.counters
                    .refused_inbound
                    .fetch_add(1, Ordering::Relaxed);
                return Err(());
            }
        }
        let (tx, rx) = mpsc::channel(self.limits.inbox_messages.max(1));
        let event = WireEvent::Connected {
            peer,
            inbound,
            onion_messages: msg.features.supports_onion_messages(),
            inbox: rx,
        };
        // A full event queue means connections arrive faster than they are
        // set up: refuse this one. (No listener: a handler used only for its
        // types, as by the onion client.)
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            return Err(());
        }
        inboxes.insert(peer, (tx, inbound));
        if wants_gossip(msg.features.le_flags()) {
            lock(&self.gossip_peers).insert(peer);
        }
        lock(&self.outboxes).insert(
            peer,
            Outbox {
                credit: CREDIT,
                ..Outbox::default()
            },
        );
        Ok(())
    }

    fn provided_node_features(&self) -> NodeFeatures {
        NodeFeatures::empty()
    }

    fn provided_init_features(&self, _peer: PublicKey) -> InitFeatures {
        let mut f = InitFeatures::empty();
        // Optional (odd), in the experimental range: cannot fail.
        let _ = f.set_optional_custom_bit(GOSSIP_FEATURE_BIT);
        f
    }
}

/// Whether init features (little-endian, as LDK holds them) set the gossip bit.
fn wants_gossip(le_flags: &[u8]) -> bool {
    le_flags
        .get(GOSSIP_FEATURE_BIT / 8)
        .is_some_and(|b| b & (1 << (GOSSIP_FEATURE_BIT % 8)) != 0)
}

/// The onion-message handler LDK is given: the real one (or none), plus the
/// one signal LDK gives about a peer's send buffer. LDK asks for the next
/// onion message for a peer only when that peer's buffer is empty and it has
/// answered recent pings; custom messages get that as their credit.
pub(crate) struct FlowGate {
    pub inner: Arc<dyn OnionMessageHandler + Send + Sync>,
    pub handler: Arc<NostrHandler>,
}

impl BaseMessageHandler for FlowGate {
    fn get_and_clear_pending_msg_events(&self) -> Vec<MessageSendEvent> {
        self.inner.get_and_clear_pending_msg_events()
    }
    fn peer_disconnected(&self, their_node_id: PublicKey) {
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

impl OnionMessageHandler for FlowGate {
    fn handle_onion_message(&self, peer_node_id: PublicKey, msg: &OnionMessage) {
        self.inner.handle_onion_message(peer_node_id, msg)
    }
    fn next_onion_message_for_peer(&self, peer_node_id: PublicKey) -> Option<OnionMessage> {
        self.handler.drained(peer_node_id);
        self.inner.next_onion_message_for_peer(peer_node_id)
    }
    fn timer_tick_occurred(&self) {
        self.inner.timer_tick_occurred()
    }
}
