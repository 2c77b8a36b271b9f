//! One websocket connection: frames in, session, outbox, frames out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use civkit_framework::{Origin, Outgoing, Source};
use futures_util::{SinkExt, StreamExt};
use tracing::{debug, Instrument};

use crate::{Peer, Shared, Slot};

/// Close code for "policy violation".
const CLOSE_POLICY: u16 = 1008;
/// Close code for "going away" (shutdown).
const CLOSE_AWAY: u16 = 1001;

/// Frames are gathered up to this many bytes before a write to the socket:
/// a REQ's history goes out in a few writes instead of one per event. The
/// buffer is allocated only once something is sent, and a connection keeps
/// at most this plus one frame of it.
const WRITE_BUFFER: usize = 8 * 1024;

pub(crate) fn upgrade(
    ws: WebSocketUpgrade,
    shared: Arc<Shared>,
    peer: Peer,
    slot: Arc<Slot>,
) -> Response {
    let max = shared.config.max_message_bytes;
    // Frames up to 4x our limit are read and answered with a NOTICE; larger
    // ones close the connection with 1009.
    ws.read_buffer_size(4096)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max.saturating_mul(4))
        .max_frame_size(max.saturating_mul(4))
        .on_upgrade(move |socket| {
            let span = tracing::debug_span!("connection", transport = %shared.instance);
            serve(socket, shared, peer, slot).instrument(span)
        })
}

async fn serve(socket: WebSocket, shared: Arc<Shared>, peer: Peer, _slot: Arc<Slot>) {
    let source = match peer {
        Peer::Ip(a) => Source::Network {
            ip: Some(a.ip()),
            via_tor: false,
        },
        Peer::Tor => Source::Network {
            ip: None,
            via_tor: true,
        },
    };
    let origin = Origin::new(shared.instance.clone(), source);
    let (mut session, mut outbox) = shared
        .node
        .open_session(origin, shared.config.limits.clone());
    let (mut sink, mut stream) = socket.split();
    let ping_every = shared.config.ping_interval_secs;
    let write_timeout = Duration::from_secs(shared.config.write_timeout_secs.max(1));
    // Set by the reader on every pong; checked and cleared at each ping.
    let ponged = Arc::new(AtomicBool::new(true));
    let pong_seen = ponged.clone();
    let mut shutdown = shared.shutdown.clone();
    let mut writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(Duration::from_secs(ping_every.max(1)));
        ping.tick().await;
        loop {
            tokio::select! {
                out = outbox.next() => match out {
                    Some(Outgoing::Message(text)) => {
                        // Queue everything already waiting, then flush once.
                        let mut ok = within(write_timeout, sink.feed(Message::Text(text.into()))).await;
                        while ok {
                            match outbox.try_next() {
                                Some(more) => ok = within(write_timeout, sink.feed(Message::Text(more.into()))).await,
                                None => break,
                            }
                        }
                        if !ok || !within(write_timeout, sink.flush()).await {
                            break;
                        }
                    }
                    Some(Outgoing::Kick) => {
                        within(write_timeout, sink.send(close(CLOSE_POLICY, "subscriber too slow"))).await;
                        break;
                    }
                    None => break,
                },
                _ = ping.tick(), if ping_every > 0 => {
                    if !pong_seen.swap(false, Ordering::Relaxed) {
                        debug!("no pong since the last ping; dropping the client");
                        within(write_timeout, sink.send(close(CLOSE_POLICY, "no pong"))).await;
                        break;
                    }
                    if !within(write_timeout, sink.send(Message::Ping(Default::default()))).await {
                        break;
                    }
                }
                _ = shutdown.wait() => {
                    within(write_timeout, sink.send(close(CLOSE_AWAY, "relay shutting down"))).await;
                    break;
                }
            }
        }
    });
    if shared.config.auth_challenge {
        session.send_auth_challenge().await;
    }
    let max = shared.config.max_message_bytes;
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = &mut writer => break,
        };
        match msg {
            Some(Ok(Message::Text(text))) => {
                if text.len() > max {
                    session
                        .notice(format!(
                            "invalid: message of {} bytes is over the {max}-byte limit",
                            text.len()
                        ))
                        .await;
                } else {
                    session.handle_text(text.as_str()).await;
                }
            }
            Some(Ok(Message::Binary(_))) => {
                session
                    .notice("invalid: binary frames are not supported; send JSON text")
                    .await;
            }
            Some(Ok(Message::Pong(_))) => ponged.store(true, Ordering::Relaxed),
            Some(Ok(Message::Ping(_))) => {}
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(e)) => {
                // Frames over the hard cap end here; tungstenite has already
                // answered with close code 1009.
                debug!(error = %e, "websocket read error; closing");
                break;
            }
        }
    }
    drop(session);
    writer.abort();
}

/// One write with a deadline: a client that stops reading makes writes block
/// once the socket buffers fill. False when the write failed or timed out
/// (the caller then drops the client).
async fn within(
    deadline: Duration,
    write: impl std::future::Future<Output = Result<(), axum::Error>>,
) -> bool {
    match tokio::time::timeout(deadline, write).await {
        Ok(r) => r.is_ok(),
        Err(_) => {
            debug!("write timed out; dropping the client");
            false
        }
    }
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
