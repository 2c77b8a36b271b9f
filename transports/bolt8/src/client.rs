//! A minimal BOLT8 client on the same LDK stack, for tools and benchmarks:
//! connect to a board, send NIP-01 client messages, read relay messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use civkit_framework::{Error, Result};
use lightning::bitcoin::secp256k1::PublicKey;
use tokio::sync::mpsc;

use crate::wire::{NostrHandler, NostrWire, WireEvent, WireLimits, CLIENT_MSG};
use crate::PeerMgr;

/// A BOLT8 client with its own random node identity, talking to one board
/// at a time.
pub struct Bolt8Client {
    pm: Arc<PeerMgr>,
    handler: Arc<NostrHandler>,
    events: mpsc::Receiver<WireEvent>,
    /// Messages of the connected board.
    inbox: Option<mpsc::Receiver<NostrWire>>,
    flow: tokio::task::JoinHandle<()>,
}

impl Drop for Bolt8Client {
    fn drop(&mut self) {
        self.flow.abort();
    }
}

impl std::fmt::Debug for Bolt8Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bolt8Client")
    }
}

impl Bolt8Client {
    /// A client with a fresh random identity.
    pub fn new() -> Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| Error::Invalid(format!("OS random source: {e}")))?;
        let (tx, events) = mpsc::channel(16);
        let handler = Arc::new(NostrHandler::new(tx, WireLimits::client()));
        let (pm, _) = crate::peer_manager(crate::keys_manager(&seed), handler.clone(), None)?;
        let flow = crate::spawn_flow(pm.clone(), handler.clone());
        Ok(Bolt8Client {
            pm,
            handler,
            events,
            inbox: None,
            flow,
        })
    }

    /// Connect and wait until the handshake and `init` exchange are done.
    pub async fn connect(&mut self, id: PublicKey, addr: SocketAddr) -> Result<()> {
        let conn = crate::connect_outbound(self.pm.clone(), id, addr)
            .await
            .ok_or_else(|| Error::Transport {
                instance: "client".into(),
                message: format!("cannot reach {addr}"),
            })?;
        tokio::spawn(conn);
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.events.recv()).await {
                Ok(Some(WireEvent::Connected { peer, inbox, .. })) if peer == id => {
                    self.inbox = Some(inbox);
                    return Ok(());
                }
                Ok(Some(_)) => continue,
                _ => {
                    return Err(Error::Transport {
                        instance: "client".into(),
                        message: "handshake did not complete".into(),
                    })
                }
            }
        }
    }

    /// Disconnect and wait for LDK to report it.
    pub async fn disconnect(&mut self, id: PublicKey) {
        self.pm.disconnect_by_node_id(id);
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_secs(5), self.events.recv()).await
        {
            if matches!(ev, WireEvent::Disconnected { peer } if peer == id) {
                break;
            }
        }
    }

    /// Queue NIP-01 client messages for `id`, then send them. `Err` when
    /// more is queued than the board reads (`WireLimits::client`).
    pub fn send(&self, id: PublicKey, messages: impl IntoIterator<Item = String>) -> Result<()> {
        for json in messages {
            let msg = NostrWire {
                msg_type: CLIENT_MSG,
                json,
            };
            self.handler.queue(id, msg).map_err(|_| Error::Transport {
                instance: "client".into(),
                message: "the board does not read what it is sent".into(),
            })?;
        }
        self.pm.process_events();
        Ok(())
    }

    /// The credential and service policies peers send (this client asks for
    /// them in its init); once.
    pub fn take_policies(
        &self,
    ) -> Option<mpsc::Receiver<(PublicKey, crate::gossip::SignedPolicy)>> {
        self.handler.take_policies()
    }

    /// The next relay message from the connected board, or `None` after
    /// `timeout` or once it disconnected.
    pub async fn recv(&mut self, timeout: Duration) -> Option<String> {
        let inbox = self.inbox.as_mut()?;
        tokio::time::timeout(timeout, inbox.recv())
            .await
            .ok()
            .flatten()
            .map(|m| m.json)
    }
}
