//! # civkit-nostr-ws
//!
//! The NIP-01 websocket transport: the `nostr-ws` box on the left of the
//! picture in `docs/ARCHITECTURE.md`. It accepts websocket connections, opens one
//! [`civkit_framework::Session`] per connection and moves text frames in and
//! out. On the same port it serves the NIP-11 relay information document
//! (with CORS) to HTTP requests that ask for `application/nostr+json`.
//!
//! It does no validation, storage or fan-out of its own: the node does.
//! Frame-level limits (message size, binary frames, pings) are its only job.

#![forbid(unsafe_code)]

mod config;
mod nip11;
mod socket;

use std::collections::HashMap;
use std::future::IntoFuture;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use axum::Router;
use civkit_framework::{BuildContext, Error, Node, Registry, Result, Shutdown, Transport};
use tracing::{info, Instrument};

pub use config::NostrWsConfig;

/// Register the `nostr-ws` transport.
pub fn register(registry: &mut Registry) {
    registry.register_transport_providing(
        "nostr-ws",
        "NIP-01 websocket relay with NIP-11 on the same port",
        config::EXAMPLE,
        |cfg: NostrWsConfig, ctx: &BuildContext| {
            let t = NostrWs::new(ctx.instance.clone(), cfg);
            let handle = t.handle();
            Ok((Box::new(t) as Box<dyn Transport>, handle))
        },
    );
}

/// A byte stream another transport hands over (an onion service's stream).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connection that arrived through Tor: it has no IP address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ViaTor;

/// Streams waiting to be served, at most.
const HANDED_QUEUE: usize = 64;

/// What riders of a websocket transport get: a way to hand it connections
/// that did not come from its own listener. They are served in-process, as
/// HTTP and websocket, with an `Origin` that says Tor and carries no address.
pub struct WsHandle {
    instance: String,
    tx: tokio::sync::mpsc::Sender<Box<dyn Io>>,
}

impl std::fmt::Debug for WsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsHandle")
            .field("instance", &self.instance)
            .finish()
    }
}

impl WsHandle {
    /// The transport instance this handle serves into.
    pub fn instance(&self) -> &str {
        &self.instance
    }
    /// Serve `io`, which arrived through Tor. `false` when the transport is
    /// not running or its queue is full (the caller drops the stream).
    pub fn serve_tor(&self, io: Box<dyn Io>) -> bool {
        self.tx.try_send(io).is_ok()
    }
}

/// The websocket transport.
pub struct NostrWs {
    instance: String,
    config: NostrWsConfig,
    listener: Option<tokio::net::TcpListener>,
    handle: Arc<WsHandle>,
    handed: tokio::sync::mpsc::Receiver<Box<dyn Io>>,
}

impl std::fmt::Debug for NostrWs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NostrWs")
            .field("instance", &self.instance)
            .field("config", &self.config)
            .finish()
    }
}

impl NostrWs {
    /// A transport that binds `config.listen` when run.
    pub fn new(instance: impl Into<String>, config: NostrWsConfig) -> Self {
        let instance = instance.into();
        let (tx, handed) = tokio::sync::mpsc::channel(HANDED_QUEUE);
        NostrWs {
            handle: Arc::new(WsHandle {
                instance: instance.clone(),
                tx,
            }),
            instance,
            config,
            listener: None,
            handed,
        }
    }
    /// A transport on an already-bound listener (tests bind port 0 first).
    pub fn with_listener(
        instance: impl Into<String>,
        config: NostrWsConfig,
        listener: tokio::net::TcpListener,
    ) -> Self {
        NostrWs {
            listener: Some(listener),
            ..NostrWs::new(instance, config)
        }
    }
    /// The handle riders get (see [`WsHandle`]).
    pub fn handle(&self) -> Arc<WsHandle> {
        self.handle.clone()
    }
}

pub(crate) struct Shared {
    pub instance: Arc<str>,
    pub config: NostrWsConfig,
    pub node: Node,
    pub shutdown: Shutdown,
    /// Open websocket connections per address.
    pub open: Mutex<HashMap<IpAddr, usize>>,
}

