//! # civkit-credentials
//!
//! Staking credentials: a board sells anti-spam credentials for bitcoin and
//! a maker spends them on orders, unlinkably. A [`Service`] in the
//! `services` column of `docs/ARCHITECTURE.md`.
//!
//! - [`scheme`]: blind Diffie-Hellman tokens (Cashu NUT-00, `cashu` crate)
//!   with DLEQ proofs, per-epoch keys, and redemption bound to the event;
//! - [`payment`]: the Lightning backends that sell them (LND, Core
//!   Lightning, and `free` for tests);
//! - issuance over Nostr in four ephemeral kinds, answers encrypted to the
//!   requester (NIP-44); redemption in the admission chain with an atomic,
//!   persisted spent set;
//! - [`wallet`]: the maker's side.

#![forbid(unsafe_code)]

pub mod error;
pub mod payment;
pub mod scheme;
#[cfg(feature = "testing")]
pub mod stand_in;
pub mod wallet;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use civkit_framework::{
    Admission, BuildContext, Error, Origin, Registry, Rejection, Service, ServiceContext,
};
use nostr::nips::nip44;
use nostr::{Event, EventBuilder, Kind, PublicKey, Tag};
use serde_json::{json, Value};
use tracing::{info, warn};

use payment::{PaymentBackend, PaymentConfig};
use scheme::Refusal;

/// Maker asks for a quote: `{"count": N}`.
pub const QUOTE_REQUEST: u16 = 23381;
/// Board's quote, encrypted to the maker: `{"quote", "invoice", "amount_msat", "count", "expires_at"}`.
pub const QUOTE: u16 = 23382;
/// Maker presents blinded messages: `{"quote", "blinded": [hex]}`.
pub const MINT_REQUEST: u16 = 23383;
/// Board's blind signatures, encrypted to the maker: `{"quote", "epoch", "pubkey", "signatures": [{"C_", "e", "s"}]}`.
pub const MINT: u16 = 23384;

/// Config of `[services.<name>] type = "credentials"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// Event kinds that must carry credentials.
    pub kinds: Vec<u16>,
    /// Credentials each such event must spend.
    pub per_event: usize,
    /// Price of one credential, in millisatoshi.
    pub price_msat: u64,
    /// Length of a key epoch, in seconds.
    pub epoch_secs: u64,
    /// Epochs a credential stays spendable (the current one included).
    pub epochs_valid: u64,
    /// Most credentials in one quote.
    pub max_per_quote: usize,
    /// Seconds an invoice stays payable.
    pub invoice_expiry_secs: u64,
    /// Master secret of the epoch keys, relative to node.data_dir (mode 0600).
    pub key_file: PathBuf,
    /// The Lightning node that sells the credentials.
    pub payment: PaymentConfig,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        CredentialsConfig {
            kinds: vec![38383],
            per_event: 1,
            price_msat: 1000,
            epoch_secs: 86_400,
            epochs_valid: 2,
            max_per_quote: 100,
            invoice_expiry_secs: 600,
            key_file: PathBuf::from("credentials.key"),
            payment: PaymentConfig::default(),
        }
    }
}

const EXAMPLE: &str = r#"# Event kinds that must carry credentials.
kinds = [38383]
# Credentials each such event must spend.
per_event = 1
# Price of one credential, in millisatoshi.
price_msat = 1000
# Length of a key epoch, in seconds.
epoch_secs = 86400
# Epochs a credential stays spendable (the current one included).
epochs_valid = 2
# Most credentials in one quote.
max_per_quote = 100
# Seconds an invoice stays payable.
invoice_expiry_secs = 600
# Master secret of the epoch keys, relative to node.data_dir (mode 0600).
key_file = "credentials.key"

# The Lightning node that sells the credentials.
[{table}.payment]
# lnd, cln or free (testing only: nothing is charged; must be chosen explicitly).
backend = "free"
# Base URL of the node's REST API.
url = ""
# LND: file with the invoice macaroon, relative to node.data_dir.
macaroon_file = ""
# Core Lightning: file with a rune allowed to call invoice and listinvoices.
rune_file = ""
"#;

