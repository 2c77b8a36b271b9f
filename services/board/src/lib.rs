//! # civkit-board
//!
//! The CivKit market board, a [`Service`] in the `services` column of
//! `docs/ARCHITECTURE.md`. Makers publish NIP-69 orders (kind 38383, addressable
//! by `d`), optionally carrying a BOLT12 offer in a `bolt12` tag; the board
//! checks them against NIP-69 and its own published policy before the node
//! stores and fans them out.
//!
//! - [`order`]: pure parsing and format checks (`invalid:` naming the tag);
//! - [`offer`]: BOLT12 validation with LDK's `Offer` (expiry, chain, amount);
//! - [`policy`]: the operator's rules (`restricted:` naming the rule) and
//!   their announcement in NIP-11 and a replaceable policy event;
//! - this file: the lifecycle (only the author updates or deletes an order:
//!   `blocked:` otherwise), open-order limits, and hiding pending orders
//!   past `expires_at` from new subscribers.

#![forbid(unsafe_code)]

pub mod error;
pub mod offer;
pub mod order;
pub mod policy;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use civkit_framework::kinds::{tag_value, Address};
use civkit_framework::{
    Admission, BuildContext, Error, Origin, Registry, Rejection, Result, Service, ServiceContext,
    Shutdown, StoredEvent,
};
use civkit_rank::lookup::TierLookup;
use civkit_rank::tier::stake_of;
use nostr::{Event, EventBuilder, EventId, Filter, Kind, Tag, Timestamp};
use serde_json::{json, Value};
use tracing::{info, warn};

pub use error::{Error as OrderError, ErrorKind as OrderErrorKind};
pub use order::{Order, ORDER_KIND};
pub use policy::{BoardConfig, Reach, POLICY_KIND};

/// Register the `market-board` service.
pub fn register(registry: &mut Registry) {
    registry.register_service(
        "market-board",
        "CivKit market board: NIP-69 orders with BOLT12 offers, checked against a published policy",
        policy::EXAMPLE,
        |mut cfg: BoardConfig, ctx: &BuildContext| {
            cfg.validate().map_err(|(key, msg)| {
                Error::config(format!("services.{}.{key}", ctx.instance), msg)
            })?;
            // No key named: the rank service is this node's.
            if cfg.stake.rank_key.is_empty() {
                cfg.stake.rank_key = ctx.keys.public_key().to_hex();
            }
            Ok(Arc::new(Board::new(cfg)) as Arc<dyn Service>)
        },
    );
}

/// The market board service.
pub struct Board {
    policy: BoardConfig,
    /// Where makers' tiers come from, when a rule needs one.
    tiers: Option<TierLookup>,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("policy", &self.policy)
            .finish()
    }
}

/// How long a remote rank service has to answer a tier lookup.
const TIER_TIMEOUT: Duration = Duration::from_secs(3);

impl Board {
    /// A board with this policy.
    pub fn new(policy: BoardConfig) -> Self {
        let tiers = nostr::PublicKey::from_hex(&policy.stake.rank_key)
            .ok()
            .filter(|_| policy.stake.ranks())
            .map(|key| {
                TierLookup::new(
                    key,
                    &policy.stake.rank_relay,
                    policy.stake.cache_secs,
                    TIER_TIMEOUT,
                )
            });
        Board { policy, tiers }
    }

    /// The stake tag, checked, and the tier rules: the rejection says which
    /// tier was needed and which was found.
    async fn admit_stake(
        &self,
        ctx: &ServiceContext,
        event: &Event,
        order: &Order,
    ) -> std::result::Result<(), Rejection> {
        let stake = stake_of(event).map_err(Rejection::invalid)?;
        let needed = self.policy.stake.needed(order);
        let Some(tiers) = self.tiers.as_ref().filter(|_| needed > 0) else {
            return Ok(());
        };
        let side = match order.side {
            order::Side::Buy => "buy",
            order::Side::Sell => "sell",
        };
        let Some(key) = stake else {
            return Err(Rejection::restricted(format!(
                "tier {needed} needed for {} {side} orders; found tier 0: the order has no `stake` tag",
                order.currency
            )));
        };
        let found = tiers.attestation(ctx, &key).await?;
        let tier = found.as_ref().map_or(0, |a| a.tier);
        if tier < needed {
            return Err(Rejection::restricted(format!(
                "tier {needed} needed for {} {side} orders; found tier {tier} for stake key {key}{}",
                order.currency,
                if found.is_none() { " (no attestation from the rank service)" } else { "" }
            )));
        }
        Ok(())
    }

