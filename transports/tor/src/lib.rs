//! # civkit-tor
//!
//! The board as a Tor onion service, on arti (Tor's Rust implementation):
//! no external Tor daemon and no reverse proxy. The `tor` transport
//! (`type = "tor"`) rides on a websocket transport (`via`): it launches an
//! onion service whose identity key lives in arti's keystore under the
//! node's data dir (so the `.onion` address survives restarts), and hands
//! every stream to the onion service's virtual `port` to the websocket
//! transport in-process. Those connections have an `Origin` that says Tor
//! and carries no address; the websocket transport's Tor-wide budget
//! (`max_tor_connections`) stands in for its per-address limit.
//!
//! The `.onion` URL is announced as the transport's endpoint, so it shows
//! in `civkit-cli status`, in NIP-11 and in the board's policy event.
//!
//! More virtual ports can go to other transports (`ports`, for example a
//! bolt8 transport for Lightning peers): they are handed to the
//! [`civkit_framework::stream::StreamSink`] that transport registers, and
//! announced at the onion address as `<tor instance>.<transport>`. Once
//! bootstrapped, the arti client is the node's
//! [`civkit_framework::stream::Dialer`]: peers at `.onion` addresses are
//! dialed through it, and with `outbound_only` every peer is.
//!
//! `arti` passes a table of arti's own configuration through (for example
//! `tor_network` for a private network's authorities and fallback caches).

#![forbid(unsafe_code)]

mod socks;
pub use socks::socks_proxy;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;

use arti_client::config::TorClientConfigBuilder;
use arti_client::TorClient;
use async_trait::async_trait;
use civkit_framework::stream::{Dialer, Io, StreamSink};
use civkit_framework::{BuildContext, Error, Node, Registry, Result, Shutdown, Transport};
use civkit_nostr_ws::WsHandle;
use futures_util::StreamExt;
use tor_cell::relaycell::msg::{Connected, End, EndReason};
use tor_hsservice::config::OnionServiceConfigBuilder;
use tor_hsservice::{HsNickname, StreamRequest};
use tor_proto::stream::IncomingStreamRequest;
use tracing::{debug, info, warn};

/// `[transports.<name>] type = "tor"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TorConfig {
    /// The websocket transport the onion service fronts.
    pub via: String,
    /// The onion service's virtual port for the websocket.
    pub port: u16,
    /// More virtual ports, by the transport instance that serves them (for
    /// example `{ lightning = 9735 }` for BOLT8 peers over Tor).
    pub ports: std::collections::BTreeMap<String, u16>,
    /// The onion service's nickname: its keys are kept under it.
    pub nickname: String,
    /// arti's state directory (keys, guards), relative to node.data_dir.
    pub state_dir: PathBuf,
    /// arti's cache directory (directory documents), relative to node.data_dir.
    pub cache_dir: PathBuf,
    /// Streams through the onion service open at once, all clients
    /// together (Tor hides who they are, so there is no per-client bound);
    /// more are refused with END.
    pub max_streams: usize,
    /// Client authorization (restricted discovery): when not empty, only
    /// these clients can find the onion service. Each entry maps a
    /// nickname (letters, digits, `-`, `_`) to the client's key,
    /// `descriptor:x25519:<base32 public key>` as in C Tor's `.auth` files.
    pub authorized_clients: std::collections::BTreeMap<String, String>,
    /// Reach out through Tor only: the node's other transports open no
    /// clearnet listener (the admin API stays), and BOLT8 peers are all
    /// dialed through Tor. Read by the node when it builds them.
    pub outbound_only: bool,
    /// More of arti's own configuration, as its TOML would have it (for
    /// example `[transports.tor.arti.tor_network]` for a private network).
    pub arti: serde_json::Map<String, serde_json::Value>,
}

impl Default for TorConfig {
    fn default() -> Self {
        TorConfig {
            via: "relay".into(),
            port: 80,
            ports: std::collections::BTreeMap::new(),
            nickname: "civkit".into(),
            state_dir: PathBuf::from("tor/state"),
            cache_dir: PathBuf::from("tor/cache"),
            max_streams: 1_024,
            authorized_clients: std::collections::BTreeMap::new(),
            outbound_only: false,
            arti: serde_json::Map::new(),
        }
    }
}

