//! A message router that needs no network graph: it reaches direct peers,
//! follows an explicit list of hops when given one, and builds blinded
//! paths through a connected peer.

use std::sync::Arc;

use lightning::bitcoin::secp256k1::{self, PublicKey, Secp256k1};
use lightning::blinded_path::message::{BlindedMessagePath, MessageContext, MessageForwardNode};
use lightning::blinded_path::IntroductionNode;
use lightning::onion_message::messenger::{Destination, MessageRouter, OnionMessagePath};
use lightning::sign::{KeysManager, ReceiveAuthKey};

/// Routes onion messages over known hops.
pub struct PeersRouter {
    keys: Arc<KeysManager>,
    /// Hops to send through, in order, before the destination (empty: direct).
    via: Vec<PublicKey>,
}

impl PeersRouter {
    /// A router sending directly to peers.
    pub fn new(keys: Arc<KeysManager>) -> Self {
        PeersRouter {
            keys,
            via: Vec::new(),
        }
    }
    /// A router sending through `via` first (the first is a connected peer).
    pub fn through(keys: Arc<KeysManager>, via: Vec<PublicKey>) -> Self {
        PeersRouter { keys, via }
    }
}

fn first_hop(destination: &Destination) -> Option<PublicKey> {
    match destination {
        Destination::Node(id) => Some(*id),
        Destination::BlindedPath(p) => match p.introduction_node() {
            IntroductionNode::NodeId(id) => Some(*id),
            IntroductionNode::DirectedShortChannelId(..) => None,
        },
    }
}

impl MessageRouter for PeersRouter {
    fn find_path(
        &self,
        sender: PublicKey,
        peers: Vec<PublicKey>,
        destination: Destination,
    ) -> Result<OnionMessagePath, ()> {
        if let Some(first) = self.via.first() {
            if !peers.contains(first) {
                return Err(());
            }
            return Ok(OnionMessagePath {
                intermediate_nodes: self.via.clone(),
                destination,
                first_node_addresses: Vec::new(),
            });
        }
        match first_hop(&destination) {
            Some(id) if id == sender || peers.contains(&id) => Ok(OnionMessagePath {
                intermediate_nodes: Vec::new(),
                destination,
                first_node_addresses: Vec::new(),
            }),
            _ => Err(()),
        }
    }

    fn create_blinded_paths<T: secp256k1::Signing + secp256k1::Verification>(
        &self,
        recipient: PublicKey,
        local_node_receive_key: ReceiveAuthKey,
        context: MessageContext,
        peers: Vec<MessageForwardNode>,
        secp_ctx: &Secp256k1<T>,
    ) -> Result<Vec<BlindedMessagePath>, ()> {
        // Through a connected peer when there is one, so the path does not
        // name this node as its introduction point.
        let hops: Vec<MessageForwardNode> = peers.into_iter().take(1).collect();
        Ok(vec![BlindedMessagePath::new(
            &hops,
            recipient,
            local_node_receive_key,
            context,
            &*self.keys,
            secp_ctx,
        )])
    }
}
