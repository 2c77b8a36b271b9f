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
    registry.register_transport(
        "nostr-ws",
        "NIP-01 websocket relay with NIP-11 on the same port",
        config::EXAMPLE,
        |cfg: NostrWsConfig, ctx: &BuildContext| {
            Ok(Box::new(NostrWs::new(ctx.instance.clone(), cfg)) as Box<dyn Transport>)
        },
    );
}

/// The websocket transport.
#[derive(Debug)]
pub struct NostrWs {
    instance: String,
    config: NostrWsConfig,
    listener: Option<tokio::net::TcpListener>,
}

impl NostrWs {
    /// A transport that binds `config.listen` when run.
    pub fn new(instance: impl Into<String>, config: NostrWsConfig) -> Self {
        NostrWs {
            instance: instance.into(),
            config,
            listener: None,
        }
    }
    /// A transport on an already-bound listener (tests bind port 0 first).
    pub fn with_listener(
        instance: impl Into<String>,
        config: NostrWsConfig,
        listener: tokio::net::TcpListener,
    ) -> Self {
        NostrWs {
            instance: instance.into(),
            config,
            listener: Some(listener),
        }
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

/// One open connection, counted in [`Shared::open`] until dropped.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Shared {
    /// Count a new connection from `ip`, or say why it is refused.
    fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> std::result::Result<Slot, (StatusCode, &'static str)> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        if total >= self.config.max_connections {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "too many connections\n"));
        }
        let from_ip = open.entry(ip).or_default();
        let per_ip = self.config.max_connections_per_ip;
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
        let app = Router::new().fallback(root).with_state(shared);
        // Replies are many small frames; do not let Nagle hold them back.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        let mut sd = shutdown;
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { sd.wait().await })
        .into_future()
        .instrument(span)
        .await
        .map_err(|e| Error::Transport {
            instance: instance.to_string(),
            message: e.to_string(),
        })
    }
}

fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn root(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<axum::body::Body>,
) -> Response {
    let (mut parts, _body) = req.into_parts();
    if parts.method == Method::OPTIONS {
        return nip11::preflight();
    }
    if wants_websocket(&parts.headers) {
        let slot = match shared.admit(peer.ip()) {
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
