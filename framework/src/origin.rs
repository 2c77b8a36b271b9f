//! Who sent a message. Policies see an [`Origin`], never a socket.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use nostr::PublicKey;

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A network connection (websocket and the like). `ip` is `None` when the
    /// transport cannot know it; `via_tor` marks onion-service connections.
    Network { ip: Option<IpAddr>, via_tor: bool },
    /// A Lightning peer, by its hex node id.
    LightningPeer { node_id: String },
    /// An anonymous onion-message sender.
    OnionSender { has_reply_path: bool },
    /// The local operator, through the admin API.
    Admin,
    /// A service of this node, by instance name.
    Service(String),
    /// An in-process client (testing kit and embedded use).
    Memory { client: u64 },
}

/// The sender of a message, as every policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Instance name of the transport (`relay`, `ln`, ...), or `node` for local sources.
    pub transport: Arc<str>,
    /// What kind of sender this is.
    pub source: Source,
    /// The pubkey authenticated with NIP-42 on this session, if any.
    pub authenticated: Option<PublicKey>,
}

impl Origin {
    /// An origin for a transport connection.
    pub fn new(transport: impl Into<Arc<str>>, source: Source) -> Self {
        Origin {
            transport: transport.into(),
            source,
            authenticated: None,
        }
    }

    /// True for the operator and the node's own services.
    pub fn is_local(&self) -> bool {
        matches!(self.source, Source::Admin | Source::Service(_))
    }
}

/// An origin inside the node: the operator (the admin API, which local tools
/// such as `civkit-cli` go through) or a service.
///
/// [`crate::Node::submit`] takes only this type, and it cannot be built from
/// a network, peer or onion source. Events from outside enter through a
/// [`crate::Session`], which applies the per-session checks first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOrigin(Origin);

impl LocalOrigin {
    /// The local operator, through the admin API.
    pub fn admin() -> Self {
        LocalOrigin(Origin::new("node", Source::Admin))
    }
    /// A service of this node, by instance name.
    pub fn service(name: &str) -> Self {
        LocalOrigin(Origin::new("node", Source::Service(name.to_string())))
    }
    /// The origin services see.
    pub fn origin(&self) -> &Origin {
        &self.0
    }
}

/// Redacts sensitive values (IP addresses) when displayed in logs.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Network { via_tor: true, .. } => write!(f, "{}/tor", self.transport)?,
            Source::Network { ip: Some(_), .. } => write!(f, "{}/ip:[redacted]", self.transport)?,
            Source::Network { ip: None, .. } => write!(f, "{}/net", self.transport)?,
            Source::LightningPeer { node_id } => write!(f, "{}/peer:{node_id}", self.transport)?,
            Source::OnionSender { .. } => write!(f, "{}/onion", self.transport)?,
            Source::Admin => f.write_str("admin")?,
            Source::Service(name) => write!(f, "service:{name}")?,
            Source::Memory { client } => write!(f, "{}/mem:{client}", self.transport)?,
        }
        if let Some(pk) = &self.authenticated {
            write!(f, " auth:{}", pk.to_hex())?;
        }
        Ok(())
    }
}

/// Shows the address of a network origin in full, for the operator's own tools.
pub fn unredacted_address(origin: &Origin) -> Option<String> {
    match &origin.source {
        Source::Network { ip: Some(ip), .. } => Some(ip.to_string()),
        _ => None,
    }
}
