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
            "endpoints": reach,
        })
    }
}
