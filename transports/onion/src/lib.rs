//! # civkit-onion
//!
//! The onion-message gateway: the `onion` box of `docs/ARCHITECTURE.md`. Makers
//! reach a board anonymously by sending a BOLT4 onion message through any
//! Lightning nodes that forward onion traffic; the board decrypts it and
//! handles the NIP-01 message inside exactly like one from any transport.
//!
//! It rides on a `bolt8` transport (`via`): when the node is built, the
//! registry hands it that instance's typed [`civkit_bolt8::Bolt8Handle`], and
//! it plugs an `OnionMessenger` (LDK) into it, so both use one Lightning
//! identity and one set of connections. Each message is a
//! session whose origin is an anonymous `OnionSender`; the board's `OK` (and
//! any other reply) goes back over the sender's blinded reply path. Per-peer
//! budgets drop floods ([`budget`]).

#![forbid(unsafe_code)]

pub mod budget;
pub mod client;
pub mod gateway;
pub mod messages;
pub mod router;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use civkit_bolt8::{Bolt8Handle, LdkTracing, OnionDeps, OnionFactory, PeerInfo};
use civkit_framework::{
    BuildContext, Control, Error, Node, Registry, Result, SessionLimits, Shutdown, Transport,
};
use lightning::bitcoin::secp256k1::{PublicKey, Secp256k1};
use lightning::blinded_path::message::{BlindedMessagePath, MessageContext, MessageForwardNode};
use lightning::blinded_path::EmptyNodeIdLookUp;
use lightning::ln::msgs::OnionMessageHandler;
use lightning::ln::peer_handler::IgnoringMessageHandler;
use lightning::onion_message::messenger::{
    CustomOnionMessageHandler, MessageRouter, OnionMessenger,
};
use lightning::sign::{KeysManager, NodeSigner};
use lightning::util::ser::Writeable;

use gateway::{Counters, Gateway};
use router::PeersRouter;

/// LDK's onion messenger with a custom handler `C` (the generic list lives here only).
pub type Messenger<C> = OnionMessenger<
    Arc<KeysManager>,
    Arc<KeysManager>,
    Arc<LdkTracing>,
    Arc<EmptyNodeIdLookUp>,
    Arc<PeersRouter>,
    Arc<IgnoringMessageHandler>,
    Arc<IgnoringMessageHandler>,
    Arc<IgnoringMessageHandler>,
    Arc<C>,
>;

/// An onion messenger on `keys`, routing with `router`, handing custom messages to `custom`.
pub fn messenger<C: CustomOnionMessageHandler>(
    keys: Arc<KeysManager>,
    router: PeersRouter,
    custom: Arc<C>,
) -> Messenger<C> {
    OnionMessenger::new(
        keys.clone(),
        keys,
        Arc::new(LdkTracing),
        Arc::new(EmptyNodeIdLookUp {}),
        Arc::new(router),
        Arc::new(IgnoringMessageHandler {}),
        Arc::new(IgnoringMessageHandler {}),
        Arc::new(IgnoringMessageHandler {}),
        custom,
    )
}

/// Config of `[transports.<name>] type = "onion-messages"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnionConfig {
    /// The bolt8 transport whose identity and connections carry the onion messages.
    pub via: String,
    /// Onion messages accepted per second from each peer (0: no limit).
    pub messages_per_sec_per_peer: f64,
    /// Burst of onion messages a peer may send above the rate.
    pub burst: u32,
    /// Onion messages accepted per second from all peers together (0: no limit).
    pub messages_per_sec_total: f64,
    /// Burst of onion messages above the total rate.
    pub burst_total: u32,
    /// Onion messages being handled at once; more are dropped.
    pub max_sessions: usize,
    /// Replies one onion message may cause; more are dropped.
    pub max_replies_per_message: usize,
    /// Replies waiting to be sent; more are dropped.
    pub max_pending_replies: usize,
    /// Largest NIP-01 payload in one onion message, in bytes.
    pub max_message_bytes: usize,
    /// Limits of each sender's session, enforced by the node. Keys left out
    /// keep this transport's defaults.
    #[serde(deserialize_with = "limits_over_defaults")]
    pub limits: SessionLimits,
}