/// Register the `credentials` service.
pub fn register(registry: &mut Registry) {
    registry.register_service(
        "credentials",
        "staking credentials: blind anti-spam tokens bought over Lightning, spent per order",
        EXAMPLE,
        |cfg: CredentialsConfig, ctx: &BuildContext| {
            let key = format!("services.{}", ctx.instance);
            if cfg.epoch_secs == 0 || cfg.epochs_valid == 0 || cfg.per_event == 0 {
                return Err(Error::config(
                    key,
                    "epoch_secs, epochs_valid and per_event must be at least 1",
                ));
            }
            let (master, _) =
                civkit_framework::keyfile::load_or_create(&ctx.data_dir.join(&cfg.key_file))?;
            let backend =
                payment::from_config(&cfg.payment, &ctx.data_dir, &format!("{key}.payment"))?;
            Ok(Arc::new(Credentials::new(cfg, master, backend)) as Arc<dyn Service>)
        },
    );
}

struct Inner {
    cfg: CredentialsConfig,
    master: [u8; 32],
    backend: Arc<dyn PaymentBackend>,
}

/// The credentials service.
#[derive(Clone)]
pub struct Credentials(Arc<Inner>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("backend", &self.0.backend.name())
            .finish()
    }
}

impl Credentials {
    /// A service with this config, epoch-key master secret and payment backend.
    pub fn new(cfg: CredentialsConfig, master: [u8; 32], backend: Arc<dyn PaymentBackend>) -> Self {
        info!(backend = backend.name(), "credentials service ready");
        Credentials(Arc::new(Inner {
            cfg,
            master,
            backend,
        }))
    }

    fn epoch_at(&self, now: u64) -> u64 {
        now / self.0.cfg.epoch_secs
    }

    /// The public key of an epoch (hex), as announced.
    pub fn epoch_pubkey(&self, epoch: u64) -> String {
        scheme::epoch_key(&self.0.master, epoch)
            .public_key()
            .to_hex()
    }

    /// What NIP-11 and the board policy announce, at `now`.
    pub fn announcement(&self, now: u64) -> Value {
        let c = &self.0.cfg;
        let epoch = self.epoch_at(now);
        json!({
            "epoch": epoch,
            "pubkey": self.epoch_pubkey(epoch),
            "price_msat": c.price_msat,
            "epoch_secs": c.epoch_secs,
            "valid_until": (epoch + c.epochs_valid) * c.epoch_secs,
            "per_event": c.per_event,
            "kinds": c.kinds,
            "request_kinds": { "quote_request": QUOTE_REQUEST, "quote": QUOTE, "mint_request": MINT_REQUEST, "mint": MINT },
            "backend": self.0.backend.name(),
        })
    }

    async fn answer(
        ctx: &ServiceContext,
        to: PublicKey,
        request: &Event,
        kind: u16,
        content: Value,
    ) {
        let result = async {
            let keys = ctx.keys()?;
            let text = nip44::encrypt(
                keys.secret_key(),
                &to,
                content.to_string(),
                nip44::Version::V2,
            )
            .map_err(|e| Error::Invalid(e.to_string()))?;
            let builder = EventBuilder::new(Kind::from(kind), text)
                .tags([Tag::public_key(to), Tag::event(request.id)]);
            ctx.publish(builder).await
        }
        .await;
        if let Err(e) = result {
            warn!(error = %e, "could not answer a credentials request");
        }
    }

