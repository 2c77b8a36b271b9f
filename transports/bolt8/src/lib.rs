//! # civkit-bolt8
//!
//! The BOLT8 peer transport: the `bolt8` box of `docs/ARCHITECTURE.md`, through
//! which boards federate. It runs LDK's `PeerManager` (no channels: channel
//! opens are refused by `ErroringMessageHandler`) over `lightning-net-tokio`,
//! with one persisted Lightning node identity.
//!
//! NIP-01 travels in two odd custom messages ([`wire`]). Each connected peer
//! is an ordinary [`civkit_framework::Session`] whose origin is the peer's
//! node id, so admission, storage, subscriptions and fan-out are the node's,
//! not this crate's. Federation is two lists per peer:
//!
//! - `import`: filters this board subscribes to on the peer; the events it
//!   sends back are submitted to the node like any other event (same
//!   admission chain, duplicates dropped by id, so rings do not loop);
//! - `export`: what the peer may receive from this board (the session's scope).

#![forbid(unsafe_code)]

mod announce;
pub use announce::GossipConfig;
pub mod client;
mod control;
pub mod gossip;
mod peer;
mod tor;
pub mod wire;
pub use tor::PeerAddr;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use civkit_framework::{
    BuildContext, Error, Node, Registry, Result, Scope, SessionLimits, Shutdown, Transport,
};
use lightning::bitcoin::secp256k1::PublicKey;
use lightning::ln::msgs::OnionMessageHandler;
use lightning::ln::peer_handler::{
    ErroringMessageHandler, IgnoringMessageHandler, MessageHandler, PeerManager,
};
use lightning::sign::{KeysManager, NodeSigner, Recipient};
use lightning::util::logger::{Level, Logger, Record};
use lightning_net_tokio::SocketDescriptor;
use nostr::Filter;
use tokio::sync::mpsc;
use tracing::{info, warn, Instrument};

use wire::NostrHandler;

/// LDK's peer manager as this transport configures it (the generic list lives here only).
pub type PeerMgr = PeerManager<
    SocketDescriptor,
    Arc<ErroringMessageHandler>,
    Arc<IgnoringMessageHandler>,
    Arc<dyn OnionMessageHandler + Send + Sync>,
    Arc<LdkTracing>,
    Arc<NostrHandler>,
    Arc<KeysManager>,
    Arc<IgnoringMessageHandler>,
>;

/// What the peer manager hands the onion-message layer it is built with:
/// the node identity's keys, the node, and a way to flush the peer manager.
pub struct OnionDeps {
    pub keys: Arc<KeysManager>,
    /// The node behind this transport (`None` for a bare client).
    pub node: Option<Node>,
    pub node_id: PublicKey,
    pub wake: Arc<dyn Fn() + Send + Sync>,
}

/// Builds the onion-message handler plugged into the peer manager.
pub type OnionFactory =
    Box<dyn Fn(OnionDeps) -> Arc<dyn OnionMessageHandler + Send + Sync> + Send + Sync>;

/// A connected peer, as riders (the onion layer) see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    pub node_id: PublicKey,
    /// Listed in this transport's `peers` config.
    pub configured: bool,
    /// Its `init` says it supports onion messages.
    pub onion_messages: bool,
}

/// What a bolt8 transport instance hands the transports that ride on it
/// (the onion-message gateway), when it is built: its Lightning identity,
/// its connected peers as they change, and a place for the onion layer.
pub struct Bolt8Handle {
    instance: Arc<str>,
    keys: Arc<KeysManager>,
    node_id: PublicKey,
    onion: Mutex<Option<OnionFactory>>,
    peers: tokio::sync::watch::Sender<Vec<PeerInfo>>,
}