const EXAMPLE: &str = r#"# The websocket transport the onion service fronts.
via = "relay"
# The onion service's virtual port for the websocket.
port = 80
# More virtual ports, by the transport instance that serves them: BOLT8
# peers reach a bolt8 transport named "lightning" through Tor on 9735 with
# ports = { lightning = 9735 }. Peers at .onion addresses are dialed
# through this transport's Tor client.
ports = {}
# The onion service's nickname: its keys are kept under it.
nickname = "civkit"
# arti's state directory (the onion service's identity key, guards), relative
# to node.data_dir. Back it up: it is the .onion address.
state_dir = "tor/state"
# arti's cache directory, relative to node.data_dir.
cache_dir = "tor/cache"
# Streams through the onion service open at once, all clients together; more are refused.
max_streams = 1024
# Client authorization: when not empty, only these clients can find the
# onion service; nickname = "descriptor:x25519:<base32 public key>".
authorized_clients = {}
# Reach out through Tor only: no clearnet listener but the admin API (the
# websocket and bolt8 transports serve what comes through the onion
# service), and every BOLT8 peer dialed through Tor.
outbound_only = false
# More of arti's own configuration, as in arti's TOML (for example a private
# network's [transports.tor.arti.tor_network]).
arti = {}
"#;

/// Register the `tor` transport.
pub fn register(registry: &mut Registry) {
    registry.register_transport_on(
        "tor",
        "the board as a Tor onion service on arti, fronting a websocket transport in-process",
        EXAMPLE,
        "nostr-ws",
        |cfg: &TorConfig| cfg.via.as_str(),
        |cfg: TorConfig, ctx: &BuildContext, ws: Arc<WsHandle>| {
            Ok(Box::new(
                Tor::new(&ctx.instance, &cfg, &ctx.data_dir, ws)
                    .map_err(|e| Error::config(format!("transports.{}", ctx.instance), e))?,
            ) as Box<dyn Transport>)
        },
    );
}

/// The onion service's configuration: its nickname, and restricted
/// discovery when `authorized_clients` is not empty. The error names what
/// is wrong (a bad key or nickname).
fn service_config(
    cfg: &TorConfig,
) -> std::result::Result<tor_hsservice::OnionServiceConfig, String> {
    let mut table = serde_json::json!({ "nickname": cfg.nickname });
    if !cfg.authorized_clients.is_empty() {
        table["restricted_discovery"] = serde_json::json!({
            "enabled": true,
            "static_keys": cfg.authorized_clients,
        });
    }
    let builder: OnionServiceConfigBuilder =
        serde_json::from_value(table).map_err(|e| format!("authorized_clients: {e}"))?;
    builder.build().map_err(|e| e.to_string())
}

/// arti's client configuration: the `arti` table, with the state and cache
/// directories under `data_dir`.
pub fn arti_config(
    cfg: &TorConfig,
    data_dir: &std::path::Path,
) -> std::result::Result<arti_client::TorClientConfig, String> {
    let mut builder: TorClientConfigBuilder =
        serde_json::from_value(serde_json::Value::Object(cfg.arti.clone()))
            .map_err(|e| e.to_string())?;
    builder
        .storage()
        .state_dir(arti_client::config::CfgPath::new_literal(
            data_dir.join(&cfg.state_dir),
        ))
        .cache_dir(arti_client::config::CfgPath::new_literal(
            data_dir.join(&cfg.cache_dir),
        ));
    builder.build().map_err(|e| e.to_string())
}

/// The `tor` transport.
pub struct Tor {
    instance: String,
    port: u16,
    ports: Arc<std::collections::BTreeMap<u16, String>>,
    streams: Arc<tokio::sync::Semaphore>,
    service: tor_hsservice::OnionServiceConfig,
    arti: arti_client::TorClientConfig,
    ws: Arc<WsHandle>,
}

impl Tor {
    /// A transport named `instance` fronting `ws`, with arti's directories
    /// under `data_dir`. The error says what in the config is wrong.
    pub fn new(
        instance: &str,
        cfg: &TorConfig,
        data_dir: &std::path::Path,
        ws: Arc<WsHandle>,
    ) -> std::result::Result<Self, String> {
        HsNickname::new(cfg.nickname.clone())
            .map_err(|_| "nickname: letters, digits, - and _ only".to_string())?;
        let service = service_config(cfg)?;
        let mut ports = std::collections::BTreeMap::new();
        for (name, &port) in &cfg.ports {
            if port == cfg.port || ports.insert(port, name.clone()).is_some() {
                return Err(format!("ports: port {port} is mapped twice"));
            }
        }
        Ok(Tor {
            instance: instance.to_string(),
            port: cfg.port,
            ports: Arc::new(ports),
            streams: Arc::new(tokio::sync::Semaphore::new(cfg.max_streams)),
            service,
            arti: arti_config(cfg, data_dir).map_err(|e| format!("arti: {e}"))?,
            ws,
        })
    }
}

impl std::fmt::Debug for Tor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tor")
            .field("instance", &self.instance)
            .field("port", &self.port)
            .finish()
    }
}

