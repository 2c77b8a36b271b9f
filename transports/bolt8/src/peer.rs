//! One connected peer: its session, its import subscription, its counters,
//! and the redial loop of configured peers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use civkit_framework::wire::RelayMessage;
use civkit_framework::{Imported, Origin, Outgoing, Session, Source};
use lightning::bitcoin::secp256k1::PublicKey;
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use crate::wire::{NostrWire, WireEvent, CLIENT_MSG, RELAY_MSG};
use crate::{lock, PeerAddr, PeerInfo, Runtime};

/// Subscription id of the import subscription on a peer.
pub(crate) const IMPORT_SUB: &str = "civkit-import";

/// Per-peer counters.
#[derive(Debug)]
pub(crate) struct PeerStats {
    pub connected_since: u64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub events_imported: AtomicU64,
    /// Events the peer sent that were refused: outside the import filters,
    /// over the session's rate, malformed, or rejected by the pipeline.
    pub events_dropped: AtomicU64,
    pub events_exported: AtomicU64,
}

/// A connected peer as the transport tracks it.
pub(crate) struct Connected {
    pub stats: Arc<PeerStats>,
    info: PeerInfo,
    /// Which connection this is (a peer that reconnects gets a new one).
    generation: u64,
    task: tokio::task::AbortHandle,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.task.abort();
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(0);

pub(crate) fn on_wire_event(rt: &Arc<Runtime>, ev: WireEvent) {
    match ev {
        WireEvent::Connected {
            peer,
            inbound,
            onion_messages,
            inbox,
        } => {
            info!(%peer, inbound, "peer connected");
            let stats = Arc::new(PeerStats {
                connected_since: rt.node.now().as_secs(),
                messages_in: AtomicU64::new(0),
                messages_out: AtomicU64::new(0),
                events_imported: AtomicU64::new(0),
                events_dropped: AtomicU64::new(0),
                events_exported: AtomicU64::new(0),
            });
            let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
            let span = tracing::info_span!("peer", %peer);
            let task = tokio::spawn(
                peer_main(rt.clone(), peer, inbox, stats.clone(), generation).instrument(span),
            );
            let entry = Connected {
                stats,
                info: PeerInfo {
                    node_id: peer,
                    configured: rt.federation.ids().contains(&peer),
                    onion_messages,
                },
                generation,
                task: task.abort_handle(),
            };
            lock(&rt.peers).insert(peer, entry);
            publish_peers(rt);
        }
        WireEvent::Disconnected { peer } => {
            // The peer's task ends when its inbox does, and removes it.
            debug!(%peer, "peer disconnected");
        }
    }
}

/// Tell riders (the onion layer) who is connected now, sorted by node id.
fn publish_peers(rt: &Runtime) {
    let mut peers: Vec<PeerInfo> = lock(&rt.peers).values().map(|c| c.info).collect();
    peers.sort_by_key(|p| p.node_id);
    rt.handle.peers.send_replace(peers);
}

/// Queue a message for a peer and let LDK send it; a peer whose queue is
/// full does not read, and is disconnected.
pub(crate) fn send(rt: &Runtime, peer: PublicKey, msg_type: u16, json: String) -> bool {
    if rt
        .handler
        .queue(peer, NostrWire { msg_type, json })
        .is_err()
    {
        warn!(%peer, "peer does not read what it is sent; disconnecting");
        rt.pm.disconnect_by_node_id(peer);
        return false;
    }
    rt.pm.process_events();
    true
}

async fn peer_main(
    rt: Arc<Runtime>,
    peer: PublicKey,
    mut inbox: mpsc::Receiver<NostrWire>,
    stats: Arc<PeerStats>,
    generation: u64,
) {
    let origin = Origin::new(
        rt.handle.instance.clone(),
        Source::LightningPeer {
            node_id: peer.to_string(),
        },
    );
    let (imports, export) = rt.federation.of(&peer);
    let (mut session, mut outbox) =
        rt.node
            .open_scoped_session(origin.clone(), rt.config.limits.clone(), export);

    // Relay messages of our session go back to the peer.
    let writer = {
        let (rt, stats) = (rt.clone(), stats.clone());
        tokio::spawn(async move {
            while let Some(out) = outbox.next().await {
                match out {
                    Outgoing::Message(first) => {
                        let mut batch = vec![first];
                        while let Some(more) = outbox.try_next() {
                            batch.push(more);
                        }
                        for text in batch {
                            if text.starts_with("[\"EVENT\"") {
                                stats.events_exported.fetch_add(1, Ordering::Relaxed);
                            }
                            stats.messages_out.fetch_add(1, Ordering::Relaxed);
                            let msg = NostrWire {
                                msg_type: RELAY_MSG,
                                json: text,
                            };
                            if rt.handler.queue(peer, msg).is_err() {
                                warn!("peer does not read what it is sent; disconnecting");
                                rt.pm.disconnect_by_node_id(peer);
                                return;
                            }
                        }
                        rt.pm.process_events();
                    }
                    Outgoing::Kick => {
                        warn!("peer too slow to read; disconnecting");
                        rt.pm.disconnect_by_node_id(peer);
                        break;
                    }
                }
            }
        })
    };

    // Subscribe on the peer to what we import from it. Its answers come back
    // through the same session, which checks them like a client's EVENTs.
    if !imports.is_empty() {
        let req = session.import_request(IMPORT_SUB, imports);
        stats.messages_out.fetch_add(1, Ordering::Relaxed);
        send(&rt, peer, CLIENT_MSG, req);
    }

    while let Some(msg) = inbox.recv().await {
        stats.messages_in.fetch_add(1, Ordering::Relaxed);
        match msg.msg_type {
            CLIENT_MSG => session.handle_text(&msg.json).await,
            _ => import(&mut session, &msg.json, &stats).await,
        }
    }
    // The inbox ends when the peer disconnects.
    writer.abort();
    info!("peer disconnected");
    // Remove our own entry, not a newer connection's. (Dropping it aborts
    // this task, which has no await left.)
    let mut peers = lock(&rt.peers);
    if peers.get(&peer).is_some_and(|c| c.generation == generation) {
        peers.remove(&peer);
    }
    drop(peers);
    publish_peers(&rt);
}

/// A relay message from the peer, handed to the session; count what became of it.
async fn import(session: &mut Session, json: &str, stats: &PeerStats) {
    match session.handle_relay_text(json).await {
        Imported::Stored(_) => {
            stats.events_imported.fetch_add(1, Ordering::Relaxed);
        }
        Imported::Duplicate(_) => {}
        Imported::Dropped(reason) => {
            stats.events_dropped.fetch_add(1, Ordering::Relaxed);
            debug!(%reason, "event from peer dropped");
        }
        Imported::Other(m) => match *m {
            RelayMessage::EndOfStoredEvents(_) => debug!("import caught up (EOSE)"),
            m @ (RelayMessage::Closed { .. } | RelayMessage::Notice(_)) => {
                info!(message = ?m, "peer refused or noticed")
            }
            _ => {}
        },
    }
}

/// Dial a peer now and after every drop, with exponential backoff.
pub(crate) fn dial(rt: &Arc<Runtime>, id: PublicKey, addr: PeerAddr) {
    let (rt2, target) = (rt.clone(), addr.clone());
    let max = Duration::from_secs(rt.config.redial_max_secs.max(1));
    let task = tokio::spawn(
        async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                if rt2.shutdown.is_triggered() {
                    break;
                }
                let started = tokio::time::Instant::now();
                match crate::connect_peer(
                    rt2.pm.clone(),
                    id,
                    &target,
                    rt2.node.dialer(),
                    rt2.tor_only,
                )
                .await
                {
                    Ok(connection) => {
                        connection.await;
                        debug!("connection ended");
                    }
                    Err(reason) => {
                        // The reason may name the address: debug level only.
                        warn!("dial failed");
                        debug!(%reason, "why the dial failed");
                    }
                }
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_secs(1);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max);
            }
        }
        .instrument(tracing::info_span!("dial", peer = %id)),
    );
    if let Some((_, old)) = lock(&rt.dialing).insert(id, (addr, task.abort_handle())) {
        old.abort();
    }
}