impl std::fmt::Debug for Bolt8Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bolt8Handle")
            .field("instance", &self.instance)
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl Bolt8Handle {
    /// The transport's instance name.
    pub fn instance(&self) -> &str {
        &self.instance
    }
    /// The node identity's keys.
    pub fn keys(&self) -> &Arc<KeysManager> {
        &self.keys
    }
    /// The Lightning node id.
    pub fn node_id(&self) -> PublicKey {
        self.node_id
    }
    /// Connected peers, sorted by node id; changes when one connects or leaves.
    pub fn peers(&self) -> tokio::sync::watch::Receiver<Vec<PeerInfo>> {
        self.peers.subscribe()
    }
    /// Plug the onion-message layer in (before the transport runs). One per
    /// instance: a second one is a config error.
    pub fn set_onion_layer(&self, factory: OnionFactory) -> Result<()> {
        let mut slot = lock(&self.onion);
        if slot.is_some() {
            return Err(Error::config(
                format!("transports.{}", self.instance),
                "carries two onion-message transports; one per bolt8 transport",
            ));
        }
        *slot = Some(factory);
        Ok(())
    }
}

/// Sends LDK's log records to `tracing`.
#[derive(Debug, Default)]
pub struct LdkTracing;

impl Logger for LdkTracing {
    fn log(&self, r: Record) {
        let peer = r.peer_id.map(|p| p.to_string()).unwrap_or_default();
        match r.level {
            Level::Error => tracing::error!(target: "ldk", %peer, "{}", r.args),
            Level::Warn => tracing::warn!(target: "ldk", %peer, "{}", r.args),
            Level::Info => tracing::info!(target: "ldk", %peer, "{}", r.args),
            Level::Debug => tracing::debug!(target: "ldk", %peer, "{}", r.args),
            Level::Trace | Level::Gossip => tracing::trace!(target: "ldk", %peer, "{}", r.args),
        }
    }
}

/// One federated peer.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerConfig {
    /// `<node id hex>@host:port`; dialed at start and redialed after a drop.
    pub address: String,
    /// NIP-01 filters this board subscribes to on the peer (empty: import nothing).
    pub import: Vec<serde_json::Value>,
    /// What the peer may receive from this board (empty: `default_export`).
    pub export: Vec<serde_json::Value>,
}

/// Config of `[transports.<name>] type = "bolt8"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bolt8Config {
    /// Address and port for BOLT8 connections.
    pub listen: SocketAddr,
    /// Seed of the Lightning node identity, relative to node.data_dir (mode 0600).
    pub key_file: PathBuf,
    /// Peers to dial and what to import from and export to each.
    pub peers: Vec<PeerConfig>,
    /// What configured peers without an `export` list may receive (empty: everything).
    pub default_export: Vec<serde_json::Value>,
    /// What peers that are not configured may receive (empty: nothing).
    pub stranger_export: Vec<serde_json::Value>,
    /// Inbound peers that are not configured, connected at once; more are refused.
    pub max_inbound_peers: usize,
    /// Messages from one peer waiting for its session; a peer that sends
    /// faster is disconnected.
    pub peer_inbox_messages: usize,
    /// Bytes waiting to go to one peer; a peer that does not read them is
    /// disconnected.
    pub peer_outbox_bytes: usize,
    /// Largest NIP-01 payload in one custom message, in bytes (BOLT8 caps messages at 65535).
    pub max_message_bytes: usize,
    /// Longest wait between redials of a dropped peer, in seconds.
    pub redial_max_secs: u64,
    /// Per-peer session limits, enforced by the node. Keys left out keep
    /// this transport's defaults.
    #[serde(deserialize_with = "limits_over_defaults")]
    pub limits: SessionLimits,
    /// Staking-credentials policy gossip (`credential_policy`, `service_policy`).
    pub gossip: GossipConfig,
}

fn limits_over_defaults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SessionLimits, D::Error> {
    SessionLimits::deserialize_over(d, Bolt8Config::default().limits)
}

impl Default for Bolt8Config {
    fn default() -> Self {
        Bolt8Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9735)),
            key_file: PathBuf::from("ln_node.key"),
            peers: Vec::new(),
            default_export: Vec::new(),
            stranger_export: Vec::new(),
            max_inbound_peers: 32,
            peer_inbox_messages: 1_024,
            peer_outbox_bytes: 8 << 20,
            max_message_bytes: 65_000,
            redial_max_secs: 60,
            limits: SessionLimits {
                max_subscriptions: 50,
                ..SessionLimits::default()
            },
            gossip: GossipConfig::default(),
        }
    }
}