/// Where a connection came from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Peer {
    Ip(SocketAddr),
    Tor,
}

/// One open connection, counted in [`Shared::open`] until dropped.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Shared {
    /// Count a new connection from `peer`, or say why it is refused. Tor
    /// connections share one budget, `max_tor_connections`, in place of the
    /// per-address limit, which means nothing for them.
    fn admit(
        self: &Arc<Self>,
        peer: Peer,
    ) -> std::result::Result<Slot, (StatusCode, &'static str)> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        if total >= self.config.max_connections {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "too many connections\n"));
        }
        let (ip, per_ip) = match peer {
            Peer::Ip(a) => (a.ip(), self.config.max_connections_per_ip),
            // One bucket for all of Tor: an address no socket can have.
            Peer::Tor => (
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                self.config.max_tor_connections,
            ),
        };
        let from_ip = open.entry(ip).or_default();
        if per_ip > 0 && *from_ip >= per_ip {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from your address\n",
            ));
        }
        *from_ip += 1;
        Ok(Slot {
            shared: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.shared.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[async_trait]
impl Transport for NostrWs {
    async fn run(self: Box<Self>, node: Node, shutdown: Shutdown) -> Result<()> {
        let listener = match self.listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind(self.config.listen)
                .await
                .map_err(|e| Error::Transport {
                    instance: self.instance.clone(),
                    message: format!("cannot listen on {}: {e}", self.config.listen),
                })?,
        };
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("local address", e))?;
        node.set_endpoint(&self.instance, format!("ws://{local}"));
        let span = tracing::info_span!("transport", instance = %self.instance, kind = "nostr-ws");
        span.in_scope(|| info!(%local, "websocket relay listening"));
        let instance: Arc<str> = self.instance.into();
        let shared = Arc::new(Shared {
            instance: instance.clone(),
            config: self.config,
            node,
            shutdown: shutdown.clone(),
            open: Mutex::default(),
        });
        let app = Router::new().fallback(root).with_state(shared.clone());
        let handed = tokio::spawn(serve_handed(
            self.handed,
            app.clone(),
            shared.shutdown.clone(),
        ));
        // Replies are many small frames; do not let Nagle hold them back.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        let mut sd = shutdown;
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { sd.wait().await })
        .into_future()
        .instrument(span)
        .await;
        handed.abort();
        serve.map_err(|e| Error::Transport {
            instance: instance.to_string(),
            message: e.to_string(),
        })
    }
}

/// Serve the connections riders hand over (Tor), each as one HTTP/1
/// connection with upgrades, until shutdown.
async fn serve_handed(
    mut handed: tokio::sync::mpsc::Receiver<Box<dyn Io>>,
    app: Router,
    shutdown: Shutdown,
) {
    let app = app.layer(axum::Extension(ViaTor));
    while let Some(io) = handed.recv().await {
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut sd = shutdown.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .with_upgrades();
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "handed connection ended");
                },
                _ = sd.wait() => {}
            }
        });
    }
}

fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn root(State(shared): State<Arc<Shared>>, req: Request<axum::body::Body>) -> Response {
    let (mut parts, _body) = req.into_parts();
    let peer = if parts.extensions.get::<ViaTor>().is_some() {
        Peer::Tor
    } else {
        match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(a)) => Peer::Ip(*a),
            None => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    };
    if parts.method == Method::OPTIONS {
        return nip11::preflight();
    }
    if wants_websocket(&parts.headers) {
        let slot = match shared.admit(peer) {
            Ok(slot) => slot,
            Err(refusal) => return refusal.into_response(),
        };
        return match axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &shared)
            .await
        {
            Ok(ws) => socket::upgrade(ws, shared, peer, slot),
            Err(rejection) => rejection.into_response(),
        };
    }
    let accepts_nip11 = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/nostr+json"));
    if accepts_nip11 && parts.method == Method::GET {
        return nip11::document(&shared);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "This is a civkit Nostr relay. Connect with a Nostr client over websocket; \
         request with `Accept: application/nostr+json` for the NIP-11 document.\n",
    )
        .into_response()
}