    async fn on_quote_request(&self, ctx: &ServiceContext, event: &Event) {
        let count = serde_json::from_str::<Value>(&event.content)
            .ok()
            .and_then(|v| v["count"].as_u64())
            .unwrap_or(0) as usize;
        let c = &self.0.cfg;
        if count == 0 || count > c.max_per_quote {
            let err = format!("invalid: count must be 1 to {}", c.max_per_quote);
            return Self::answer(ctx, event.pubkey, event, QUOTE, json!({ "error": err })).await;
        }
        let amount = c.price_msat.saturating_mul(count as u64);
        let invoice = match self
            .0
            .backend
            .create_invoice(amount, "civkit credentials", c.invoice_expiry_secs)
            .await
        {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "invoice creation failed");
                let err = "error: the board could not create an invoice";
                return Self::answer(ctx, event.pubkey, event, QUOTE, json!({ "error": err }))
                    .await;
            }
        };
        let quote = event.id.to_hex();
        let expires_at = ctx.now().as_secs() + c.invoice_expiry_secs;
        let record = json!({ "requester": event.pubkey.to_hex(), "count": count, "payment_hash": invoice.payment_hash, "expires_at": expires_at });
        if let Err(e) = ctx
            .kv_put(
                format!("quote:{quote}").as_bytes(),
                record.to_string().as_bytes(),
            )
            .await
        {
            warn!(error = %e, "could not store a quote");
            return;
        }
        let answer = json!({ "quote": quote, "invoice": invoice.bolt11, "amount_msat": amount, "count": count, "expires_at": expires_at });
        Self::answer(ctx, event.pubkey, event, QUOTE, answer).await;
    }

    async fn mint(
        &self,
        ctx: &ServiceContext,
        event: &Event,
    ) -> std::result::Result<Value, Rejection> {
        let req: Value = serde_json::from_str(&event.content)
            .map_err(|_| Rejection::invalid("content is not JSON"))?;
        let quote = req["quote"]
            .as_str()
            .ok_or_else(|| Rejection::invalid("no quote"))?;
        let record: Value = ctx
            .kv_get(format!("quote:{quote}").as_bytes())
            .await
            .map_err(|_| Rejection::error("could not read quotes"))?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Rejection::invalid("unknown quote"))?;
        if record["requester"].as_str() != Some(event.pubkey.to_hex().as_str()) {
            return Err(Rejection::restricted("this quote belongs to another key"));
        }
        let blinded: Vec<cashu::nuts::PublicKey> = req["blinded"]
            .as_array()
            .ok_or_else(|| Rejection::invalid("no blinded messages"))?
            .iter()
            .map(|b| {
                b.as_str()
                    .and_then(|s| cashu::nuts::PublicKey::from_hex(s).ok())
            })
            .collect::<Option<_>>()
            .ok_or_else(|| Rejection::invalid("a blinded message is not a curve point"))?;
        if Some(blinded.len() as u64) != record["count"].as_u64() {
            return Err(Rejection::invalid(
                "the number of blinded messages does not match the quote",
            ));
        }
        let hash = record["payment_hash"].as_str().unwrap_or_default();
        match self.0.backend.is_paid(hash).await {
            Ok(true) => {}
            Ok(false) => return Err(Rejection::payment_required("the invoice is not paid yet")),
            Err(e) => {
                warn!(error = %e, "payment lookup failed");
                return Err(Rejection::error("could not check the payment"));
            }
        }
        let fresh = ctx
            .kv_insert_new(format!("issued:{quote}").as_bytes(), &[1])
            .await
            .map_err(|_| Rejection::error("could not record the issuance"))?;
        if !fresh {
            return Err(Rejection::blocked(
                "credentials for this quote were already issued",
            ));
        }
        let epoch = self.epoch_at(ctx.now().as_secs());
        let key = scheme::epoch_key(&self.0.master, epoch);
        let signatures: Vec<Value> = blinded
            .iter()
            .map(|b| scheme::issue(&key, b).map(|(c, e, s)| json!({ "C_": c, "e": e, "s": s })))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Rejection::error("signing failed"))?;
        Ok(
            json!({ "quote": quote, "epoch": epoch, "pubkey": key.public_key().to_hex(), "signatures": signatures }),
        )
    }

    async fn redeem(
        &self,
        ctx: &ServiceContext,
        event: &Event,
    ) -> std::result::Result<(), Rejection> {
        let c = &self.0.cfg;
        let tags: Vec<&[String]> = event
            .tags
            .iter()
            .map(|t| t.as_slice())
            .filter(|s| s.first().map(String::as_str) == Some("credential"))
            .collect();
        if tags.len() < c.per_event {
            return Err(Rejection::payment_required(format!(
                "kind {} needs {} credential(s); buy them with kind {QUOTE_REQUEST} (NIP-11 civkit_credentials)",
                event.kind.as_u16(),
                c.per_event
            )));
        }
        let current = self.epoch_at(ctx.now().as_secs());
        let binding = scheme::binding_message(event);
        let mut keys = Vec::new();
        for t in tags {
            let p = scheme::parse_tag(t).map_err(refusal)?;
            if p.epoch > current || p.epoch + c.epochs_valid <= current {
                return Err(refusal(Refusal::Expired(p.epoch)));
            }
            scheme::verify(&scheme::epoch_key(&self.0.master, p.epoch), &p, &binding)
                .map_err(refusal)?;
            let k = p.spend_key.to_bytes().to_vec();
            if keys.contains(&k) {
                return Err(Rejection::invalid("the same credential is presented twice"));
            }
            keys.push(k);
        }
        // Spend atomically: each insert wins once; undo ours if one was spent.
        let mut done: Vec<Vec<u8>> = Vec::new();
        for k in &keys {
            let key = [b"spent:".as_slice(), k].concat();
            match ctx.kv_insert_new(&key, &event.id.to_bytes()).await {
                Ok(true) => done.push(key),
                Ok(false) => {
                    for d in &done {
                        let _ = ctx.kv_delete(d).await;
                    }
                    return Err(Rejection::blocked("credential already spent"));
                }
                Err(e) => {
                    warn!(error = %e, "spent-set write failed");
                    for d in &done {
                        let _ = ctx.kv_delete(d).await;
                    }
                    return Err(Rejection::error("could not record the spent credential"));
                }
            }
        }
        Ok(())
    }
}

