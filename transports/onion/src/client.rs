//! A plain LDK onion-message node: a forwarder, or a maker's client that
//! sends NIP-01 to a board over onion messages and reads the replies that
//! come back over its blinded reply path.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use civkit_bolt8::wire::{NostrHandler, WireLimits};
use civkit_bolt8::{OnionDeps, OnionFactory, PeerMgr};
use civkit_framework::{Error, Result};
use lightning::bitcoin::secp256k1::{PublicKey, Secp256k1};
use lightning::blinded_path::message::{BlindedMessagePath, MessageContext, MessageForwardNode};
use lightning::ln::msgs::DecodeError;
use lightning::onion_message::messenger::{
    CustomOnionMessageHandler, Destination, MessageSendInstructions, Responder, ResponseInstruction,
};
use lightning::sign::{KeysManager, NodeSigner};
use tokio::sync::mpsc;

use crate::messages::{read_tlv, NostrOnion, RELAY_TLV};
use crate::router::PeersRouter;
use crate::{messenger, Messenger};

/// Collects the relay messages a board sends back.
pub struct ReplyCollector {
    replies: mpsc::UnboundedSender<String>,
}

impl CustomOnionMessageHandler for ReplyCollector {
    type CustomMessage = NostrOnion;
    fn handle_custom_message(
        &self,
        msg: NostrOnion,
        _context: Option<Vec<u8>>,
        _responder: Option<Responder>,
    ) -> Option<(NostrOnion, ResponseInstruction)> {
        if msg.tlv_type == RELAY_TLV {
            let _ = self.replies.send(msg.json);
        }
        None
    }
    fn read_custom_message<R: lightning::io::Read>(
        &self,
        message_type: u64,
        buffer: &mut R,
    ) -> std::result::Result<Option<NostrOnion>, DecodeError> {
        if message_type != RELAY_TLV {
            return Ok(None);
        }
        read_tlv(message_type, buffer, 65_000)
            .map(Some)
            .ok_or(DecodeError::InvalidValue)
    }

    fn release_pending_custom_messages(&self) -> Vec<(NostrOnion, MessageSendInstructions)> {
        Vec::new()
    }
}

/// A Lightning node that speaks onion messages and nothing else.
pub struct OnionNode {
    pub pm: Arc<PeerMgr>,
    pub node_id: PublicKey,
    pub addr: Option<SocketAddr>,
    keys: Arc<OnceLock<Arc<KeysManager>>>,
    sender: Arc<OnceLock<Arc<Messenger<ReplyCollector>>>>,
    replies: mpsc::UnboundedReceiver<String>,
}

impl std::fmt::Debug for OnionNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnionNode")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl OnionNode {
    /// A node with a fresh identity. It forwards onion messages, collects
    /// replies addressed to it, and sends through `via` hops (empty: direct
    /// to a peer). With `listen`, it accepts connections there.
    pub async fn start(via: Vec<PublicKey>, listen: Option<SocketAddr>) -> Result<OnionNode> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| Error::Invalid(format!("OS random source: {e}")))?;
        let (tx, replies) = mpsc::unbounded_channel();
        let sender: Arc<OnceLock<Arc<Messenger<ReplyCollector>>>> = Arc::default();
        let keys_slot: Arc<OnceLock<Arc<KeysManager>>> = Arc::default();
        let factory: OnionFactory = {
            let (sender, keys_slot) = (sender.clone(), keys_slot.clone());
            Box::new(move |deps: OnionDeps| {
                let m = Arc::new(messenger(
                    deps.keys.clone(),
                    PeersRouter::through(deps.keys.clone(), via.clone()),
                    Arc::new(ReplyCollector {
                        replies: tx.clone(),
                    }),
                ));
                let _ = sender.set(m.clone());
                let _ = keys_slot.set(deps.keys);
                m
            })
        };
        // Onion messages only: NIP-01 custom messages are not used here.
        let (events, _) = mpsc::channel(1);
        let (pm, node_id) = civkit_bolt8::peer_manager(
            civkit_bolt8::keys_manager(&seed),
            Arc::new(NostrHandler::new(events, WireLimits::client())),
            Some((factory, None)),
        )?;
        let addr = match listen {
            Some(a) => {
                let listener = tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| Error::io("bind", e))?;
                let local = listener
                    .local_addr()
                    .map_err(|e| Error::io("local address", e))?;
                let pm = pm.clone();
                tokio::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        if let Ok(std) = stream.set_nodelay(true).and_then(|_| stream.into_std()) {
                            tokio::spawn(lightning_net_tokio::setup_inbound(pm.clone(), std));
                        }
                    }
                });
                Some(local)
            }
            None => None,
        };
        Ok(OnionNode {
            pm,
            node_id,
            addr,
            keys: keys_slot,
            sender,
            replies,
        })
    }

    /// Connect to a peer and wait until it is ready.
    pub async fn connect(&self, id: PublicKey, addr: SocketAddr) -> Result<()> {
        let conn = civkit_bolt8::connect_outbound(self.pm.clone(), id, addr)
            .await
            .ok_or_else(|| Error::Invalid(format!("cannot reach {addr}")))?;
        tokio::spawn(conn);
        for _ in 0..500 {
            if self.pm.peer_by_node_id(&id).is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(Error::Invalid(format!(
            "handshake with {id} did not complete"
        )))
    }

    /// A blinded path back to this node whose first hops are `hops` (each
    /// must be connected to the next; the last one to this node).
    pub fn reply_path(&self, hops: &[PublicKey]) -> Result<BlindedMessagePath> {
        let keys = self
            .keys
            .get()
            .ok_or_else(|| Error::Invalid("node not started".into()))?;
        let nodes: Vec<MessageForwardNode> = hops
            .iter()
            .map(|&node_id| MessageForwardNode {
                node_id,
                short_channel_id: None,
            })
            .collect();
        Ok(BlindedMessagePath::new(
            &nodes,
            self.node_id,
            keys.get_receive_auth_key(),
            MessageContext::Custom(Vec::new()),
            &**keys,
            &Secp256k1::new(),
        ))
    }

    /// Send one NIP-01 client message to `destination`, with `reply_path`.
    pub fn send(
        &self,
        destination: Destination,
        json: String,
        reply_path: Option<BlindedMessagePath>,
    ) -> Result<()> {
        let m = self
            .sender
            .get()
            .ok_or_else(|| Error::Invalid("node not started".into()))?;
        let instructions = match reply_path {
            Some(reply_path) => MessageSendInstructions::WithSpecifiedReplyPath {
                destination,
                reply_path,
            },
            None => MessageSendInstructions::WithoutReplyPath { destination },
        };
        m.send_onion_message(NostrOnion::client(json), instructions)
            .map_err(|e| Error::Invalid(format!("cannot send the onion message: {e:?}")))?;
        self.pm.process_events();
        Ok(())
    }

    /// The next reply that came back over a reply path.
    pub async fn reply(&mut self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, self.replies.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next reply, parsed as a NIP-01 relay message (`None` after
    /// `timeout`; `Some(Err)` for a reply that is not one).
    pub async fn reply_message(
        &mut self,
        timeout: Duration,
    ) -> Option<Result<civkit_framework::wire::RelayMessage<'static>>> {
        let text = self.reply(timeout).await?;
        Some(civkit_framework::wire::parse_relay(&text))
    }
}
