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

mod book;
mod config;
mod nip11;
mod socket;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{FromRequestParts, State};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
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
            if cfg.header_timeout_secs == 0 {
                return Err(Error::config(
                    format!("transports.{}.header_timeout_secs", ctx.instance),
                    "must be at least 1",
                ));
            }
            let mut t = NostrWs::new(ctx.instance.clone(), cfg);
            if ctx.tor_only {
                t = t.handed_only();
            }
            let handle = t.handle();
            Ok((Box::new(t) as Box<dyn Transport>, handle))
        },
    );
}

pub use civkit_framework::stream::Io;

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

impl civkit_framework::stream::StreamSink for WsHandle {
    fn serve(&self, io: Box<dyn Io>) -> bool {
        self.serve_tor(io)
    }
    fn endpoint(&self, host: &str, port: u16) -> String {
        if port == 80 {
            format!("ws://{host}")
        } else {
            format!("ws://{host}:{port}")
        }
    }
}

/// The websocket transport.
pub struct NostrWs {
    instance: String,
    config: NostrWsConfig,
    listener: Option<tokio::net::TcpListener>,
    /// Whether to listen on `config.listen` at all (not when the node
    /// reaches out through Tor only: then only handed streams are served).
    clearnet: bool,
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
            clearnet: true,
            handed,
        }
    }
    /// A transport that opens no listener and serves only the streams
    /// handed to it (a node that is an onion service only).
    pub fn handed_only(self) -> Self {
        NostrWs {
            clearnet: false,
            listener: None,
            ..self
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
        let span = tracing::info_span!("transport", instance = %self.instance, kind = "nostr-ws");
        let listener = match (self.listener, self.clearnet) {
            (_, false) => None,
            (Some(l), true) => Some(l),
            (None, true) => Some(
                tokio::net::TcpListener::bind(self.config.listen)
                    .await
                    .map_err(|e| Error::Transport {
                        instance: self.instance.clone(),
                        message: format!("cannot listen on {}: {e}", self.config.listen),
                    })?,
            ),
        };
        match &listener {
            Some(l) => {
                let local = l.local_addr().map_err(|e| Error::io("local address", e))?;
                node.set_endpoint(&self.instance, format!("ws://{local}"));
                span.in_scope(|| info!(%local, "websocket relay listening"));
            }
            None => {
                node.set_running_unannounced(&self.instance);
                span.in_scope(|| info!("websocket relay serving handed (Tor) streams only"));
            }
        }
        node.set_stream_sink(&self.instance, self.handle.clone());
        let instance: Arc<str> = self.instance.into();
        let shared = Arc::new(Shared {
            instance: instance.clone(),
            config: self.config,
            node,
            shutdown: shutdown.clone(),
            open: Mutex::default(),
        });
        let app = Router::new().fallback(root).with_state(shared.clone());
        let handed = tokio::spawn(
            serve_handed(self.handed, app.clone(), shared.clone()).instrument(span.clone()),
        );
        match listener {
            Some(l) => accept(l, app, shared).instrument(span).await,
            None => shared.shutdown.clone().wait().await,
        }
        handed.abort();
        Ok(())
    }
}

/// Connections being answered with a refusal, at most. Past this, a refused
/// connection is closed without an answer.
const REFUSING: usize = 64;

/// Accept TCP connections until shutdown. Each is counted (per address and
/// in total) from its first byte, not only once it is a websocket, so that
/// connections that never finish a request cannot pile up.
async fn accept(listener: tokio::net::TcpListener, app: Router, shared: Arc<Shared>) {
    let refusing = Arc::new(tokio::sync::Semaphore::new(REFUSING));
    let mut sd = shared.shutdown.clone();
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most often: wait rather than spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = sd.wait() => return,
        };
        // Replies are many small frames; do not let Nagle hold them back.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        serve_admitted(tcp, Peer::Ip(addr), &app, &shared, &refusing);
    }
}

/// Serve the connections riders hand over (Tor) until shutdown, counted in
/// the Tor budget.
async fn serve_handed(
    mut handed: tokio::sync::mpsc::Receiver<Box<dyn Io>>,
    app: Router,
    shared: Arc<Shared>,
) {
    let refusing = Arc::new(tokio::sync::Semaphore::new(REFUSING));
    while let Some(io) = handed.recv().await {
        serve_admitted(io, Peer::Tor, &app, &shared, &refusing);
    }
}

/// A connection's place in the counts, shared by its HTTP requests and
/// moved into its websocket.
#[derive(Clone)]
pub(crate) struct Admitted {
    peer: Peer,
    slot: Arc<Slot>,
}

/// Count `io` from `peer` and serve it; when the counts are full, answer
/// its first request with the refusal (if fewer than [`REFUSING`]
/// connections are being refused) and close it.
fn serve_admitted(
    io: impl Io,
    peer: Peer,
    app: &Router,
    shared: &Arc<Shared>,
    refusing: &Arc<tokio::sync::Semaphore>,
) {
    let (app, keep_alive, permit) = match shared.admit(peer) {
        Ok(slot) => {
            let admitted = Admitted {
                peer,
                slot: Arc::new(slot),
            };
            (app.clone().layer(axum::Extension(admitted)), true, None)
        }
        Err(refusal) => match refusing.clone().try_acquire_owned() {
            Ok(permit) => (
                Router::new().fallback(move || async move { refusal.into_response() }),
                false,
                Some(permit),
            ),
            Err(_) => return,
        },
    };
    let timeout = std::time::Duration::from_secs(shared.config.header_timeout_secs);
    let mut sd = shared.shutdown.clone();
    tokio::spawn(async move {
        let service = hyper_util::service::TowerToHyperService::new(app);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(timeout)
            .keep_alive(keep_alive)
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .with_upgrades();
        tokio::select! {
            r = conn => if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended");
            },
            _ = sd.wait() => {}
        }
        drop(permit);
    });
}

fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn root(State(shared): State<Arc<Shared>>, req: Request<axum::body::Body>) -> Response {
    let (mut parts, _body) = req.into_parts();
    let Some(admitted) = parts.extensions.get::<Admitted>().cloned() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if parts.method == Method::OPTIONS {
        return nip11::preflight();
    }
    if wants_websocket(&parts.headers) {
        return match axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &shared)
            .await
        {
            Ok(ws) => socket::upgrade(ws, shared, admitted.peer, admitted.slot),
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
    if shared.config.order_book && parts.method == Method::GET {
        if let Some(asset) = book::asset(parts.uri.path()) {
            return asset;
        }
        if book::wants_page(&parts.method, &parts.headers) {
            return book::page();
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "This is a civkit Nostr relay. Connect with a Nostr client over websocket; \
         request with `Accept: application/nostr+json` for the NIP-11 document.\n",
    )
        .into_response()
}
