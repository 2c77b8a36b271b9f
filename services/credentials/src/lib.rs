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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use civkit_framework::metrics::PromCounter;
use civkit_framework::{
    Admission, BuildContext, Error, Origin, Registry, Rejection, ScopedMetrics, Service,
    ServiceContext, Shutdown,
};
use nostr::nips::nip44;
use nostr::{Event, EventBuilder, Kind, PublicKey, Tag};
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use civkit_rank::lookup::TierLookup;
use civkit_rank::tier::stake_of;
use payment::{PaymentBackend, PaymentConfig};
use scheme::Refusal;

/// A stake key asks for its credentials of the epoch, paid by stake:
/// `{"blinded": [...], "nonce": hex}`; answered with [`MINT`].
pub const STAKE_MINT_REQUEST: u16 = 23385;

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
    /// Seconds an invoice stays payable; an unpaid quote is forgotten after it.
    pub invoice_expiry_secs: u64,
    /// Unpaid quotes one key may hold at once.
    pub max_open_quotes_per_author: usize,
    /// Unpaid quotes the board holds at once, from everyone.
    pub max_open_quotes: usize,
    /// Calls to the payment backend in flight at once; requests beyond are
    /// answered `rate-limited:`.
    pub max_backend_calls: usize,
    /// Master secret of the epoch keys, relative to node.data_dir (mode 0600).
    pub key_file: PathBuf,
    /// The Lightning node that sells the credentials.
    pub payment: PaymentConfig,
    /// Credentials paid by stake (Web-of-Stakes tiers).
    pub stake: StakeConfig,
}

/// `[services.<name>.stake]`: stake as the scarce asset, and prices by tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StakeConfig {
    /// The rank service's key (hex); empty: this node's key.
    pub rank_key: String,
    /// A remote rank service's websocket URL; empty: this node's store.
    pub rank_relay: String,
    /// Seconds a remote answer is reused.
    pub cache_secs: u64,
    /// Credentials a stake key of tier 0, 1, 2, ... receives per epoch
    /// without payment (kind 23385); tiers past the list get its last
    /// entry. Empty: none.
    pub per_epoch_by_tier: Vec<usize>,
    /// Credentials an event must spend by its `stake` tag's tier (an event
    /// without one is tier 0); tiers past the list get its last entry.
    /// Empty: `per_event` for every event.
    pub per_event_by_tier: Vec<usize>,
}

impl StakeConfig {
    /// Whether either rule needs tiers.
    fn ranks(&self) -> bool {
        !self.per_epoch_by_tier.is_empty() || !self.per_event_by_tier.is_empty()
    }
}