    /// The policy event: replaceable, signed by the node key, listing how to reach the board.
    pub fn policy_event(
        &self,
        reach: &Reach,
        others: &serde_json::Map<String, Value>,
    ) -> EventBuilder {
        let mut tags: Vec<Tag> = reach
            .websocket
            .iter()
            .filter_map(|u| Tag::parse(["r", u.as_str()]).ok())
            .collect();
        tags.extend(Tag::parse(["alt", "CivKit board policy"]).ok());
        // Other services' announcements (e.g. `civkit_credentials`) ride along.
        let mut doc = self.policy.document(reach);
        if let Some(map) = doc.as_object_mut() {
            for (k, v) in others.iter().filter(|(k, _)| k.as_str() != "civkit_board") {
                map.insert(k.clone(), v.clone());
            }
        }
        EventBuilder::new(Kind::from(POLICY_KIND), doc.to_string()).tags(tags)
    }

    /// How to reach the board: websocket URLs (the public relay URL first)
    /// and Lightning addresses (`<node id>@host:port`).
    fn reach(ctx: &ServiceContext) -> Reach {
        let mut reach = Reach {
            websocket: ctx.relay_url().ok().flatten().into_iter().collect(),
            ..Reach::default()
        };
        for (_, url) in ctx.endpoints().unwrap_or_default() {
            if let Some(addr) = url.strip_prefix("ln://") {
                reach.lightning.push(addr.to_string());
            } else if let Some(path) = url.strip_prefix("onion://") {
                reach.onion.push(path.to_string());
            } else if (url.starts_with("ws://") || url.starts_with("wss://"))
                && !reach.websocket.contains(&url)
            {
                reach.websocket.push(url);
            }
        }
        reach
    }

    async fn publish_policy(&self, ctx: &ServiceContext) -> Result<()> {
        let reach = Self::reach(ctx);
        let builder = self.policy_event(&reach, &ctx.service_nip11().unwrap_or_default());
        let reply = ctx.publish_replacing(builder).await?;
        if reply.accepted {
            info!(id = %reply.event_id, "board policy published");
            Ok(())
        } else {
            Err(Error::Service {
                instance: ctx.name().to_string(),
                message: format!("policy event refused: {}", reply.message),
            })
        }
    }

    async fn stored(
        ctx: &ServiceContext,
        filter: Filter,
    ) -> std::result::Result<Vec<Event>, Rejection> {
        let p = ctx
            .persister()
            .map_err(|_| Rejection::error("the node is shutting down"))?;
        p.query(&[filter], ctx.now()).await.map_err(|e| {
            warn!(error = %e, "board lookup failed");
            Rejection::error("could not read the store")
        })
    }

    async fn admit_order(
        &self,
        ctx: &ServiceContext,
        event: &Event,
    ) -> std::result::Result<(), Rejection> {
        let order = order::parse(event).map_err(|e| e.rejection())?;
        let now = ctx.now().as_secs();
        if let Some(offer) = &order.bolt12 {
            offer::check(&order, offer, now).map_err(|e| e.rejection())?;
        }
        self.policy
            .check(&order, event.created_at.as_secs())
            .map_err(|e| e.rejection())?;
        self.admit_stake(ctx, event, &order).await?;
        // Only the maker who first used an order id may update it.
        let same_id = Filter::new()
            .kind(Kind::from(ORDER_KIND))
            .identifier(order.id.clone());
        if Self::stored(ctx, same_id)
            .await?
            .iter()
            .any(|e| e.pubkey != event.pubkey)
        {
            return Err(Rejection::blocked(format!(
                "order id `{}` belongs to another maker; only its author may update it",
                order.id
            )));
        }
        if order.status == order::Status::Pending {
            let mine = Filter::new()
                .kind(Kind::from(ORDER_KIND))
                .author(event.pubkey)
                .custom_tag(
                    nostr::SingleLetterTag::lowercase(nostr::Alphabet::S),
                    "pending",
                );
            let open = Self::stored(ctx, mine)
                .await?
                .iter()
                .filter(|e| {
                    tag_value(e, "d") != Some(order.id.as_str()) && pending_and_live(e, now)
                })
                .count();
            if open >= self.policy.max_open_orders_per_author {
                return Err(Rejection::restricted(format!(
                    "at most {} open orders per maker",
                    self.policy.max_open_orders_per_author
                )));
            }
        }
        Ok(())
    }

