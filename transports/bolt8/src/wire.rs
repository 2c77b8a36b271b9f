//! The custom Lightning messages that carry NIP-01, and the LDK handler that
//! moves them between `PeerManager` and the transport's tasks.
//!
//! | type | direction | payload |
//! |---|---|---|
//! | 32769 | to the receiver's relay side | one NIP-01 client message, UTF-8 JSON |
//! | 32771 | to the receiver's client side | one NIP-01 relay message, UTF-8 JSON |
//!
//! Both are odd ("it's OK to be odd", BOLT1): a peer that does not speak
//! civkit ignores them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use lightning::bitcoin::secp256k1::PublicKey;
use lightning::ln::msgs::{DecodeError, Init, LightningError};
use lightning::ln::peer_handler::CustomMessageHandler;
use lightning::ln::wire::{CustomMessageReader, Type};
use lightning::types::features::{InitFeatures, NodeFeatures};
use lightning::util::ser::{LengthLimitedRead, Writeable, Writer};
use tokio::sync::mpsc;

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

/// What the handler tells the transport.
#[derive(Debug)]
pub enum WireEvent {
    Connected { peer: PublicKey, inbound: bool },
    Disconnected { peer: PublicKey },
    Message { peer: PublicKey, msg: NostrWire },
}

/// Counters of dropped input, shown by `peers list`.
#[derive(Debug, Default)]
pub struct WireCounters {
    pub oversized: AtomicU64,
    pub undecodable: AtomicU64,
}

/// The `CustomMessageHandler` given to LDK.
pub struct NostrHandler {
    events: mpsc::UnboundedSender<WireEvent>,
    pending: Mutex<Vec<(PublicKey, NostrWire)>>,
    max_bytes: usize,
    pub counters: WireCounters,
}

impl NostrHandler {
    /// A handler reporting to `events`, refusing payloads over `max_bytes`.
    pub fn new(events: mpsc::UnboundedSender<WireEvent>, max_bytes: usize) -> Self {
        NostrHandler {
            events,
            pending: Mutex::new(Vec::new()),
            max_bytes,
            counters: WireCounters::default(),
        }
    }

    /// Queue a message for a peer; `PeerManager::process_events` sends it.
    pub fn queue(&self, peer: PublicKey, msg: NostrWire) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((peer, msg));
    }
}

impl CustomMessageReader for NostrHandler {
    type CustomMessage = NostrWire;

    fn read<R: LengthLimitedRead>(
        &self,
        msg_type: u16,
        buffer: &mut R,
    ) -> Result<Option<NostrWire>, DecodeError> {
        if msg_type != CLIENT_MSG && msg_type != RELAY_MSG {
            // Unknown: LDK ignores odd types and disconnects on even ones.
            return Ok(None);
        }
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = buffer
                .read(&mut chunk)
                .map_err(|_| DecodeError::ShortRead)?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
            if bytes.len() > self.max_bytes {
                self.counters.oversized.fetch_add(1, Ordering::Relaxed);
                return Err(DecodeError::InvalidValue);
            }
        }
        match String::from_utf8(bytes) {
            Ok(json) => Ok(Some(NostrWire { msg_type, json })),
            Err(_) => {
                self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                Err(DecodeError::InvalidValue)
            }
        }
    }
}

impl CustomMessageHandler for NostrHandler {
    fn handle_custom_message(&self, msg: NostrWire, peer: PublicKey) -> Result<(), LightningError> {
        let _ = self.events.send(WireEvent::Message { peer, msg });
        Ok(())
    }

    fn get_and_clear_pending_msg(&self) -> Vec<(PublicKey, NostrWire)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn peer_disconnected(&self, peer: PublicKey) {
        let _ = self.events.send(WireEvent::Disconnected { peer });
    }

    fn peer_connected(&self, peer: PublicKey, _msg: &Init, inbound: bool) -> Result<(), ()> {
        let _ = self.events.send(WireEvent::Connected { peer, inbound });
        Ok(())
    }

    fn provided_node_features(&self) -> NodeFeatures {
        NodeFeatures::empty()
    }

    fn provided_init_features(&self, _peer: PublicKey) -> InitFeatures {
        InitFeatures::empty()
    }
}