const EXAMPLE: &str = r#"# Address and port for BOLT8 connections.
listen = "127.0.0.1:9735"
# Seed of the Lightning node identity, relative to node.data_dir (mode 0600).
key_file = "ln_node.key"
# Peers to dial; each is a table:
#   [[{table}.peers]]
#   address = "<node id>@127.0.0.1:9736"   # redialed with backoff after a drop
#   import = [{ kinds = [38383] }]          # filters to subscribe to on the peer
#   export = [{ kinds = [38383] }]          # what the peer may receive (empty: default_export)
peers = []
# What configured peers without an export list may receive (empty: everything).
default_export = []
# What peers that are not configured may receive (empty: nothing).
stranger_export = []
# Inbound peers that are not configured, connected at once; more are refused.
max_inbound_peers = 32
# Messages from one peer waiting for its session; a faster sender is disconnected.
peer_inbox_messages = 1024
# Bytes waiting to go to one peer; a peer that does not read them is disconnected.
peer_outbox_bytes = 8388608
# Largest NIP-01 payload in one custom message, in bytes (BOLT8 caps messages at 65535).
max_message_bytes = 65000
# Longest wait between redials of a dropped peer, in seconds.
redial_max_secs = 60

[{table}.limits]
max_subscriptions = 50
max_filters = 10
max_limit = 500
default_limit = 500
max_subid_length = 64
created_at_lower_limit = 0
created_at_upper_limit = 900
events_per_second = 0.0
event_burst = 50
auth_required = false
max_event_bytes = 65536
max_filter_values = 1000
queries_per_second = 0.0
query_burst = 50
# EVENTs of one connection checked and stored at once. 1: one at a time, in order.
events_in_flight = 1

# Staking-credentials policy gossip: this board's credential_policy and
# service_policy (from its credentials service) to peers that ask for them,
# and relaying of valid ones. Needs the chain's tip for expiry heights.
[{table}.gossip]
# Blocks this board's policies stay valid after the tip.
expiry_blocks = 144
# Seconds between announcements.
announce_secs = 600
# Policy messages one peer may send per minute; more are dropped.
per_peer_per_minute = 30
# Policies of other boards held at once.
max_known = 1000
# Seconds between looks at the chain's tip.
poll_secs = 30

# The chain source: esplora, bitcoind, or none (no policy gossip).
[{table}.gossip.chain]
backend = "none"
url = ""
user = ""
password_file = ""
"#;

/// Register the `bolt8` transport.
pub fn register(registry: &mut Registry) {
    registry.register_transport_providing(
        "bolt8",
        "Lightning BOLT8 peer transport: boards federate with NIP-01 in custom messages",
        EXAMPLE,
        |cfg: Bolt8Config, ctx: &BuildContext| {
            if cfg.max_message_bytes > 65_000 {
                return Err(Error::config(
                    format!("transports.{}.max_message_bytes", ctx.instance),
                    "must fit in one BOLT8 message (at most 65000)",
                ));
            }
            let chain = cfg
                .gossip
                .chain
                .build(&ctx.data_dir)
                .map_err(|(field, e)| {
                    Error::config(
                        format!("transports.{}.gossip.chain.{field}", ctx.instance),
                        e,
                    )
                })?;
            let mut t = Bolt8::new(ctx.instance.clone(), &ctx.data_dir.join(&cfg.key_file), cfg)?;
            t.chain = chain;
            t.tor_only = ctx.tor_only;
            t.metrics = wire::Bolt8Metrics::new(&ctx.metrics());
            let handle = t.handle.clone();
            Ok((Box::new(t) as Box<dyn Transport>, handle))
        },
    );
}

/// Parse a peer's `<node id>@host:port`. The host is a Tor v3 `.onion`
/// name (dialed through the node's tor transport), an IP address, or a DNS
/// name (resolved at each direct dial, or by the exit through Tor)
/// ([`Error::Invalid`] otherwise).
pub fn parse_peer(s: &str) -> Result<(PublicKey, PeerAddr)> {
    let (id, addr) = split_peer(s)?;
    if let Some(onion) = tor::parse_onion(addr).map_err(Error::Invalid)? {
        return Ok((id, onion));
    }
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok((id, PeerAddr::Ip(a)));
    }
    match addr.parse::<lightning::ln::msgs::SocketAddress>() {
        Ok(lightning::ln::msgs::SocketAddress::Hostname { hostname, port }) => Ok((
            id,
            PeerAddr::Name {
                host: hostname.to_string(),
                port,
            },
        )),
        _ => Err(Error::Invalid(format!("`{addr}` is not host:port"))),
    }
}

