//! The board's policy: what orders it takes, from config, and how it is
//! announced (NIP-11 and a replaceable event signed by the board's key).

use crate::error::Error;
use serde_json::{json, Value};

use crate::order::{Order, LAYERS, NETWORKS};

/// The replaceable kind of the board policy event (documented in docs/PROTOCOL.md).
pub const POLICY_KIND: u16 = 10383;

/// How to reach a board, as published in its policy event.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reach {
    /// Websocket URLs (the configured public URL first).
    pub websocket: Vec<String>,
    /// Lightning addresses `<node id>@host:port` (bolt8 transport).
    pub lightning: Vec<String>,
    /// Hex-encoded blinded message paths to the board (onion-messages transport).
    pub onion: Vec<String>,
}

impl Reach {
    /// True when no transport has reported an endpoint yet.
    pub fn is_empty(&self) -> bool {
        self.websocket.is_empty() && self.lightning.is_empty() && self.onion.is_empty()
    }
}

/// Config of `[services.<name>] type = "market-board"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoardConfig {
    /// ISO 4217 codes accepted (`f` tag); empty: every currency.
    pub currencies: Vec<String>,
    /// Networks accepted (`network` tag): mainnet, testnet, signet, regtest.
    pub networks: Vec<String>,
    /// Layers accepted (`layer` tag): onchain, lightning, liquid.
    pub layers: Vec<String>,
    /// Smallest `amt` in sats for fixed-amount orders (0: no minimum).
    pub min_sats: u64,
    /// Largest `amt` in sats (0: no maximum).
    pub max_sats: u64,
    /// Longest time from `created_at` to `expires_at`, in seconds.
    pub max_order_lifetime_secs: u64,
    /// Pending, unexpired orders one maker may have open at once.
    pub max_open_orders_per_author: usize,
    /// Refuse orders without a `bolt12` offer.
    pub require_bolt12: bool,
    /// Tiers makers need (Web-of-Stakes), from a rank service's attestations.
    pub stake: StakeRules,
}

/// `[services.<name>.stake]`: the tiers orders need. An order shows its
/// maker's tier with a `stake` tag; the tier is the rank service's signed
/// attestation for that stake key.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StakeRules {
    /// The rank service's key (hex); empty: this node's own key (a rank
    /// service on this node).
    pub rank_key: String,
    /// A remote rank service's websocket URL to fetch attestations from;
    /// empty: this node's store.
    pub rank_relay: String,
    /// Seconds a remote answer is reused.
    pub cache_secs: u64,
    /// Tier every order needs (0: none).
    pub min_tier: u8,
    /// Tier orders in a currency need (`f` tag), e.g. `{ NGN = 2 }`.
    pub min_tier_by_currency: std::collections::BTreeMap<String, u8>,
    /// Tier orders of a type need (`k` tag: `buy`, `sell`).
    pub min_tier_by_type: std::collections::BTreeMap<String, u8>,
}

impl StakeRules {
    /// The tier `order` needs.
    pub fn needed(&self, order: &Order) -> u8 {
        let side = match order.side {
            crate::order::Side::Buy => "buy",
            crate::order::Side::Sell => "sell",
        };
        [
            Some(self.min_tier),
            self.min_tier_by_currency.get(&order.currency).copied(),
            self.min_tier_by_type.get(side).copied(),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
    }

    /// Whether any rule needs a tier.
    pub fn ranks(&self) -> bool {
        self.min_tier > 0
            || self.min_tier_by_currency.values().any(|t| *t > 0)
            || self.min_tier_by_type.values().any(|t| *t > 0)
    }
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig {
            currencies: Vec::new(),
            networks: vec!["mainnet".into()],
            layers: vec!["lightning".into(), "onchain".into()],
            min_sats: 0,
            max_sats: 0,
            max_order_lifetime_secs: 7 * 24 * 3600,
            max_open_orders_per_author: 20,
            require_bolt12: false,
            stake: StakeRules {
                cache_secs: 30,
                ..StakeRules::default()
            },
        }
    }
}

pub(crate) const EXAMPLE: &str = r#"# ISO 4217 codes accepted (f tag); empty: every currency.
currencies = []
# Networks accepted (network tag): mainnet, testnet, signet, regtest.
networks = ["mainnet"]
# Layers accepted (layer tag): onchain, lightning, liquid.
layers = ["lightning", "onchain"]
# Smallest amt in sats for fixed-amount orders (0: no minimum).
min_sats = 0
# Largest amt in sats (0: no maximum).
max_sats = 0
# Longest time from created_at to expires_at, in seconds.
max_order_lifetime_secs = 604800
# Pending, unexpired orders one maker may have open at once.
max_open_orders_per_author = 20
# Refuse orders without a bolt12 offer.
require_bolt12 = false

