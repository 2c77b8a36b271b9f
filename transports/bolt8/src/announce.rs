//! The policy gossip at work: announce this board's `credential_policy` and
//! `service_policy` (from its credentials service's announcement), take
//! valid ones from peers, and relay them, de-duplicated by origin and
//! timestamp and rate-limited per peer. Runs only with a chain source: the
//! expiry heights need the tip.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use civkit_chain::ChainSource;
use lightning::bitcoin::secp256k1::PublicKey;
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::gossip::{assets, bitfield, credentials, Dropped, Policy, PolicyTable, SignedPolicy};
use crate::Runtime;

/// `[transports.<name>.gossip]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipConfig {
    /// Where the chain's tip comes from, for expiry heights. `none`: no
    /// policy gossip.
    pub chain: civkit_chain::SourceConfig,
    /// Blocks this board's policies stay valid after the tip.
    pub expiry_blocks: u32,
    /// Seconds between announcements of this board's policies.
    pub announce_secs: u64,
    /// Policy messages one peer may send per minute; more are dropped.
    pub per_peer_per_minute: u32,
    /// Policies of other boards held at once.
    pub max_known: usize,
    /// Seconds between looks at the chain's tip.
    pub poll_secs: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            chain: civkit_chain::SourceConfig {
                backend: "none".into(),
                url: String::new(),
                ..civkit_chain::SourceConfig::default()
            },
            expiry_blocks: 144,
            announce_secs: 600,
            per_peer_per_minute: 30,
            max_known: 1_000,
            poll_secs: 30,
        }
    }
}

/// What the gossip saw, for `peers list`.
#[derive(Debug, Default)]
pub struct GossipCounters {
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub relayed: AtomicU64,
    pub invalid: AtomicU64,
    pub expired: AtomicU64,
    pub duplicate: AtomicU64,
    pub rate_limited: AtomicU64,
}

impl GossipCounters {
    pub fn json(&self) -> Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "received": n(&self.received), "accepted": n(&self.accepted), "relayed": n(&self.relayed),
            "invalid": n(&self.invalid), "expired": n(&self.expired),
            "duplicate": n(&self.duplicate), "rate_limited": n(&self.rate_limited),
        })
    }
}

/// This board's policies from its credentials service's announcement
/// (NIP-11 `civkit_credentials`), or none without one.
pub fn own_policies(announcement: &Value) -> Option<(Policy, Policy)> {
    let issuance = announcement["pubkey"].as_str().and_then(hex_point)?;
    let mut assets = vec![];
    if announcement["backend"].as_str().is_some() {
        assets.push(assets::LIGHTNING_PAYMENT);
    }
    if announcement["stake"]["per_epoch_by_tier"]
        .as_array()
        .is_some_and(|l| !l.is_empty())
    {
        assets.extend([assets::CHANNEL_STAKE, assets::UTXO_STAKE]);
    }
    let price = announcement["price_msat"].as_u64().unwrap_or(0);
    let kinds: Vec<u16> = announcement["kinds"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|k| u16::try_from(k.as_u64()?).ok())
                .collect()
        })
        .unwrap_or_default();
    let per_event = announcement["per_event"].as_u64().unwrap_or(1);
    Some((
        Policy::Credential {
            issuance_pubkey: issuance,
            assetproof_features: bitfield(&assets),
            credentials_features: bitfield(&[credentials::BLIND_DH]),
            asset_to_credential: u32::try_from(price).unwrap_or(u32::MAX),
        },
        Policy::Service {
            pubkeys: vec![issuance],
            service_ids: kinds,
            credentials_to_service: u32::try_from(per_event).unwrap_or(u32::MAX),
        },
    ))
}

fn hex_point(k: &str) -> Option<PublicKey> {
    PublicKey::from_slice(&hex::decode(k).ok()?).ok()
}

/// One peer's allowance: messages in the current minute.
struct Bucket {
    start: Instant,
    count: u32,
}