#[async_trait]
impl Transport for Tor {
    async fn run(self: Box<Self>, node: Node, mut shutdown: Shutdown) -> Result<()> {
        let fail = |what: &str, e: String| Error::Transport {
            instance: self.instance.clone(),
            message: format!("{what}: {e}"),
        };
        // arti's TLS (rustls) needs a process-wide crypto provider; more than
        // one crate in the build enables one, so name it (once per process).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = tokio::select! {
            c = TorClient::create_bootstrapped(self.arti.clone()) => {
                c.map_err(|e| fail("cannot bootstrap Tor", e.to_string()))?
            }
            _ = shutdown.wait() => return Ok(()),
        };
        let (running, requests) = client
            .launch_onion_service(self.service.clone())
            .map_err(|e| fail("cannot launch the onion service", e.to_string()))?
            .ok_or_else(|| fail("the onion service", "is disabled".into()))?;
        let address = running
            .onion_address()
            .ok_or_else(|| fail("the onion service", "has no address".into()))?;
        let onion = safelog::DisplayRedacted::display_unredacted(&address).to_string();
        node.set_endpoint(&self.instance, self.ws.endpoint(&onion, self.port));
        node.set_dialer(Arc::new(ArtiDialer(client.clone())));
        tokio::spawn(announce_ports(
            node.clone(),
            self.instance.clone(),
            onion.clone(),
            self.ports.clone(),
        ));
        // The address identifies the board: only at debug level.
        info!(instance = %self.instance, "onion service launched");
        debug!(instance = %self.instance, address = %onion, "onion service address");

        let route = Arc::new(Route {
            ws: self.ws.clone(),
            port: self.port,
            ports: self.ports.clone(),
            node: node.clone(),
        });
        let mut streams = Box::pin(tor_hsservice::handle_rend_requests(requests));
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                next = streams.next() => match next {
                    Some(request) => {
                        // Over budget: refused at once, no task started.
                        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
                            tokio::spawn(async move {
                                let _ = request.reject(End::new_with_reason(EndReason::DONE)).await;
                            });
                            continue;
                        };
                        let route = route.clone();
                        tokio::spawn(async move { route.hand_over(request, permit).await });
                    }
                    None => {
                        warn!(instance = %self.instance, "the onion service stopped");
                        break;
                    }
                },
            }
        }
        drop(running);
        Ok(())
    }
}

/// Where the onion service's streams go, by virtual port.
struct Route {
    ws: Arc<WsHandle>,
    port: u16,
    ports: Arc<std::collections::BTreeMap<u16, String>>,
    node: Node,
}

impl Route {
    /// The sink for a stream to `port`: the websocket transport for
    /// `self.port`, the named transport for a port in `ports` (once it
    /// runs); `None` for any other port.
    fn sink(&self, port: u16) -> Option<Arc<dyn StreamSink>> {
        if port == self.port {
            return Some(self.ws.clone());
        }
        let name = self.ports.get(&port)?;
        let sink = self.node.stream_sink(name);
        if sink.is_none() {
            debug!(transport = %name, "a Tor stream for a transport that serves no streams (yet)");
        }
        sink
    }

    /// Accept a stream to a mapped port and hand it over; refuse others the
    /// way other onion services do (END, reason DONE).
    async fn hand_over(&self, request: StreamRequest, permit: tokio::sync::OwnedSemaphorePermit) {
        let sink = match request.request() {
            IncomingStreamRequest::Begin(b) => self.sink(b.port()),
            _ => None,
        };
        let Some(sink) = sink else {
            let _ = request.reject(End::new_with_reason(EndReason::DONE)).await;
            return;
        };
        match request.accept(Connected::new_empty()).await {
            Ok(stream) => {
                let stream = Budgeted {
                    inner: stream,
                    _permit: permit,
                };
                if !sink.serve(Box::new(stream)) {
                    debug!("the transport is full or stopped; a Tor stream was dropped");
                }
            }
            Err(e) => debug!(error = %e, "could not accept a Tor stream"),
        }
    }
}

/// Announce each transport of `ports` at the onion address too, as the
/// transport writes its endpoints, under `<tor instance>.<transport>`.
/// Waits up to a minute for the transport to serve streams.
async fn announce_ports(
    node: Node,
    instance: String,
    onion: String,
    ports: Arc<std::collections::BTreeMap<u16, String>>,
) {
    for (port, name) in ports.iter() {
        for _ in 0..600 {
            if let Some(sink) = node.stream_sink(name) {
                node.set_endpoint(&format!("{instance}.{name}"), sink.endpoint(&onion, *port));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Dials through arti: `.onion` names reach onion services, other names
/// are resolved by the exit.
struct ArtiDialer(Arc<TorClient<tor_rtcompat::PreferredRuntime>>);

#[async_trait]
impl Dialer for ArtiDialer {
    async fn connect(&self, host: &str, port: u16) -> std::io::Result<Box<dyn Io>> {
        let stream = self
            .0
            .connect((host, port))
            .await
            .map_err(std::io::Error::other)?;
        Ok(Box::new(stream))
    }
}

/// A stream that holds its place in the Tor-wide budget until dropped.
struct Budgeted<S> {
    inner: S,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Budgeted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Budgeted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