/// `<node id>@rest`: the node id, and the rest.
fn split_peer(s: &str) -> Result<(PublicKey, &str)> {
    let (id, addr) = s
        .split_once('@')
        .ok_or_else(|| Error::Invalid(format!("`{s}` is not <node id>@host:port")))?;
    let id: PublicKey = id
        .parse()
        .map_err(|_| Error::Invalid(format!("`{id}` is not a node id (33-byte hex)")))?;
    Ok((id, addr))
}

/// Parse `<node id>@host:port` with an IP address or DNS name (resolved
/// now) ([`Error::Invalid`] otherwise).
pub fn parse_address(s: &str) -> Result<(PublicKey, SocketAddr)> {
    let (id, addr) = split_peer(s)?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Invalid(format!("`{addr}` is not host:port")))?;
    Ok((id, addr))
}

/// NIP-01 filters from their config form (JSON objects such as `{ kinds = [38383] }`).
pub fn filters(values: &[serde_json::Value]) -> Result<Vec<Filter>> {
    values
        .iter()
        .map(|v| {
            serde_json::from_value(v.clone())
                .map_err(|e| Error::Invalid(format!("not a NIP-01 filter ({e})")))
        })
        .collect()
}

/// The keys of the Lightning identity of `seed`.
pub fn keys_manager(seed: &[u8; 32]) -> Arc<KeysManager> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Arc::new(KeysManager::new(
        seed,
        now.as_secs(),
        now.subsec_nanos(),
        true,
    ))
}

/// LDK's peer manager with this crate's handlers, the identity of `keys`
/// and, if given, an onion-message layer; returns it with its node id.
pub fn peer_manager(
    keys: Arc<KeysManager>,
    handler: Arc<NostrHandler>,
    onion: Option<(OnionFactory, Option<Node>)>,
) -> Result<(Arc<PeerMgr>, PublicKey)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let node_id = keys
        .get_node_id(Recipient::Node)
        .map_err(|_| Error::Invalid("cannot derive the node id".into()))?;
    let mut ephemeral = [0u8; 32];
    getrandom::getrandom(&mut ephemeral)
        .map_err(|e| Error::Invalid(format!("OS random source: {e}")))?;
    // The onion layer needs the peer manager, which needs the onion layer:
    // hand it a weak reference filled in once the manager exists.
    let slot: Arc<std::sync::OnceLock<std::sync::Weak<PeerMgr>>> = Arc::default();
    let onion_handler: Arc<dyn OnionMessageHandler + Send + Sync> = match onion {
        Some((factory, node)) => {
            let slot = slot.clone();
            factory(OnionDeps {
                keys: keys.clone(),
                node,
                node_id,
                wake: Arc::new(move || {
                    if let Some(pm) = slot.get().and_then(std::sync::Weak::upgrade) {
                        pm.process_events();
                    }
                }),
            })
        }
        None => Arc::new(IgnoringMessageHandler {}),
    };
    let onion_handler: Arc<dyn OnionMessageHandler + Send + Sync> = Arc::new(wire::FlowGate {
        inner: onion_handler,
        handler: handler.clone(),
    });
    let pm = Arc::new(PeerManager::new(
        MessageHandler {
            chan_handler: Arc::new(ErroringMessageHandler::new()),
            route_handler: Arc::new(IgnoringMessageHandler {}),
            onion_message_handler: onion_handler,
            custom_message_handler: handler,
            send_only_message_handler: Arc::new(IgnoringMessageHandler {}),
        },
        now.as_secs() as u32,
        &ephemeral,
        Arc::new(LdkTracing),
        keys,
    ));
    let _ = slot.set(Arc::downgrade(&pm));
    Ok((pm, node_id))
}