# Tiers makers need (Web-of-Stakes): an order's `stake` tag names its
# maker's stake key, and a rank service attests the key's tier.
[{table}.stake]
# The rank service's key (hex); empty: this node's key (a rank service here).
rank_key = ""
# A remote rank service's websocket URL; empty: this node's store.
rank_relay = ""
# Seconds a remote answer is reused.
cache_secs = 30
# Tier every order needs (0: none), and per currency or order type.
min_tier = 0
min_tier_by_currency = {}
min_tier_by_type = {}
"#;

impl BoardConfig {
    /// Check the config itself; the error names the key (relative to the table).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for c in &self.currencies {
            if iso_currency::Currency::from_code(c).is_none() {
                return Err(("currencies", format!("`{c}` is not an ISO 4217 code")));
            }
        }
        for n in &self.networks {
            if !NETWORKS.contains(&n.as_str()) {
                return Err((
                    "networks",
                    format!("`{n}` is not one of {}", NETWORKS.join(", ")),
                ));
            }
        }
        for l in &self.layers {
            if !LAYERS.contains(&l.as_str()) {
                return Err((
                    "layers",
                    format!("`{l}` is not one of {}", LAYERS.join(", ")),
                ));
            }
        }
        if !self.stake.rank_key.is_empty()
            && nostr::PublicKey::from_hex(&self.stake.rank_key).is_err()
        {
            return Err(("stake.rank_key", "is not a hex public key".into()));
        }
        if !self.stake.rank_relay.is_empty()
            && !["ws", "wss"].contains(
                &url::Url::parse(&self.stake.rank_relay)
                    .map(|u| u.scheme().to_string())
                    .unwrap_or_default()
                    .as_str(),
            )
        {
            return Err(("stake.rank_relay", "is not a ws:// or wss:// URL".into()));
        }
        if let Some(k) = self
            .stake
            .min_tier_by_type
            .keys()
            .find(|k| !["buy", "sell"].contains(&k.as_str()))
        {
            return Err((
                "stake.min_tier_by_type",
                format!("`{k}`: the types are buy and sell"),
            ));
        }
        if self.max_sats != 0 && self.max_sats < self.min_sats {
            return Err(("max_sats", "is below min_sats".into()));
        }
        Ok(())
    }

    /// The rule an order breaks, if any (the order is already well formed).
    pub fn check(&self, order: &Order, created_at: u64) -> crate::error::Result<()> {
        let listed = |list: &[String]| list.join(", ");
        if !self.currencies.is_empty() && !self.currencies.contains(&order.currency) {
            return Err(Error::Policy(format!(
                "currency {} is not accepted here (accepted: {})",
                order.currency,
                listed(&self.currencies)
            )));
        }
        if !self.networks.contains(&order.network) {
            return Err(Error::Policy(format!(
                "network {} is not accepted here (accepted: {})",
                order.network,
                listed(&self.networks)
            )));
        }
        if !self.layers.contains(&order.layer) {
            return Err(Error::Policy(format!(
                "layer {} is not accepted here (accepted: {})",
                order.layer,
                listed(&self.layers)
            )));
        }
        if order.amount_sats > 0 && order.amount_sats < self.min_sats {
            return Err(Error::Policy(format!(
                "amt {} sats is below the minimum of {} sats",
                order.amount_sats, self.min_sats
            )));
        }
        if self.max_sats > 0 && order.amount_sats > self.max_sats {
            return Err(Error::Policy(format!(
                "amt {} sats is above the maximum of {} sats",
                order.amount_sats, self.max_sats
            )));
        }
        let lifetime = order.expires_at.saturating_sub(created_at);
        if lifetime > self.max_order_lifetime_secs {
            return Err(Error::Policy(format!(
                "order lifetime of {lifetime} s is above the maximum of {} s",
                self.max_order_lifetime_secs
            )));
        }
        if self.require_bolt12 && order.bolt12.is_none() {
            return Err(Error::Policy(
                "this board requires a bolt12 offer on every order".into(),
            ));
        }
        Ok(())
    }

    /// The policy as published (NIP-11 `civkit_board` and the policy event's content).
    pub fn document(&self, reach: &Reach) -> Value {
        json!({
            "order_kind": crate::order::ORDER_KIND,
            "policy_kind": POLICY_KIND,
            "currencies": self.currencies,
            "networks": self.networks,
            "layers": self.layers,
            "min_sats": self.min_sats,
            "max_sats": self.max_sats,
            "max_order_lifetime_secs": self.max_order_lifetime_secs,
            "max_open_orders_per_author": self.max_open_orders_per_author,
            "require_bolt12": self.require_bolt12,
            "stake": {
                "rank_key": self.stake.rank_key,
                "rank_relay": self.stake.rank_relay,
                "attestation_kind": 30392,
                "min_tier": self.stake.min_tier,
                "min_tier_by_currency": self.stake.min_tier_by_currency,
                "min_tier_by_type": self.stake.min_tier_by_type,
            },
            "endpoints": reach,
        })
    }
}