/// The entry of a per-tier list for `tier` (the last entry past its end).
fn by_tier(list: &[usize], tier: u8) -> Option<usize> {
    list.get(usize::from(tier)).or(list.last()).copied()
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
            max_open_quotes_per_author: 5,
            max_open_quotes: 10_000,
            max_backend_calls: 8,
            key_file: PathBuf::from("credentials.key"),
            payment: PaymentConfig::default(),
            stake: StakeConfig {
                cache_secs: 30,
                ..StakeConfig::default()
            },
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
# Seconds an invoice stays payable; an unpaid quote is forgotten after it.
invoice_expiry_secs = 600
# Unpaid quotes one key may hold at once.
max_open_quotes_per_author = 5
# Unpaid quotes the board holds at once, from everyone.
max_open_quotes = 10000
# Calls to the payment backend in flight at once; requests beyond are answered rate-limited.
max_backend_calls = 8
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
# The node's own TLS certificate (LND's tls.cert, clnrest's certificate), relative
# to node.data_dir: trusted alone for this backend; any other is refused.
# Empty: the certificate must chain to a public (web-PKI) root.
tls_cert_file = ""

# Credentials paid by stake (Web-of-Stakes tiers from a rank service).
[{table}.stake]
# The rank service's key (hex); empty: this node's key.
rank_key = ""
# A remote rank service's websocket URL; empty: this node's store.
rank_relay = ""
# Seconds a remote answer is reused.
cache_secs = 30
# Credentials per epoch, without payment, for tiers 0, 1, 2, ... (empty: none).
per_epoch_by_tier = []
# Credentials each event spends by its stake tier (empty: per_event for all).
per_event_by_tier = []
"#;

/// Register the `credentials` service.
pub fn register(registry: &mut Registry) {
    registry.register_service(
        "credentials",
        "staking credentials: blind anti-spam tokens bought over Lightning, spent per order",
        EXAMPLE,
        |mut cfg: CredentialsConfig, ctx: &BuildContext| {
            let key = format!("services.{}", ctx.instance);
            if cfg.stake.rank_key.is_empty() {
                cfg.stake.rank_key = ctx.keys.public_key().to_hex();
            }
            if PublicKey::from_hex(&cfg.stake.rank_key).is_err() {
                return Err(Error::config(format!("{key}.stake.rank_key"), "is not a hex public key"));
            }
            if [
                cfg.epoch_secs,
                cfg.epochs_valid,
                cfg.per_event as u64,
                cfg.max_open_quotes_per_author as u64,
                cfg.max_open_quotes as u64,
                cfg.max_backend_calls as u64,
            ]
            .contains(&0)
            {
                return Err(Error::config(
                    key,
                    "epoch_secs, epochs_valid, per_event, max_open_quotes_per_author, max_open_quotes and max_backend_calls must be at least 1",
                ));
            }
            let path = ctx.data_dir.join(&cfg.key_file);
            let (master, _) = civkit_framework::keyfile::load_or_create(&path)?;
            // Every node of the board issues and checks with the same epoch keys.
            ctx.board_secret("services", "key_file", &path, &master);
            let backend =
                payment::from_config(&cfg.payment, &ctx.data_dir, &format!("{key}.payment"))?;
            let metrics = CredentialMetrics::new(&ctx.metrics());
            Ok(Arc::new(Credentials::measured(cfg, master, backend, metrics)) as Arc<dyn Service>)
        },
    );
}

/// The service's counters (`civkit_credentials_*_total`).
#[derive(Debug, Clone, Default)]
pub struct CredentialMetrics {
    quoted: PromCounter,
    issued: PromCounter,
    redeemed: PromCounter,
    double_spends: PromCounter,
}

impl CredentialMetrics {
    /// Registered under the service's instance.
    pub fn new(m: &ScopedMetrics) -> Self {
        CredentialMetrics {
            quoted: m.counter(
                "credentials_quoted",
                "Credentials quoted (invoices created for them)",
            ),
            issued: m.counter(
                "credentials_issued",
                "Credentials issued (blind signatures given, paid or staked)",
            ),
            redeemed: m.counter("credentials_redeemed", "Credentials spent by stored events"),
            double_spends: m.counter(
                "credentials_double_spends_refused",
                "Events refused because a credential they carry was already spent",
            ),
        }
    }
}

struct Inner {
    metrics: CredentialMetrics,
    cfg: CredentialsConfig,
    master: [u8; 32],
    backend: Arc<dyn PaymentBackend>,
    /// Bounds the backend calls in flight (and the tasks that make them).
    backend_calls: Arc<Semaphore>,
    /// Unpaid quotes per requester: a cache of the `quote:` records, rebuilt
    /// from them at start and at every sweep.
    open_quotes: Mutex<HashMap<PublicKey, usize>>,
    /// Where stake tiers come from, when a stake rule is configured.
    tiers: Option<TierLookup>,
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
        Self::measured(cfg, master, backend, CredentialMetrics::default())
    }

    /// The same, counting in `metrics`.
    pub fn measured(
        cfg: CredentialsConfig,
        master: [u8; 32],
        backend: Arc<dyn PaymentBackend>,
        metrics: CredentialMetrics,
    ) -> Self {
        info!(backend = backend.name(), "credentials service ready");
        let tiers = PublicKey::from_hex(&cfg.stake.rank_key)
            .ok()
            .filter(|_| cfg.stake.ranks())
            .map(|k| {
                TierLookup::new(
                    k,
                    &cfg.stake.rank_relay,
                    cfg.stake.cache_secs,
                    std::time::Duration::from_secs(3),
                )
            });
        Credentials(Arc::new(Inner {
            metrics,
            backend_calls: Arc::new(Semaphore::new(cfg.max_backend_calls)),
            open_quotes: Mutex::default(),
            tiers,
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
            "request_kinds": { "quote_request": QUOTE_REQUEST, "quote": QUOTE, "mint_request": MINT_REQUEST, "mint": MINT, "stake_mint_request": STAKE_MINT_REQUEST },
            "stake": {
                "rank_key": c.stake.rank_key,
                "per_epoch_by_tier": c.stake.per_epoch_by_tier,
                "per_event_by_tier": c.stake.per_event_by_tier,
            },
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

    fn open_quotes(&self) -> MutexGuard<'_, HashMap<PublicKey, usize>> {
        self.0.open_quotes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `author` may ask for one more quote now.
    fn quote_allowed(&self, author: &PublicKey) -> Result<(), Rejection> {
        let c = &self.0.cfg;
        let open = self.open_quotes();
        if open.get(author).copied().unwrap_or(0) >= c.max_open_quotes_per_author {
            return Err(Rejection::rate_limited(format!(
                "at most {} unpaid quotes per key; pay one or wait {} s for it to expire",
                c.max_open_quotes_per_author, c.invoice_expiry_secs
            )));
        }
        if open.values().sum::<usize>() >= c.max_open_quotes {
            return Err(Rejection::rate_limited(
                "the board holds too many unpaid quotes; retry later",
            ));
        }
        Ok(())
    }

    async fn on_quote_request(&self, ctx: &ServiceContext, event: &Event) {
        match self.quote(ctx, event).await {
            Ok(answer) => Self::answer(ctx, event.pubkey, event, QUOTE, answer).await,
            Err(r) => {
                let answer = json!({ "error": r.to_string() });
                Self::answer(ctx, event.pubkey, event, QUOTE, answer).await
            }
        }
    }

    async fn quote(&self, ctx: &ServiceContext, event: &Event) -> Result<Value, Rejection> {
        let count = serde_json::from_str::<Value>(&event.content)
            .ok()
            .and_then(|v| v["count"].as_u64())
            .unwrap_or(0) as usize;
        let c = &self.0.cfg;
        if count == 0 || count > c.max_per_quote {
            return Err(Rejection::invalid(format!(
                "count must be 1 to {}",
                c.max_per_quote
            )));
        }
        self.quote_allowed(&event.pubkey)?;
        let amount = c.price_msat.saturating_mul(count as u64);
        let invoice = self
            .0
            .backend
            .create_invoice(amount, "civkit credentials", c.invoice_expiry_secs)
            .await
            .map_err(|e| {
                warn!(error = %e, "invoice creation failed");
                Rejection::error("the board could not create an invoice")
            })?;
        let quote = event.id.to_hex();
        let expires_at = ctx.now().as_secs() + c.invoice_expiry_secs;
        let record = json!({ "requester": event.pubkey.to_hex(), "count": count, "payment_hash": invoice.payment_hash, "expires_at": expires_at });
        ctx.kv_put(
            format!("quote:{quote}").as_bytes(),
            record.to_string().as_bytes(),
        )
        .await
        .map_err(|e| {
            warn!(error = %e, "could not store a quote");
            Rejection::error("could not store the quote")
        })?;
        *self.open_quotes().entry(event.pubkey).or_default() += 1;
        self.0.metrics.quoted.inc_by(count as u64);
        Ok(
            json!({ "quote": quote, "invoice": invoice.bolt11, "amount_msat": amount, "count": count, "expires_at": expires_at }),
        )
    }

    /// Answer a mint request. Issuance is idempotent: the signatures are
    /// stored with the blinded messages they answer, and the same request
    /// gets the same answer again (a maker who missed it, such as an onion
    /// sender whose session closed, retries).
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
        let blinded = blinded_messages(&req)?;
        if Some(blinded.len() as u64) != record["count"].as_u64() {
            return Err(Rejection::invalid(
                "the number of blinded messages does not match the quote",
            ));
        }
        let blinded_hex: Vec<String> = blinded.iter().map(|b| b.to_hex()).collect();
        let issued_key = format!("issued:{quote}");
        if let Some(answer) = Self::issued(ctx, &issued_key, &blinded_hex).await? {
            return Ok(answer);
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
        let epoch = self.epoch_at(ctx.now().as_secs());
        let (answer, fresh) = self
            .sign_blinded(ctx, &issued_key, epoch, &blinded, json!({ "quote": quote }))
            .await?;
        if fresh {
            self.forget_open_quote(&event.pubkey);
        }
        Ok(answer)
    }

    /// Sign `blinded` with the epoch's key and record the answer under
    /// `issued_key` (once: a concurrent request that recorded first is
    /// answered as it was). The answer is `head` plus the signatures;
    /// `true` when this call recorded it.
    async fn sign_blinded(
        &self,
        ctx: &ServiceContext,
        issued_key: &str,
        epoch: u64,
        blinded: &[cashu::nuts::PublicKey],
        mut head: Value,
    ) -> Result<(Value, bool), Rejection> {
        let key = scheme::epoch_key(&self.0.master, epoch);
        let signatures: Vec<Value> = blinded
            .iter()
            .map(|b| scheme::issue(&key, b).map(|(c, e, s)| json!({ "C_": c, "e": e, "s": s })))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Rejection::error("signing failed"))?;
        head["epoch"] = json!(epoch);
        head["pubkey"] = json!(key.public_key().to_hex());
        head["signatures"] = json!(signatures);
        let blinded_hex: Vec<String> = blinded.iter().map(|b| b.to_hex()).collect();
        let stored = json!({ "blinded": blinded_hex, "answer": head });
        let fresh = ctx
            .kv_insert_new(issued_key.as_bytes(), stored.to_string().as_bytes())
            .await
            .map_err(|_| Rejection::error("could not record the issuance"))?;
        if fresh {
            self.0.metrics.issued.inc_by(blinded.len() as u64);
            return Ok((head, true));
        }
        let answer = Self::issued(ctx, issued_key, &blinded_hex)
            .await?
            .ok_or_else(|| Rejection::error("could not read the issuance"))?;
        Ok((answer, false))
    }

    /// Credentials paid by stake: the request's author is a stake key; its
    /// tier (the rank service's attestation) earns `per_epoch_by_tier`
    /// credentials per epoch. Each output behind the stake key claims once
    /// per epoch, whichever stake key it backs.
    async fn stake_mint(&self, ctx: &ServiceContext, event: &Event) -> Result<Value, Rejection> {
        let tiers = self
            .0
            .tiers
            .as_ref()
            .filter(|_| !self.0.cfg.stake.per_epoch_by_tier.is_empty())
            .ok_or_else(|| {
                Rejection::unsupported(
                    "this board issues credentials for payments only (kind 23381)",
                )
            })?;
        let req: Value = serde_json::from_str(&event.content)
            .map_err(|_| Rejection::invalid("content is not JSON"))?;
        let blinded = blinded_messages(&req)?;
        let stake = bitcoin::key::XOnlyPublicKey::from_slice(&event.pubkey.to_bytes())
            .map_err(|_| Rejection::invalid("the author is not a stake key"))?;
        let attestation = tiers.attestation(ctx, &stake).await?.ok_or_else(|| {
            Rejection::payment_required(
                "no tier attestation for this stake key: prove a stake to the rank service first",
            )
        })?;
        let allowance = by_tier(&self.0.cfg.stake.per_epoch_by_tier, attestation.tier).unwrap_or(0);
        if allowance == 0 {
            return Err(Rejection::payment_required(format!(
                "tier {} earns no credentials; buy them with kind {QUOTE_REQUEST}",
                attestation.tier
            )));
        }
        if blinded.is_empty() || blinded.len() > allowance {
            return Err(Rejection::restricted(format!(
                "tier {} earns 1 to {allowance} credential(s) per epoch",
                attestation.tier
            )));
        }
        if attestation.outputs.is_empty() {
            return Err(Rejection::invalid("the attestation names no outputs"));
        }
        let epoch = self.epoch_at(ctx.now().as_secs());
        let stake_hex = stake.to_string();
        let issued_key = format!("stake-issued:{epoch}:{stake_hex}");
        let blinded_hex: Vec<String> = blinded.iter().map(|b| b.to_hex()).collect();
        if let Some(answer) = Self::issued(ctx, &issued_key, &blinded_hex).await? {
            return Ok(answer);
        }
        // Claim every output for this stake key and epoch; undo on a clash.
        let mut claimed: Vec<Vec<u8>> = Vec::new();
        for id in &attestation.outputs {
            let claim = format!("stake-claim:{epoch}:{id}");
            let fresh = ctx
                .kv_insert_new(claim.as_bytes(), stake_hex.as_bytes())
                .await
                .map_err(|_| Rejection::error("could not record the claim"))?;
            let ours = fresh
                || ctx.kv_get(claim.as_bytes()).await.ok().flatten().as_deref()
                    == Some(stake_hex.as_bytes());
            if !ours {
                for c in claimed {
                    let _ = ctx.kv_delete(&c).await;
                }
                return Err(Rejection::blocked(
                    "an output behind this stake key already claimed credentials this epoch",
                ));
            }
            if fresh {
                claimed.push(claim.into_bytes());
            }
        }
        let head = json!({ "stake": stake_hex });
        Ok(self
            .sign_blinded(ctx, &issued_key, epoch, &blinded, head)
            .await?
            .0)
    }

    /// Credentials `event` must spend: `per_event`, or by its stake tier.
    async fn price(&self, ctx: &ServiceContext, event: &Event) -> Result<usize, Rejection> {
        let list = &self.0.cfg.stake.per_event_by_tier;
        let Some(tiers) = self.0.tiers.as_ref().filter(|_| !list.is_empty()) else {
            return Ok(self.0.cfg.per_event);
        };
        let tier = match stake_of(event).map_err(Rejection::invalid)? {
            Some(key) => tiers.attestation(ctx, &key).await?.map_or(0, |a| a.tier),
            None => 0,
        };
        Ok(by_tier(list, tier).unwrap_or(self.0.cfg.per_event))
    }

    /// The stored answer of an issued quote, when `blinded` is what it
    /// answered; a refusal when the quote was issued for other messages.
    async fn issued(
        ctx: &ServiceContext,
        key: &str,
        blinded: &[String],
    ) -> Result<Option<Value>, Rejection> {
        let Some(bytes) = ctx
            .kv_get(key.as_bytes())
            .await
            .map_err(|_| Rejection::error("could not read issuances"))?
        else {
            return Ok(None);
        };
        let stored: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if stored["blinded"] == json!(blinded) {
            return Ok(Some(stored["answer"].clone()));
        }
        Err(Rejection::blocked(
            "credentials for this quote were already issued for other blinded messages",
        ))
    }

    fn forget_open_quote(&self, author: &PublicKey) {
        let mut open = self.open_quotes();
        if let Some(n) = open.get_mut(author) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(author);
            }
        }
    }

    /// Forget unpaid quotes whose invoice has expired, and recount the open
    /// ones. Quotes that were paid stay (the maker may still mint).
    async fn sweep(&self, ctx: &ServiceContext) -> civkit_framework::Result<()> {
        let now = ctx.now().as_secs();
        let issued: std::collections::HashSet<Vec<u8>> = ctx
            .kv_scan(b"issued:")
            .await?
            .into_iter()
            .map(|(k, _)| k["issued:".len()..].to_vec())
            .collect();
        let mut open: HashMap<PublicKey, usize> = HashMap::new();
        for (k, v) in ctx.kv_scan(b"quote:").await? {
            if issued.contains(&k["quote:".len()..]) {
                continue;
            }
            let record: Value = serde_json::from_slice(&v).unwrap_or(Value::Null);
            if record["paid"].as_bool() == Some(true) {
                continue;
            }
            let expired = record["expires_at"].as_u64().is_none_or(|t| t <= now);
            if expired {
                let hash = record["payment_hash"].as_str().unwrap_or_default();
                let paid = {
                    let _permit = self.0.backend_calls.acquire().await;
                    self.0.backend.is_paid(hash).await
                };
                match paid {
                    Ok(true) => {
                        let mut record = record;
                        record["paid"] = json!(true);
                        ctx.kv_put(&k, record.to_string().as_bytes()).await?;
                    }
                    Ok(false) => {
                        ctx.kv_delete(&k).await?;
                    }
                    // Ask again at the next sweep.
                    Err(e) => warn!(error = %e, "payment lookup failed during the quote sweep"),
                }
                continue;
            }
            if let Some(pk) = record["requester"]
                .as_str()
                .and_then(|h| PublicKey::from_hex(h).ok())
            {
                *open.entry(pk).or_default() += 1;
            }
        }
        *self.open_quotes() = open;
        Ok(())
    }

    /// The keys a credential-carrying event claims: the x-only spend keys,
    /// which is what the board signed (`02‖x` and `03‖x` are one credential).
    fn redeem(
        &self,
        ctx: &ServiceContext,
        event: &Event,
        needed: usize,
    ) -> std::result::Result<Vec<SpentKey>, Rejection> {
        let c = &self.0.cfg;
        let tags: Vec<&[String]> = event
            .tags
            .iter()
            .map(|t| t.as_slice())
            .filter(|s| s.first().map(String::as_str) == Some("credential"))
            .collect();
        if tags.len() < needed {
            return Err(Rejection::payment_required(format!(
                "kind {} needs {needed} credential(s); buy them with kind {QUOTE_REQUEST} (NIP-11 civkit_credentials)",
                event.kind.as_u16(),
            )));
        }
        let current = self.epoch_at(ctx.now().as_secs());
        let binding = scheme::binding_message(event);
        let mut claims: Vec<SpentKey> = Vec::new();
        for t in tags {
            let p = scheme::parse_tag(t).map_err(refusal)?;
            if p.epoch > current || p.epoch + c.epochs_valid <= current {
                return Err(refusal(Refusal::Expired(p.epoch)));
            }
            scheme::verify(&scheme::epoch_key(&self.0.master, p.epoch), &p, &binding)
                .map_err(refusal)?;
            let key = [b"spent:".as_slice(), &scheme::spent_id(&p.spend_key)].concat();
            if claims.iter().any(|(k, _)| *k == key) {
                return Err(Rejection::invalid("the same credential is presented twice"));
            }
            claims.push((key, event.id.to_bytes().to_vec()));
        }
        Ok(claims)
    }
}

/// The `blinded` points of a mint request.
fn blinded_messages(req: &Value) -> Result<Vec<cashu::nuts::PublicKey>, Rejection> {
    req["blinded"]
        .as_array()
        .ok_or_else(|| Rejection::invalid("no blinded messages"))?
        .iter()
        .map(|b| {
            b.as_str()
                .and_then(|s| cashu::nuts::PublicKey::from_hex(s).ok())
        })
        .collect::<Option<_>>()
        .ok_or_else(|| Rejection::invalid("a blinded message is not a curve point"))
}

/// A spent-set entry: `spent:‖x` → the id of the event that spent it.
type SpentKey = (Vec<u8>, Vec<u8>);

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
        let kind = event.kind.as_u16();
        if kind == QUOTE_REQUEST && addressed_to_board(ctx, event) {
            return match self.quote_allowed(&event.pubkey) {
                Ok(()) => Admission::Accept,
                Err(r) => Admission::Reject(r),
            };
        }
        if !self.0.cfg.kinds.contains(&kind) {
            return Admission::Accept;
        }
        // The spend is taken with the event's durable write, not here: an
        // event that a later service or the store refuses spends nothing.
        let needed = match self.price(ctx, event).await {
            Ok(n) => n,
            Err(r) => return Admission::Reject(r),
        };
        match self.redeem(ctx, event, needed) {
            Ok(keys) => Admission::AcceptClaiming {
                keys,
                taken: Rejection::blocked("credential already spent"),
            },
            Err(r) => Admission::Reject(r),
        }
    }

    fn on_claim_taken(&self, _ctx: &ServiceContext, _event: &Event) {
        self.0.metrics.double_spends.inc();
    }

    async fn on_stored(&self, ctx: &ServiceContext, _origin: &Origin, event: &Event) {
        let kind = event.kind.as_u16();
        if self.0.cfg.kinds.contains(&kind) {
            let spent = event
                .tags
                .iter()
                .filter(|t| t.as_slice().first().map(String::as_str) == Some("credential"))
                .count();
            self.0.metrics.redeemed.inc_by(spent as u64);
        }
        if ![QUOTE_REQUEST, MINT_REQUEST, STAKE_MINT_REQUEST].contains(&kind)
            || !addressed_to_board(ctx, event)
        {
            return;
        }
        let answer_kind = if kind == QUOTE_REQUEST { QUOTE } else { MINT };
        // Payment backends are slow: answer from a task, at most
        // `max_backend_calls` at once.
        let Ok(permit) = self.0.backend_calls.clone().try_acquire_owned() else {
            let err = Rejection::rate_limited("the board is busy; retry in a few seconds");
            let answer = json!({ "error": err.to_string() });
            return Self::answer(ctx, event.pubkey, event, answer_kind, answer).await;
        };
        let (this, ctx, event) = (self.clone(), ctx.clone(), event.clone());
        tokio::spawn(async move {
            let _permit: OwnedSemaphorePermit = permit;
            if kind == QUOTE_REQUEST {
                this.on_quote_request(&ctx, &event).await;
            } else {
                let minted = if kind == MINT_REQUEST {
                    this.mint(&ctx, &event).await
                } else {
                    this.stake_mint(&ctx, &event).await
                };
                let answer = match minted {
                    Ok(v) => v,
                    Err(e) => json!({ "error": e.to_string() }),
                };
                Self::answer(&ctx, event.pubkey, &event, MINT, answer).await;
            }
        });
    }

    async fn run(
        &self,
        ctx: ServiceContext,
        mut shutdown: Shutdown,
    ) -> civkit_framework::Result<()> {
        let every = Duration::from_secs(self.0.cfg.invoice_expiry_secs.clamp(1, 60));
        loop {
            // The quotes live in the store: one node sweeps them for all.
            if ctx.is_leader() {
                if let Err(e) = self.sweep(&ctx).await {
                    warn!(error = %e, "quote sweep failed");
                }
            }
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
