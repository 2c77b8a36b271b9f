//! BOLT12 offers carried by orders (`bolt12` tag), checked with LDK's parser.

use std::time::Duration;

use lightning::bitcoin::constants::ChainHash;
use lightning::bitcoin::Network;
use lightning::offers::offer::{Amount, Offer};

use crate::error::{Error, Result};
use crate::order::{FiatAmount, Order};

/// The chain an order's `network` names.
pub fn chain_of(network: &str) -> Option<ChainHash> {
    let n = match network {
        "mainnet" => Network::Bitcoin,
        "testnet" => Network::Testnet,
        "signet" => Network::Signet,
        "regtest" => Network::Regtest,
        _ => return None,
    };
    Some(ChainHash::using_genesis_block(n))
}

/// Parse an offer string (BOLT12 encoding, `+` continuations allowed).
///
/// Beyond LDK's parser, an offer that requires unknown features is refused:
/// BOLT12 says a reader MUST NOT respond to it (LDK applies that rule only
/// when building an invoice request), so no taker could pay it.
pub fn parse(s: &str) -> Result<Offer> {
    let offer = s
        .parse::<Offer>()
        .map_err(|e| Error::Offer(format!("not a valid BOLT12 offer ({e:?})")))?;
    if excess_padding(s) {
        return Err(Error::Offer("bech32 padding exceeds 4 bits".into()));
    }
    if offer.offer_features().requires_unknown_bits() {
        return Err(Error::Offer(
            "the offer requires features no payer knows (unknown even feature bits)".into(),
        ));
    }
    Ok(offer)
}

/// BOLT12 strings are bech32 without a checksum. `n` data characters carry
/// `5n` bits, of which `5n mod 8` are padding; 5 or more padding bits means a
/// whole character too many, which the spec's vectors call invalid and LDK
/// 0.2 does not catch. `+` continuations (with any whitespace) are removed
/// first, as the encoding allows.
fn excess_padding(s: &str) -> bool {
    let compact: String = s
        .chars()
        .filter(|c| *c != '+' && !c.is_whitespace())
        .collect();
    match compact.rfind('1') {
        Some(sep) => (compact.len() - sep - 1) * 5 % 8 >= 5,
        None => false,
    }
}

/// Check an order's offer: valid, not expired at `now` (unix seconds), for
/// the order's chain, and with an amount that agrees with the order.
pub fn check(order: &Order, offer_str: &str, now: u64) -> Result<Offer> {
    let offer = parse(offer_str)?;
    if let Some(exp) = offer.absolute_expiry() {
        if exp <= Duration::from_secs(now) {
            return Err(Error::Offer(format!(
                "the offer expired at {}",
                exp.as_secs()
            )));
        }
    }
    let chain = chain_of(&order.network)
        .ok_or_else(|| Error::Offer(format!("unknown network `{}`", order.network)))?;
    if !offer.chains().contains(&chain) {
        return Err(Error::Offer(format!(
            "the offer is not for the order's network `{}`",
            order.network
        )));
    }
    match offer.amount() {
        None => {}
        Some(Amount::Bitcoin { amount_msats }) => {
            if order.amount_sats == 0 {
                return Err(Error::Offer(format!(
                    "the offer fixes {amount_msats} msat but the order is at market price (amt 0)"
                )));
            }
            if amount_msats != order.amount_sats.saturating_mul(1000) {
                return Err(Error::Offer(format!(
                    "the offer asks {amount_msats} msat but the order says amt {} sat",
                    order.amount_sats
                )));
            }
        }
        Some(Amount::Currency {
            iso4217_code,
            amount,
        }) => {
            let code = iso4217_code.as_str();
            if code != order.currency {
                return Err(Error::Offer(format!(
                    "the offer is in {code} but the order is in {}",
                    order.currency
                )));
            }
            let exp = iso_currency::Currency::from_code(code)
                .and_then(|c| c.exponent())
                .unwrap_or(0);
            let major = amount as f64 / 10f64.powi(i32::from(exp));
            let agrees = match order.fiat {
                FiatAmount::Single(fa) => (fa - major).abs() < 1e-9,
                FiatAmount::Range(min, max) => (min..=max).contains(&major),
            };
            if !agrees {
                return Err(Error::Offer(format!(
                    "the offer asks {major} {code}, outside the order's fiat amount"
                )));
            }
        }
    }
    Ok(offer)
}