fn limits_over_defaults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SessionLimits, D::Error> {
    SessionLimits::deserialize_over(d, OnionConfig::default().limits)
}

impl Default for OnionConfig {
    fn default() -> Self {
        OnionConfig {
            via: "ln".into(),
            messages_per_sec_per_peer: 50.0,
            burst: 100,
            messages_per_sec_total: 500.0,
            burst_total: 1_000,
            max_sessions: 64,
            max_replies_per_message: 25,
            max_pending_replies: 1_024,
            max_message_bytes: 30_000,
            limits: SessionLimits {
                max_limit: 20,
                default_limit: 20,
                ..SessionLimits::default()
            },
        }
    }
}

const EXAMPLE: &str = r#"# The bolt8 transport whose identity and connections carry the onion messages.
via = "ln"
# Onion messages accepted per second from each peer (0: no limit).
messages_per_sec_per_peer = 50.0
# Burst of onion messages a peer may send above the rate.
burst = 100
# Onion messages accepted per second from all peers together (0: no limit).
messages_per_sec_total = 500.0
# Burst of onion messages above the total rate.
burst_total = 1000
# Onion messages being handled at once; more are dropped.
max_sessions = 64
# Replies one onion message may cause (a REQ's events, EOSE); more are dropped.
max_replies_per_message = 25
# Replies waiting to be sent; more are dropped.
max_pending_replies = 1024
# Largest NIP-01 payload in one onion message, in bytes.
max_message_bytes = 30000

[{table}.limits]
max_subscriptions = 20
max_filters = 10
max_limit = 20
default_limit = 20
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
"#;

/// Register the `onion-messages` transport, riding on a `bolt8` instance.
pub fn register(registry: &mut Registry) {
    registry.register_transport_on(
        "onion-messages",
        "BOLT4 onion-message gateway riding on a bolt8 transport: anonymous makers",
        EXAMPLE,
        "bolt8",
        |cfg: &OnionConfig| cfg.via.as_str(),
        |cfg: OnionConfig, ctx: &BuildContext, bolt8: Arc<Bolt8Handle>| {
            let counters: Arc<Counters> = Arc::default();
            let factory: OnionFactory = {
                let (counters, cfg, instance) =
                    (counters.clone(), cfg.clone(), ctx.instance.clone());
                Box::new(move |deps: OnionDeps| gateway_handler(&counters, &cfg, &instance, deps))
            };
            bolt8.set_onion_layer(factory)?;
            counters.export(&ctx.metrics());
            Ok(Box::new(OnionTransport {
                instance: ctx.instance.clone(),
                counters,
                bolt8,
            }) as Box<dyn Transport>)
        },
    );
}

fn gateway_handler(
    counters: &Arc<Counters>,
    cfg: &OnionConfig,
    instance: &str,
    deps: OnionDeps,
) -> Arc<dyn OnionMessageHandler + Send + Sync> {
    let Some(node) = deps.node else {
        return Arc::new(IgnoringMessageHandler {});
    };
    let gateway = Arc::new(Gateway {
        node,
        instance: instance.into(),
        limits: cfg.limits.clone(),
        max_bytes: cfg.max_message_bytes,
        pending: Arc::new(Mutex::new(Vec::new())),
        wake: deps.wake,
        counters: counters.clone(),
        sessions: Arc::new(tokio::sync::Semaphore::new(cfg.max_sessions.max(1))),
        max_replies: cfg.max_replies_per_message,
        max_pending: cfg.max_pending_replies,
    });
    let inner = Arc::new(messenger(
        deps.keys.clone(),
        PeersRouter::new(deps.keys),
        gateway,
    ));
    Arc::new(budget::Budgeted::new(
        inner,
        budget::Rate {
            rate: cfg.messages_per_sec_per_peer,
            burst: cfg.burst,
        },
        budget::Rate {
            rate: cfg.messages_per_sec_total,
            burst: cfg.burst_total,
        },
        counters.clone(),
    ))
}

