//! The maker's side of issuance: build the request events and read the
//! board's encrypted answers. Used by civkit-sample and the tests.

use cashu::nuts::{PublicKey as CashuKey, SecretKey as CashuSecret};
use nostr::nips::nip44;
use nostr::{Event, EventBuilder, Keys, Kind, PublicKey, Tag};
use serde_json::{json, Value};

use crate::error::{answer, request, Error, Result};
use crate::scheme::{self, Credential};
use crate::{MINT, MINT_REQUEST, QUOTE, QUOTE_REQUEST};

/// Blinded messages waiting for the board's signatures.
#[derive(Debug, Clone)]
pub struct Pending {
    pub items: Vec<(CashuSecret, CashuSecret, CashuKey)>,
}

impl Pending {
    /// `n` fresh spend keys, blinded.
    pub fn new(n: usize) -> Result<Self> {
        Ok(Pending {
            items: (0..n).map(|_| scheme::blind()).collect::<Result<_, _>>()?,
        })
    }
    /// The blinded points, hex (all the board ever sees).
    pub fn blinded(&self) -> Vec<String> {
        self.items.iter().map(|(_, _, b)| b.to_hex()).collect()
    }
}

fn build(keys: &Keys, board: &PublicKey, kind: u16, mut content: Value) -> Result<Event> {
    // A nonce makes every request a new event: a retry (for example after
    // paying) must not be dropped as a duplicate of the first attempt.
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce).map_err(request)?;
    content["nonce"] = json!(hex::encode(nonce));
    EventBuilder::new(Kind::from(kind), content.to_string())
        .tag(Tag::public_key(*board))
        .sign_with_keys(keys)
        .map_err(request)
}

/// Ask the board for a quote for `count` credentials.
pub fn quote_request(keys: &Keys, board: &PublicKey, count: usize) -> Result<Event> {
    build(keys, board, QUOTE_REQUEST, json!({ "count": count }))
}

/// Present blinded messages for a paid quote.
pub fn mint_request(
    keys: &Keys,
    board: &PublicKey,
    quote: &str,
    pending: &Pending,
) -> Result<Event> {
    build(
        keys,
        board,
        MINT_REQUEST,
        json!({ "quote": quote, "blinded": pending.blinded() }),
    )
}

/// Ask for the epoch's credentials paid by stake: signed by the stake key
/// (`stake`), whose tier earns them.
pub fn stake_mint_request(stake: &Keys, board: &PublicKey, pending: &Pending) -> Result<Event> {
    build(
        stake,
        board,
        crate::STAKE_MINT_REQUEST,
        json!({ "blinded": pending.blinded() }),
    )
}

/// Decrypt a board answer (kind 23382 or 23384) addressed to `keys`.
pub fn open(keys: &Keys, event: &Event) -> Result<Value> {
    if event.kind.as_u16() != QUOTE && event.kind.as_u16() != MINT {
        return Err(answer("not a credentials answer"));
    }
    let text = nip44::decrypt(keys.secret_key(), &event.pubkey, &event.content).map_err(answer)?;
    serde_json::from_str(&text).map_err(answer)
}

/// Turn the board's blind signatures into credentials, checking each DLEQ
/// proof against the key the board announced for that epoch.
pub fn finish(
    pending: &Pending,
    answer_value: &Value,
    announced_key: &str,
) -> Result<Vec<Credential>> {
    let reply = answer_value;
    if let Some(e) = reply["error"].as_str() {
        return Err(Error::Refused(e.to_string()));
    }
    let epoch = reply["epoch"]
        .as_u64()
        .ok_or_else(|| answer("no epoch in the answer"))?;
    let key = CashuKey::from_hex(announced_key).map_err(answer)?;
    if reply["pubkey"].as_str() != Some(announced_key) {
        return Err(answer(
            "the board signed with a key other than the one it announced",
        ));
    }
    let sigs = reply["signatures"]
        .as_array()
        .ok_or_else(|| answer("no signatures in the answer"))?;
    if sigs.len() != pending.items.len() {
        return Err(answer("the board returned the wrong number of signatures"));
    }
    pending
        .items
        .iter()
        .zip(sigs)
        .map(|((spend, r, b), s)| {
            let c = scheme::unblind(
                &key,
                b,
                r,
                s["C_"].as_str().unwrap_or(""),
                s["e"].as_str().unwrap_or(""),
                s["s"].as_str().unwrap_or(""),
            )?;
            Ok(Credential {
                epoch,
                spend_secret: spend.to_secret_hex(),
                signature: c.to_hex(),
            })
        })
        .collect()
}