fn refusal(r: Refusal) -> Rejection {
    match r {
        Refusal::Malformed(m) => Rejection::invalid(format!("malformed credential: {m}")),
        Refusal::Forged => {
            Rejection::invalid("credential does not verify (forged, or for another board)")
        }
        Refusal::WrongBinding => Rejection::invalid("credential is bound to another event"),
        Refusal::Expired(e) => {
            Rejection::payment_required(format!("credential of epoch {e} has expired"))
        }
    }
}

fn addressed_to_board(ctx: &ServiceContext, event: &Event) -> bool {
    ctx.keys()
        .map(|k| event.tags.public_keys().any(|p| *p == k.public_key()))
        .unwrap_or(false)
}

#[async_trait]
impl Service for Credentials {
    fn nip11_extra(&self, now: nostr::Timestamp) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert(
            "civkit_credentials".into(),
            self.announcement(now.as_secs()),
        );
        m
    }

    async fn admit_event(
        &self,
        ctx: &ServiceContext,
        _origin: &Origin,
        event: &Event,
    ) -> Admission {
        if !self.0.cfg.kinds.contains(&event.kind.as_u16()) {
            return Admission::Accept;
        }
        match self.redeem(ctx, event).await {
            Ok(()) => Admission::Accept,
            Err(r) => Admission::Reject(r),
        }
    }

    async fn on_stored(&self, ctx: &ServiceContext, _origin: &Origin, event: &Event) {
        let kind = event.kind.as_u16();
        if (kind != QUOTE_REQUEST && kind != MINT_REQUEST) || !addressed_to_board(ctx, event) {
            return;
        }
        // Payment backends are slow; answer from a task.
        let (this, ctx, event) = (self.clone(), ctx.clone(), event.clone());
        tokio::spawn(async move {
            if kind == QUOTE_REQUEST {
                this.on_quote_request(&ctx, &event).await;
            } else {
                let answer = match this.mint(&ctx, &event).await {
                    Ok(v) => v,
                    Err(e) => json!({ "error": e.to_string() }),
                };
                Self::answer(&ctx, event.pubkey, &event, MINT, answer).await;
            }
        });
    }
}