/// A blinded path to this node through one of `peers` (or itself when it
/// has none), hex-encoded as BOLT12/BOLT4 serialize it.
fn blinded_path_hex(b: &Bolt8Handle, peers: &[PublicKey]) -> Option<String> {
    let peers: Vec<MessageForwardNode> = peers
        .iter()
        .copied()
        .map(|node_id| MessageForwardNode {
            node_id,
            short_channel_id: None,
        })
        .collect();
    let router = PeersRouter::new(b.keys().clone());
    let secp = Secp256k1::new();
    let paths = router
        .create_blinded_paths(
            b.node_id(),
            b.keys().get_receive_auth_key(),
            MessageContext::Custom(Vec::new()),
            peers,
            &secp,
        )
        .ok()?;
    paths.first().map(|p| hex::encode(p.encode()))
}

/// The introduction node of the published path: the current one while it
/// stays eligible, else the lowest eligible node id; `None` (the board
/// itself) when no configured peer that forwards onion messages is connected.
pub fn introduction(peers: &[PeerInfo], current: Option<PublicKey>) -> Option<PublicKey> {
    let eligible = |p: &&PeerInfo| p.configured && p.onion_messages;
    if let Some(c) = current {
        if peers.iter().filter(eligible).any(|p| p.node_id == c) {
            return Some(c);
        }
    }
    peers.iter().filter(eligible).map(|p| p.node_id).min()
}

/// Parse a hex blinded path (as published by a board).
pub fn parse_blinded_path(hex_path: &str) -> Result<BlindedMessagePath> {
    let bytes = hex::decode(hex_path.trim())
        .map_err(|_| Error::Invalid("the blinded path is not hex".into()))?;
    lightning::util::ser::Readable::read(&mut &bytes[..])
        .map_err(|e| Error::Invalid(format!("not a blinded message path ({e:?})")))
}

/// The onion-message transport.
pub struct OnionTransport {
    instance: String,
    counters: Arc<Counters>,
    bolt8: Arc<Bolt8Handle>,
}

impl std::fmt::Debug for OnionTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnionTransport")
            .field("instance", &self.instance)
            .finish()
    }
}

struct OnionControl {
    counters: Arc<Counters>,
    /// The blinded path the board publishes (hex).
    path: Arc<Mutex<Option<String>>>,
}

#[async_trait]
impl Control for OnionControl {
    async fn command(&self, command: &str, _args: serde_json::Value) -> Result<serde_json::Value> {
        match command {
            "stats" => Ok(self.counters.snapshot()),
            "path" => {
                let path = self.path.lock().unwrap_or_else(|p| p.into_inner()).clone();
                Ok(serde_json::json!({ "blinded_path": path }))
            }
            other => Err(Error::Unsupported(format!(
                "onion command `{other}` (stats, path)"
            ))),
        }
    }
    fn status(&self) -> Option<serde_json::Value> {
        Some(self.counters.snapshot())
    }
}

#[async_trait]
impl Transport for OnionTransport {
    async fn run(self: Box<Self>, node: Node, mut shutdown: Shutdown) -> Result<()> {
        let path: Arc<Mutex<Option<String>>> = Arc::default();
        let control = OnionControl {
            counters: self.counters.clone(),
            path: path.clone(),
        };
        node.register_control(&self.instance, Arc::new(control));
        tracing::info!(instance = %self.instance, via = %self.bolt8.instance(), "onion-message gateway ready");
        // Publish how to reach us: a blinded path whose introduction node is
        // a configured peer that is connected and forwards onion messages,
        // or the board itself. Strangers who connect never become it. A path
        // is randomized each time it is built, so build one only when the
        // introduction node changes (the endpoint, and the board policy that
        // lists it, stay put otherwise).
        let mut peers = self.bolt8.peers();
        let mut intro: Option<Option<PublicKey>> = None;
        loop {
            let now = peers.borrow_and_update().clone();
            let next = introduction(&now, intro.flatten());
            if intro != Some(next) {
                let hops: Vec<PublicKey> = next.into_iter().collect();
                if let Some(p) = blinded_path_hex(&self.bolt8, &hops) {
                    node.set_endpoint(&self.instance, format!("onion://{p}"));
                    *path.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
                    intro = Some(next);
                }
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                changed = peers.changed() => if changed.is_err() { break },
            }
        }
        node.unregister_control(&self.instance);
        Ok(())
    }
}