    /// A deletion request may not name another maker's order.
    async fn admit_deletion(
        &self,
        ctx: &ServiceContext,
        event: &Event,
    ) -> std::result::Result<(), Rejection> {
        for tag in event.tags.iter() {
            let s = tag.as_slice();
            match (s.first().map(String::as_str), s.get(1)) {
                (Some("a"), Some(v)) => {
                    if let Some(a) = Address::parse(v) {
                        if a.kind == ORDER_KIND && a.pubkey != event.pubkey {
                            return Err(Rejection::blocked("only the author may delete an order"));
                        }
                    }
                }
                (Some("e"), Some(v)) => {
                    if let Ok(id) = EventId::from_hex(v) {
                        let found = Self::stored(ctx, Filter::new().id(id)).await?;
                        if found
                            .iter()
                            .any(|e| e.kind.as_u16() == ORDER_KIND && e.pubkey != event.pubkey)
                        {
                            return Err(Rejection::blocked("only the author may delete an order"));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A pending order whose `expires_at` has not passed.
fn pending_and_live(e: &Event, now: u64) -> bool {
    tag_value(e, "s") == Some("pending")
        && tag_value(e, "expires_at")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|t| t > now)
}

#[async_trait]
impl Service for Board {
    fn supported_nips(&self) -> Vec<u16> {
        vec![69]
    }

    fn nip11_extra(&self, _now: nostr::Timestamp) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        let mut doc = self.policy.document(&Reach::default());
        if let Some(o) = doc.as_object_mut() {
            o.remove("endpoints");
        }
        m.insert("civkit_board".into(), doc);
        m
    }

    fn serves(&self, stored: &StoredEvent, now: Timestamp) -> bool {
        // Only orders are judged, so only orders are decoded.
        if stored.kind().is_some_and(|k| k.as_u16() != ORDER_KIND) {
            return true;
        }
        stored.event().is_ok_and(|event| {
            tag_value(event, "s") != Some("pending") || pending_and_live(event, now.as_secs())
        })
    }

    async fn admit_event(
        &self,
        ctx: &ServiceContext,
        _origin: &Origin,
        event: &Event,
    ) -> Admission {
        let verdict = match event.kind.as_u16() {
            ORDER_KIND => self.admit_order(ctx, event).await,
            5 => self.admit_deletion(ctx, event).await,
            _ => Ok(()),
        };
        match verdict {
            Ok(()) => Admission::Accept,
            Err(r) => Admission::Reject(r),
        }
    }

    async fn run(&self, ctx: ServiceContext, mut shutdown: Shutdown) -> Result<()> {
        // Announce once transports report where they listen, and again whenever
        // that changes (a transport that starts later, a new address).
        let mut announced: Option<Reach> = None;
        loop {
            let reach = Self::reach(&ctx);
            let known = !reach.is_empty();
            // Once per board: the node holding the board lease announces.
            if known && ctx.is_leader() && announced.as_ref() != Some(&reach) {
                match self.publish_policy(&ctx).await {
                    Ok(()) => announced = Some(reach),
                    Err(e) => warn!(error = %e, "could not publish the board policy"),
                }
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                // Quick until the first announcement, then a light poll.
                _ = tokio::time::sleep(Duration::from_millis(if announced.is_none() { 25 } else { 250 })) => {}
            }
        }
        Ok(())
    }

    async fn admin(&self, ctx: &ServiceContext, command: &str, _args: Value) -> Result<Value> {
        match command {
            "policy" => Ok(self.policy.document(&Self::reach(ctx))),
            "republish" => {
                self.publish_policy(ctx).await?;
                Ok(json!({ "published": true }))
            }
            other => Err(Error::Unsupported(format!(
                "admin command `{other}` (try policy, republish)"
            ))),
        }
    }
}