/// Dial `addr` with Nagle off (lightning-net-tokio leaves it on, which
/// stalls small request/response messages on delayed ACKs), then run the
/// connection: the returned future ends when the peer disconnects.
pub async fn connect_outbound(
    pm: Arc<PeerMgr>,
    id: PublicKey,
    addr: SocketAddr,
) -> Option<impl std::future::Future<Output = ()>> {
    let std = dial_tcp(addr).await?;
    Some(lightning_net_tokio::setup_outbound(pm, id, std))
}

/// A TCP connection to `addr` (10 s at most) with Nagle off, for LDK.
async fn dial_tcp(addr: SocketAddr) -> Option<std::net::TcpStream> {
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .ok()?
    .ok()?;
    stream.set_nodelay(true).ok()?;
    stream.into_std().ok()
}

/// Dial a configured peer: directly, or through `dialer` (the node's tor
/// transport) when it is at an onion address or when the node reaches out
/// through Tor only (`tor_only`). The returned future runs the connection
/// until the peer disconnects.
pub(crate) async fn connect_peer(
    pm: Arc<PeerMgr>,
    id: PublicKey,
    addr: &PeerAddr,
    dialer: Option<Arc<dyn civkit_framework::stream::Dialer>>,
    tor_only: bool,
) -> std::result::Result<impl std::future::Future<Output = ()>, String> {
    let std = match addr {
        PeerAddr::Ip(a) if !tor_only => dial_tcp(*a).await.ok_or("no TCP connection")?,
        PeerAddr::Name { host, port } if !tor_only => {
            let a = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or("the name does not resolve")?;
            dial_tcp(a).await.ok_or("no TCP connection")?
        }
        PeerAddr::Ip(a) => tor::dial(dialer, &a.ip().to_string(), a.port()).await?,
        PeerAddr::Name { host, port } | PeerAddr::Onion { host, port } => {
            tor::dial(dialer, host, *port).await?
        }
    };
    Ok(lightning_net_tokio::setup_outbound(pm, id, std))
}

/// Let LDK take queued custom messages as peers' send buffers drain
/// (signalled through the onion-message handler), and at least every 100 ms.
pub(crate) fn spawn_flow(
    pm: Arc<PeerMgr>,
    handler: Arc<NostrHandler>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = handler.wants_processing() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            pm.process_events();
        }
    })
}

/// The Lightning node id of a seed (what `ln_node.key` holds).
pub fn node_id_of(seed: &[u8; 32]) -> Result<PublicKey> {
    KeysManager::new(seed, 0, 0, true)
        .get_node_id(Recipient::Node)
        .map_err(|_| Error::Invalid("cannot derive the node id".into()))
}

/// The BOLT8 transport.
pub struct Bolt8 {
    config: Bolt8Config,
    federation: Arc<Federation>,
    handle: Arc<Bolt8Handle>,
    /// The chain source of the policy gossip (none: no gossip).
    pub chain: Option<Arc<dyn civkit_chain::ChainSource>>,
    /// Open no listener and dial every peer through Tor (the node's tor
    /// transport has `outbound_only = true`); connections arrive through
    /// the onion service only.
    pub tor_only: bool,
    /// Where its counters go (a registry of its own unless built by a node).
    pub metrics: wire::Bolt8Metrics,
}

impl std::fmt::Debug for Bolt8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bolt8")
            .field("config", &self.config)
            .field("gossip", &self.chain.is_some())
            .finish()
    }
}

impl Bolt8 {
    /// A transport named `instance` whose node identity seed lives at
    /// `key_path` (created with mode 0600 if absent).
    pub fn new(instance: impl Into<String>, key_path: &Path, config: Bolt8Config) -> Result<Self> {
        let instance = instance.into();
        let federation = Arc::new(Federation::from_config(&config, &instance)?);
        let (seed, created) = civkit_framework::keyfile::load_or_create(key_path)?;
        let keys = keys_manager(&seed);
        let node_id = keys
            .get_node_id(Recipient::Node)
            .map_err(|_| Error::Invalid("cannot derive the node id".into()))?;
        tracing::debug!(%instance, %node_id, created_key = created, "BOLT8 identity loaded");
        Ok(Bolt8 {
            metrics: wire::Bolt8Metrics::new(&civkit_framework::Metrics::new().scoped(&instance)),
            config,
            chain: None,
            tor_only: false,
            federation,
            handle: Arc::new(Bolt8Handle {
                instance: instance.into(),
                keys,
                node_id,
                onion: Mutex::default(),
                peers: tokio::sync::watch::channel(Vec::new()).0,
            }),
        })
    }

