//! `civkit-cli peers list|connect|disconnect`, through the admin API.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use civkit_framework::{Control, Error, Result};
use lightning::bitcoin::secp256k1::PublicKey;
use serde_json::{json, Value};

use crate::{lock, parse_peer, peer, Runtime};

pub(crate) struct PeersControl(pub Arc<Runtime>);

#[async_trait]
impl Control for PeersControl {
    async fn command(&self, command: &str, args: Value) -> Result<Value> {
        let rt = &self.0;
        match command {
            "list" => Ok(list(rt)),
            "connect" => {
                let address = args["address"].as_str().ok_or_else(|| {
                    Error::Invalid("connect needs {\"address\": \"<node id>@host:port\"}".into())
                })?;
                let (id, addr) = parse_peer(address)?;
                peer::dial(rt, id, addr);
                for _ in 0..100 {
                    if lock(&rt.peers).contains_key(&id) {
                        return Ok(json!({ "node_id": id.to_string(), "connected": true }));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(json!({ "node_id": id.to_string(), "connected": false, "redialing": true }))
            }
            "disconnect" => {
                let id: PublicKey = args["node_id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        Error::Invalid("disconnect needs {\"node_id\": \"<33-byte hex>\"}".into())
                    })?;
                if let Some((_, task)) = lock(&rt.dialing).remove(&id) {
                    task.abort();
                }
                let was = lock(&rt.peers).contains_key(&id);
                rt.pm.disconnect_by_node_id(id);
                Ok(json!({ "node_id": id.to_string(), "was_connected": was }))
            }
            other => Err(Error::Unsupported(format!(
                "peers command `{other}` (list, connect, disconnect)"
            ))),
        }
    }
    fn status(&self) -> Option<Value> {
        let rt = &self.0;
        Some(json!({
            "kind": "bolt8",
            "peers_connected": rt.pm.list_peers().len(),
            "peers_configured": rt.config.peers.len(),
        }))
    }
}

fn list(rt: &Runtime) -> Value {
    let peers = lock(&rt.peers);
    let dialing = lock(&rt.dialing);
    let mut out = Vec::new();
    for details in rt.pm.list_peers() {
        let id = details.counterparty_node_id;
        let s = peers.get(&id).map(|p| p.stats.clone());
        out.push(json!({
            "node_id": id.to_string(),
            "address": details.socket_address.map(|a| a.to_string()),
            "connected": true,
            "inbound": details.is_inbound_connection,
            "connected_since": s.as_ref().map(|s| s.connected_since),
            "messages_in": s.as_ref().map(|s| s.messages_in.load(Ordering::Relaxed)),
            "messages_out": s.as_ref().map(|s| s.messages_out.load(Ordering::Relaxed)),
            "events_imported": s.as_ref().map(|s| s.events_imported.load(Ordering::Relaxed)),
            "events_dropped": s.as_ref().map(|s| s.events_dropped.load(Ordering::Relaxed)),
            "events_exported": s.as_ref().map(|s| s.events_exported.load(Ordering::Relaxed)),
        }));
    }
    for (id, (addr, _)) in dialing.iter() {
        if rt.pm.peer_by_node_id(id).is_none() {
            out.push(json!({ "node_id": id.to_string(), "address": addr.to_string(), "connected": false }));
        }
    }
    let c = &rt.handler.counters;
    json!({
        "peers": out,
        "dropped": {
            "oversized": c.oversized.load(Ordering::Relaxed),
            "undecodable": c.undecodable.load(Ordering::Relaxed),
            "policies": c.policy_dropped.load(Ordering::Relaxed),
        },
        "gossip": rt.gossip_counters.json(),
    })
}