/// Run the gossip until the transport stops.
pub(crate) async fn run(rt: Arc<Runtime>, chain: Arc<dyn ChainSource>, cfg: GossipConfig) {
    let Some(mut incoming) = rt.handler.take_policies() else {
        return;
    };
    let mut tips = civkit_chain::follow(chain, Duration::from_secs(cfg.poll_secs.max(1)));
    let mut table = PolicyTable::new(cfg.max_known);
    let mut buckets: HashMap<PublicKey, Bucket> = HashMap::new();
    let mut greeted: HashSet<PublicKey> = HashSet::new();
    let mut announce = tokio::time::interval(Duration::from_secs(cfg.announce_secs.max(1)));
    let mut look = tokio::time::interval(Duration::from_secs(1));
    let mut last_timestamp = 0u32;
    let mut announced: Option<(Policy, Policy)> = None;
    let node_id = rt.handle.node_id();
    let counters = &rt.gossip_counters;
    let mut sd = rt.shutdown.clone();
    loop {
        let tip = (*tips.borrow()).map(|t| t.height);
        tokio::select! {
            _ = sd.wait() => return,
            _ = tips.changed() => continue,
            _ = announce.tick() => {
                if let Some(tip) = tip {
                    announce_own(&rt, &cfg, &mut table, tip, &mut last_timestamp, &mut announced);
                }
            }
            _ = look.tick() => {
                // A first tip, or a changed policy (a new epoch key): announce now.
                if let Some(tip) = tip {
                    let current = own(&rt);
                    if current.is_some() && current != announced {
                        announce_own(&rt, &cfg, &mut table, tip, &mut last_timestamp, &mut announced);
                    }
                }
                // Peers that just connected get every valid policy held.
                let now: HashSet<PublicKey> = rt.handler.gossip_peers().into_iter().collect();
                if let Some(tip) = tip {
                    for peer in now.difference(&greeted) {
                        for m in table.valid(tip) {
                            if !rt.handler.queue_policy(*peer, m) { break; }
                        }
                    }
                }
                greeted = now;
                buckets.retain(|p, _| greeted.contains(p));
            }
            got = incoming.recv() => {
                let Some((from, m)) = got else { return };
                counters.received.fetch_add(1, Ordering::Relaxed);
                let bucket = buckets.entry(from).or_insert(Bucket { start: Instant::now(), count: 0 });
                if bucket.start.elapsed() >= Duration::from_secs(60) {
                    *bucket = Bucket { start: Instant::now(), count: 0 };
                }
                bucket.count += 1;
                if bucket.count > cfg.per_peer_per_minute {
                    counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Some(tip) = tip else { continue };
                if m.node_id == node_id {
                    counters.duplicate.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match table.offer(m.clone(), tip) {
                    Ok(()) => {
                        counters.accepted.fetch_add(1, Ordering::Relaxed);
                        send(&rt, &m, Some(from));
                    }
                    Err(Dropped::Duplicate) => { counters.duplicate.fetch_add(1, Ordering::Relaxed); }
                    Err(Dropped::Expired(_)) => { counters.expired.fetch_add(1, Ordering::Relaxed); }
                    Err(e) => {
                        counters.invalid.fetch_add(1, Ordering::Relaxed);
                        debug!(error = %e, "policy message dropped");
                    }
                }
            }
        }
    }
}

/// This board's policies now, from its credentials service.
fn own(rt: &Runtime) -> Option<(Policy, Policy)> {
    rt.node
        .service_nip11()
        .get("civkit_credentials")
        .and_then(own_policies)
}

/// Sign this board's policies at `tip`, hold them, and send them to every
/// gossip peer.
fn announce_own(
    rt: &Runtime,
    cfg: &GossipConfig,
    table: &mut PolicyTable,
    tip: u64,
    last_timestamp: &mut u32,
    announced: &mut Option<(Policy, Policy)>,
) {
    let Some((credential, service)) = own(rt) else {
        return;
    };
    let secret = rt.handle.keys().get_node_secret_key();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // Strictly newer than any earlier one, as the spec asks.
    *last_timestamp = u32::try_from(now)
        .unwrap_or(u32::MAX)
        .max(last_timestamp.saturating_add(1));
    let expiry = u32::try_from(tip)
        .unwrap_or(u32::MAX)
        .saturating_add(cfg.expiry_blocks);
    *announced = Some((credential.clone(), service.clone()));
    for p in [credential, service] {
        let m = SignedPolicy::sign(&secret, *last_timestamp, p, expiry);
        if table.offer(m.clone(), tip).is_ok() {
            send(rt, &m, None);
        }
    }
    info!(tip, expiry, "credential and service policies announced");
}

/// Queue `m` to every gossip peer but `except` and its origin.
fn send(rt: &Runtime, m: &SignedPolicy, except: Option<PublicKey>) {
    for peer in rt.handler.gossip_peers() {
        if Some(peer) == except || peer == m.node_id {
            continue;
        }
        if rt.handler.queue_policy(peer, m.clone()) {
            if except.is_some() {
                rt.gossip_counters.relayed.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            warn!("policy outbox full; a policy message was not sent");
        }
    }
}
