//! NIP-69 orders (kind 38383): parsing and format checks, with no I/O.
//!
//! Every failure names the tag that failed, so a maker knows what to fix.

use civkit_framework::kinds::tag_value;
use nostr::Event;

use crate::error::Error;

/// The NIP-69 order kind.
pub const ORDER_KIND: u16 = 38383;

/// buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

/// Order status (`s` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Canceled,
    InProgress,
    Success,
    Expired,
}

impl Status {
    /// Parse the `s` value.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "canceled" => Status::Canceled,
            "in-progress" => Status::InProgress,
            "success" => Status::Success,
            "expired" => Status::Expired,
            _ => return None,
        })
    }
}

/// Fiat amount (`fa`): one amount or a min/max range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FiatAmount {
    Single(f64),
    Range(f64, f64),
}

/// A parsed order.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: String,
    pub side: Side,
    pub currency: String,
    pub status: Status,
    /// Sats; 0 means "at market price".
    pub amount_sats: u64,
    pub fiat: FiatAmount,
    pub payment_methods: Vec<String>,
    pub premium: f64,
    pub network: String,
    pub layer: String,
    pub expires_at: u64,
    pub expiration: u64,
    pub platform: String,
    /// The `bolt12` offer string, if any.
    pub bolt12: Option<String>,
}

fn err(tag: &'static str, reason: impl Into<String>) -> Error {
    Error::Order {
        tag,
        reason: reason.into(),
    }
}

/// Networks an order may name.
pub const NETWORKS: &[&str] = &["mainnet", "testnet", "signet", "regtest"];
/// Layers an order may name.
pub const LAYERS: &[&str] = &["onchain", "lightning", "liquid"];

/// All values of the first tag named `name` (without the name).
fn values<'a>(event: &'a Event, name: &str) -> Option<Vec<&'a str>> {
    event.tags.iter().find_map(|t| {
        let s = t.as_slice();
        (s.first().map(String::as_str) == Some(name))
            .then(|| s[1..].iter().map(String::as_str).collect())
    })
}

fn required<'a>(event: &'a Event, tag: &'static str) -> Result<&'a str, Error> {
    match tag_value(event, tag) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(err(tag, "must not be empty")),
        None => Err(err(tag, "is required")),
    }
}

fn number(tag: &'static str, v: &str) -> Result<f64, Error> {
    v.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| err(tag, format!("`{v}` is not a number")))
}

fn unix_time(tag: &'static str, v: &str) -> Result<u64, Error> {
    v.parse::<u64>()
        .map_err(|_| err(tag, format!("`{v}` is not a unix timestamp")))
}

const GEOHASH: &str = "0123456789bcdefghjkmnpqrstuvwxyz";

/// Parse and check every required NIP-69 tag and the format of optional ones.
pub fn parse(event: &Event) -> Result<Order, Error> {
    if event.kind.as_u16() != ORDER_KIND {
        return Err(err("kind", format!("orders are kind {ORDER_KIND}")));
    }
    let id = required(event, "d")?.to_string();
    let side = match required(event, "k")? {
        "buy" => Side::Buy,
        "sell" => Side::Sell,
        other => return Err(err("k", format!("must be `buy` or `sell`, not `{other}`"))),
    };
    let currency = required(event, "f")?;
    if iso_currency::Currency::from_code(currency).is_none() {
        return Err(err(
            "f",
            format!("`{currency}` is not an ISO 4217 currency code"),
        ));
    }
    let status_str = required(event, "s")?;
    let status = Status::parse(status_str).ok_or_else(|| {
        err(
            "s",
            format!(
                "`{status_str}` is not one of pending, canceled, in-progress, success, expired"
            ),
        )
    })?;
    let amt = required(event, "amt")?;
    let amount_sats = amt
        .parse::<u64>()
        .map_err(|_| err("amt", format!("`{amt}` is not a whole number of sats")))?;
    let fa = values(event, "fa").ok_or_else(|| err("fa", "is required"))?;
    let fiat = match fa.as_slice() {
        [one] => FiatAmount::Single(number("fa", one)?),
        [min, max] => FiatAmount::Range(number("fa", min)?, number("fa", max)?),
        _ => return Err(err("fa", "takes one amount or a min and a max")),
    };
    match fiat {
        FiatAmount::Single(a) if a <= 0.0 => return Err(err("fa", "must be positive")),
        FiatAmount::Range(a, b) if a <= 0.0 || b <= a => {
            return Err(err("fa", "range must be positive with min below max"))
        }
        _ => {}
    }
    let payment_methods: Vec<String> = values(event, "pm")
        .ok_or_else(|| err("pm", "is required"))?
        .into_iter()
        .filter(|m| !m.trim().is_empty())
        .map(str::to_string)
        .collect();
    if payment_methods.is_empty() {
        return Err(err("pm", "names at least one payment method"));
    }
    let premium = number("premium", required(event, "premium")?)?;
    let network = required(event, "network")?;
    if !NETWORKS.contains(&network) {
        return Err(err(
            "network",
            format!("`{network}` is not one of {}", NETWORKS.join(", ")),
        ));
    }
    let layer = required(event, "layer")?;
    if !LAYERS.contains(&layer) {
        return Err(err(
            "layer",
            format!("`{layer}` is not one of {}", LAYERS.join(", ")),
        ));
    }
    let expires_at = unix_time("expires_at", required(event, "expires_at")?)?;
    if expires_at <= event.created_at.as_secs() {
        return Err(err("expires_at", "must be after created_at"));
    }
    let expiration = unix_time("expiration", required(event, "expiration")?)?;
    if expiration < expires_at {
        return Err(err("expiration", "must not be before expires_at"));
    }
    let platform = required(event, "y")?.to_string();
    match required(event, "z")? {
        "order" => {}
        other => return Err(err("z", format!("must be `order`, not `{other}`"))),
    }
    check_optional(event)?;
    let bolt12 = match tag_value(event, "bolt12") {
        Some(v) if v.trim().is_empty() => return Err(err("bolt12", "must not be empty")),
        Some(v) => Some(v.to_string()),
        None => None,
    };
    Ok(Order {
        id,
        side,
        currency: currency.to_string(),
        status,
        amount_sats,
        fiat,
        payment_methods,
        premium,
        network: network.to_string(),
        layer: layer.to_string(),
        expires_at,
        expiration,
        platform,
        bolt12,
    })
}

fn check_optional(event: &Event) -> Result<(), Error> {
    if let Some(source) = tag_value(event, "source") {
        let ok = url::Url::parse(source).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            return Err(err("source", format!("`{source}` is not an http(s) URL")));
        }
    }
    if let Some(rating) = tag_value(event, "rating") {
        let ok = serde_json::from_str::<serde_json::Value>(rating).is_ok_and(|v| v.is_object());
        if !ok {
            return Err(err("rating", "must be a JSON object"));
        }
    }
    if let Some(name) = tag_value(event, "name") {
        if name.trim().is_empty() {
            return Err(err("name", "must not be empty"));
        }
    }
    if let Some(g) = tag_value(event, "g") {
        if g.is_empty() || !g.chars().all(|c| GEOHASH.contains(c)) {
            return Err(err("g", format!("`{g}` is not a geohash")));
        }
    }
    if let Some(bond) = tag_value(event, "bond") {
        if bond.parse::<u64>().is_err() {
            return Err(err("bond", format!("`{bond}` is not a whole number")));
        }
    }
    Ok(())
}