    /// What riders of this transport get.
    pub fn handle(&self) -> &Arc<Bolt8Handle> {
        &self.handle
    }
}

/// Shared state of a running transport.
pub(crate) struct Runtime {
    pub node: Node,
    pub pm: Arc<PeerMgr>,
    pub handler: Arc<NostrHandler>,
    pub handle: Arc<Bolt8Handle>,
    pub federation: Arc<Federation>,
    pub config: Bolt8Config,
    pub shutdown: Shutdown,
    pub peers: Mutex<HashMap<PublicKey, peer::Connected>>,
    pub dialing: Mutex<HashMap<PublicKey, (PeerAddr, tokio::task::AbortHandle)>>,
    /// Dial every peer through Tor.
    pub tor_only: bool,
    pub gossip_counters: announce::GossipCounters,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A configured peer, parsed once when the transport is built (the address
/// is resolved then, not on every connection).
#[derive(Debug)]
struct ConfiguredPeer {
    id: PublicKey,
    addr: PeerAddr,
    import: Vec<Filter>,
    export: Vec<Filter>,
}

/// Who to dial, and what to import from and export to each peer.
#[derive(Debug)]
pub(crate) struct Federation {
    peers: Vec<ConfiguredPeer>,
    default_export: Vec<Filter>,
    stranger_export: Vec<Filter>,
}

impl Federation {
    /// Parse the `peers` and `default_export` of `cfg`; errors name the key.
    fn from_config(cfg: &Bolt8Config, instance: &str) -> Result<Self> {
        let at = |k: String| {
            move |e: Error| {
                let reason = match e {
                    Error::Invalid(m) => m,
                    other => other.to_string(),
                };
                Error::config(format!("transports.{instance}.{k}"), reason)
            }
        };
        let mut peers = Vec::new();
        for (i, p) in cfg.peers.iter().enumerate() {
            let (id, addr) = parse_peer(&p.address).map_err(at(format!("peers[{i}].address")))?;
            peers.push(ConfiguredPeer {
                id,
                addr,
                import: filters(&p.import).map_err(at(format!("peers[{i}].import")))?,
                export: filters(&p.export).map_err(at(format!("peers[{i}].export")))?,
            });
        }
        Ok(Federation {
            peers,
            default_export: filters(&cfg.default_export).map_err(at("default_export".into()))?,
            stranger_export: filters(&cfg.stranger_export).map_err(at("stranger_export".into()))?,
        })
    }

    /// Node ids of the configured peers.
    pub(crate) fn ids(&self) -> std::collections::HashSet<PublicKey> {
        self.peers.iter().map(|p| p.id).collect()
    }

    /// What to import from a peer and what it may receive: (import, export).
    /// A configured peer gets its `export`, else `default_export` (empty:
    /// everything); a stranger gets `stranger_export` (empty: nothing).
    pub fn of(&self, id: &PublicKey) -> (Vec<Filter>, Scope) {
        let Some(p) = self.peers.iter().find(|p| &p.id == id) else {
            return (Vec::new(), Scope::only(self.stranger_export.clone()));
        };
        let export = if !p.export.is_empty() {
            Scope::only(p.export.clone())
        } else if self.default_export.is_empty() {
            Scope::Everything
        } else {
            Scope::only(self.default_export.clone())
        };
        (p.import.clone(), export)
    }
}

#[async_trait]
impl Transport for Bolt8 {
    async fn run(self: Box<Self>, node: Node, shutdown: Shutdown) -> Result<()> {
        let instance = self.handle.instance.clone();
        let (tx, mut rx) = mpsc::channel(256);
        let handler = Arc::new(
            NostrHandler::new(
                tx,
                wire::WireLimits {
                    max_message_bytes: self.config.max_message_bytes,
                    inbox_messages: self.config.peer_inbox_messages,
                    outbox_bytes: self.config.peer_outbox_bytes,
                    max_inbound_peers: self.config.max_inbound_peers,
                    trusted: self.federation.ids(),
                },
            )
            .with_metrics(&self.metrics),
        );
        let onion = lock(&self.handle.onion)
            .take()
            .map(|f| (f, Some(node.clone())));
        let (pm, node_id) = peer_manager(self.handle.keys.clone(), handler.clone(), onion)?;
        let span = tracing::info_span!("transport", instance = %instance, kind = "bolt8");
        let listener = if self.tor_only {
            span.in_scope(|| info!(%node_id, "BOLT8 through Tor only: no listener"));
            node.set_running_unannounced(&instance);
            None
        } else {
            let listener = tokio::net::TcpListener::bind(self.config.listen)
                .await
                .map_err(|e| Error::Transport {
                    instance: instance.to_string(),
                    message: format!("cannot listen on {}: {e}", self.config.listen),
                })?;
            let local = listener
                .local_addr()
                .map_err(|e| Error::io("local address", e))?;
            span.in_scope(|| info!(%node_id, %local, "BOLT8 listening"));
            node.set_endpoint(&instance, format!("ln://{node_id}@{local}"));
            Some(listener)
        };
        let rt = Arc::new(Runtime {
            node: node.clone(),
            pm: pm.clone(),
            handler,
            handle: self.handle.clone(),
            federation: self.federation.clone(),
            config: self.config.clone(),
            shutdown: shutdown.clone(),
            peers: Mutex::default(),
            dialing: Mutex::default(),
            tor_only: self.tor_only,
            gossip_counters: announce::GossipCounters::default(),
        });
        let gossip = self.chain.clone().map(|chain| {
            tokio::spawn(announce::run(rt.clone(), chain, self.config.gossip.clone()))
        });
        node.register_control(&instance, Arc::new(control::PeersControl(rt.clone())));
        let (weak, peers) = (Arc::downgrade(&rt), self.metrics.peers.clone());
        node.metrics().on_scrape(move || {
            let n = weak.upgrade().map_or(0, |rt| rt.pm.list_peers().len());
            peers.set(i64::try_from(n).unwrap_or(i64::MAX));
        });
        node.set_stream_sink(
            &instance,
            Arc::new(tor::TorInbound {
                pm: Arc::downgrade(&pm),
                node_id,
            }),
        );
        for p in &rt.federation.peers {
            peer::dial(&rt, p.id, p.addr.clone());
        }
        let timer = {
            let pm = pm.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tick.tick().await;
                    pm.timer_tick_occurred();
                }
            })
        };
        let flow = spawn_flow(pm.clone(), rt.handler.clone());
        let events = {
            let rt = rt.clone();
            tokio::spawn(
                async move {
                    while let Some(ev) = rx.recv().await {
                        peer::on_wire_event(&rt, ev);
                    }
                }
                .instrument(span.clone()),
            )
        };
        let mut sd = shutdown.clone();
        match listener {
            Some(listener) => loop {
                tokio::select! {
                    _ = sd.wait() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => match stream.set_nodelay(true).and_then(|_| stream.into_std()) {
                            Ok(std) => {
                                tracing::debug!("inbound BOLT8 connection");
                                tokio::spawn(lightning_net_tokio::setup_inbound(pm.clone(), std));
                            }
                            Err(e) => warn!(error = %e, "cannot take inbound socket"),
                        },
                        Err(e) => warn!(error = %e, "accept failed"),
                    },
                }
            },
            None => sd.wait().await,
        }
        for (_, (_, h)) in lock(&rt.dialing).drain() {
            h.abort();
        }
        pm.disconnect_all_peers();
        // Break the node -> control -> runtime -> node cycle and end peer sessions.
        rt.node.unregister_control(&instance);
        lock(&rt.peers).clear();
        timer.abort();
        flow.abort();
        events.abort();
        if let Some(g) = gossip {
            g.abort();
        }
        info!("BOLT8 transport stopped");
        Ok(())
    }
}
