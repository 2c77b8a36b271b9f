//! The rank service (`type = "rank"`): it takes stake certificates as
//! Nostr events, checks them against the chain, keeps them in its
//! namespace, scores each stake key, and publishes a signed tier
//! attestation per stake key. At each new block it prunes the certificates
//! whose outputs were spent or whose statements expired, and republishes.
//!
//! Its key-value namespace:
//! - `cert/<stake key>/<certificate id>`: a counted certificate (JSON);
//! - `owner/<outpoint>`: which certificate counts that output (an output
//!   counts for one stake key at a time: the newest certificate wins);
//! - `orders/<stake key>/<order d>`: the last status of each order
//!   published under the stake key on this board;
//! - `attested/<stake key>`: what was last published for it;
//! - `dirty/<stake key>`: a stake key that lost an output to a newer
//!   certificate, re-attested right after it.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bitcoin::key::XOnlyPublicKey;
use bitcoin::{Amount, Network, OutPoint};
use civkit_chain::{ChainSource, SourceConfig};
use civkit_framework::kinds::tag_value;
use civkit_framework::metrics::{PromCounter, PromGauge};
use civkit_framework::{
    Admission, BuildContext, Error, Origin, Rejection, Result, ScopedMetrics, Service,
    ServiceContext, Shutdown,
};
use nostr::nips::nip44;
use nostr::{Event, EventBuilder, Kind, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::certificate::{
    ChannelVerifier, Refusal, Stake, StakeVerifier, UtxoVerifier, VerifyContext,
};
use crate::statement::StakeStatement;
use crate::tier::{
    output_id, stake_of, Attestation, Scoring, Weighed, ATTESTATION_KIND, CERTIFICATE_KIND,
};
use crate::watch::SpendWatch;

/// The NIP-69 order kind, whose history under a stake key counts.
const ORDER_KIND: u16 = 38383;
/// Largest certificate event content.
const MAX_CONTENT: usize = 32 * 1024;

/// `[services.<name>]` of `type = "rank"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankConfig {
    /// `bitcoin`, `testnet`, `testnet4`, `signet` or `regtest`.
    pub network: String,
    /// Where certificates are checked.
    pub chain: SourceConfig,
    /// Score thresholds of tiers 1, 2, ... (ascending).
    pub tiers: Vec<u64>,
    /// Confirmations after which an output counts fully.
    pub maturity_blocks: u64,
    /// Seconds an attestation holds (its NIP-40 expiration); republished
    /// when half of it has passed.
    pub attestation_secs: u64,
    /// Seconds between looks at the chain's tip.
    pub poll_secs: u64,
    /// Certificates counted per stake key.
    pub max_certificates_per_key: usize,
    /// Certificates checked at once; more are refused `rate-limited:`.
    pub max_concurrent_checks: usize,
}

impl Default for RankConfig {
    fn default() -> Self {
        RankConfig {
            network: "bitcoin".into(),
            chain: SourceConfig::default(),
            tiers: vec![100_000, 1_000_000, 10_000_000],
            maturity_blocks: 144,
            attestation_secs: 3_600,
            poll_secs: 30,
            max_certificates_per_key: 16,
            max_concurrent_checks: 8,
        }
    }
}

pub(crate) const EXAMPLE: &str = r#"# Network of the certificates: bitcoin, testnet, testnet4, signet or regtest.
network = "bitcoin"
# Score thresholds of tiers 1, 2, 3 (see docs/PROTOCOL.md for the score).
tiers = [100000, 1000000, 10000000]
# Confirmations after which an output counts fully.
maturity_blocks = 144
# Seconds an attestation holds; republished when half has passed.
attestation_secs = 3600
# Seconds between looks at the chain's tip.
poll_secs = 30
# Certificates counted per stake key.
max_certificates_per_key = 16
# Certificates checked at once.
max_concurrent_checks = 8

# Where certificates are checked: esplora or bitcoind (with -txindex).
[{table}.chain]
backend = "esplora"
url = "https://blockstream.info/api"
# bitcoind RPC user, and a file (relative to node.data_dir, mode 0600) with its password.
user = ""
password_file = ""
"#;

/// Register the `rank` service.
pub fn register(registry: &mut civkit_framework::Registry) {
    registry.register_service(
        "rank",
        "Web-of-Stakes rank service: stake certificates checked on chain, scored, and attested by tier",
        EXAMPLE,
        |cfg: RankConfig, ctx: &BuildContext| {
            let key = |k: &str| format!("services.{}.{k}", ctx.instance);
            let network = Network::from_core_arg(&cfg.network)
                .or_else(|_| Network::from_str(&cfg.network))
                .map_err(|_| Error::config(key("network"), "choose bitcoin, testnet, testnet4, signet or regtest"))?;
            if !cfg.tiers.windows(2).all(|w| w[0] < w[1]) || cfg.tiers.is_empty() {
                return Err(Error::config(key("tiers"), "ascending score thresholds, at least one"));
            }
            if cfg.max_concurrent_checks == 0 || cfg.max_certificates_per_key == 0 || cfg.attestation_secs < 60 {
                return Err(Error::config(
                    key("max_concurrent_checks"),
                    "checks and certificates per key are at least 1, attestation_secs at least 60",
                ));
            }
            let chain = cfg
                .chain
                .build(&ctx.data_dir)
                .map_err(|(field, e)| Error::config(key(&format!("chain.{field}")), e))?
                .ok_or_else(|| Error::config(key("chain.backend"), "the rank service needs a chain"))?;
            let rank = Rank::new(cfg, network, chain).with_metrics(&ctx.metrics());
            Ok(Arc::new(rank) as Arc<dyn Service>)
        },
    );
}

/// A counted certificate, as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    kind: String,
    expiry_height: u32,
    stakes: Vec<(String, u64, u64)>, // outpoint, value sats, confirmed at
}

/// What was last published for a stake key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Published {
    created_at: u64,
    tier: u8,
    score: u64,
    expires_at: u64,
}

/// The rank service.
pub struct Rank {
    cfg: RankConfig,
    network: Network,
    chain: Arc<dyn ChainSource>,
    verifiers: Vec<Box<dyn StakeVerifier>>,
    scoring: Scoring,
    checks: Semaphore,
    /// The last tip the follower saw (0: none yet).
    tip: std::sync::atomic::AtomicU64,
    held: PromGauge,
    pruned: PromCounter,
}

impl Rank {
    pub fn new(cfg: RankConfig, network: Network, chain: Arc<dyn ChainSource>) -> Self {
        Rank {
            scoring: Scoring {
                maturity_blocks: cfg.maturity_blocks,
                tiers: cfg.tiers.clone(),
            },
            checks: Semaphore::new(cfg.max_concurrent_checks),
            tip: std::sync::atomic::AtomicU64::new(0),
            held: PromGauge::default(),
            pruned: PromCounter::default(),
            verifiers: vec![Box::new(ChannelVerifier), Box::new(UtxoVerifier)],
            cfg,
            network,
            chain,
        }
    }

    /// Count certificates held and pruned in `m` (`civkit_rank_certificates*`).
    pub fn with_metrics(mut self, m: &ScopedMetrics) -> Self {
        self.held = m.gauge("rank_certificates", "Stake certificates counted now");
        self.pruned = m.counter(
            "rank_certificates_pruned",
            "Stake certificates dropped because they expired or an output was spent",
        );
        self
    }

    /// Add a certificate kind (for example a zero-knowledge ownership proof).
    pub fn with_verifier(mut self, verifier: Box<dyn StakeVerifier>) -> Self {
        self.verifiers.push(verifier);
        self
    }

    fn rank_key(ctx: &ServiceContext) -> Result<XOnlyPublicKey> {
        let keys = ctx.keys()?;
        XOnlyPublicKey::from_slice(&keys.public_key().to_bytes())
            .map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Check a certificate event and count it. The rejection says why not.
    async fn take_certificate(
        &self,
        ctx: &ServiceContext,
        event: &Event,
    ) -> std::result::Result<(), Rejection> {
        let keys = ctx.keys().map_err(|_| Rejection::error("shutting down"))?;
        if event.content.len() > MAX_CONTENT {
            return Err(Rejection::invalid("the certificate is too large"));
        }
        let text =
            nip44::decrypt(keys.secret_key(), &event.pubkey, &event.content).map_err(|_| {
                Rejection::invalid("the content is not NIP-44 encrypted to this rank service")
            })?;
        let body: Value = serde_json::from_str(&text)
            .map_err(|_| Rejection::invalid("the certificate is not a JSON object"))?;
        let statement = body["statement"]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| StakeStatement::from_bytes(&b))
            .ok_or_else(|| Rejection::invalid("`statement` is not a stake statement's hex"))?;
        if statement.stake_key.serialize() != event.pubkey.to_bytes() {
            return Err(Rejection::invalid(
                "the certificate event is signed by the statement's stake key",
            ));
        }
        let kind = body["type"].as_str().unwrap_or_default();
        let verifier = self
            .verifiers
            .iter()
            .find(|v| v.kind() == kind)
            .ok_or_else(|| Rejection::unsupported(format!("certificate type `{kind}`")))?;
        let _permit = self.checks.try_acquire().map_err(|_| {
            Rejection::rate_limited("the rank service is busy checking certificates; retry")
        })?;
        let cx = VerifyContext {
            rank_key: Self::rank_key(ctx).map_err(|_| Rejection::error("shutting down"))?,
            network: self.network,
            chain: self.chain.as_ref(),
        };
        let stakes = verifier
            .verify(&body, &statement, &cx)
            .await
            .map_err(refusal)?;
        self.record(ctx, &statement, kind, &stakes)
            .await
            .map_err(|e| match e {
                Error::Invalid(m) => Rejection::restricted(m),
                e => {
                    warn!(error = %e, "could not record a certificate");
                    Rejection::error("could not record the certificate")
                }
            })
    }

    async fn record(
        &self,
        ctx: &ServiceContext,
        statement: &StakeStatement,
        kind: &str,
        stakes: &[Stake],
    ) -> Result<()> {
        let stake = statement.stake_key.to_string();
        let id = format!(
            "{kind}:{}",
            stakes
                .first()
                .map(|s| s.outpoint.to_string())
                .unwrap_or_default()
        );
        let key = format!("cert/{stake}/{id}");
        let mine = ctx.kv_scan(format!("cert/{stake}/").as_bytes()).await?;
        let renewed = mine.iter().any(|(k, _)| k == key.as_bytes());
        if mine.len() >= self.cfg.max_certificates_per_key && !renewed {
            return Err(Error::Invalid(format!(
                "at most {} certificates per stake key",
                self.cfg.max_certificates_per_key
            )));
        }
        // An output counts once: a newer certificate takes it over.
        for s in stakes {
            let owner = format!("owner/{}", s.outpoint);
            if let Some(old) = ctx.kv_get(owner.as_bytes()).await? {
                let old = String::from_utf8_lossy(&old).into_owned();
                if old != key {
                    self.forget(ctx, &old).await?;
                    // The stake key that lost the output is re-attested
                    // with the certificate's event (`on_stored`).
                    if let Some(loser) = old.split('/').nth(1) {
                        ctx.kv_put(format!("dirty/{loser}").as_bytes(), b"").await?;
                    }
                }
            }
        }
        let record = Record {
            kind: kind.to_string(),
            expiry_height: statement.expiry_height,
            stakes: stakes
                .iter()
                .map(|s| (s.outpoint.to_string(), s.value.to_sat(), s.confirmed_at))
                .collect(),
        };
        ctx.kv_put(
            key.as_bytes(),
            &serde_json::to_vec(&record).unwrap_or_default(),
        )
        .await?;
        for s in stakes {
            ctx.kv_put(format!("owner/{}", s.outpoint).as_bytes(), key.as_bytes())
                .await?;
        }
        if !renewed {
            self.held.inc();
        }
        info!(kind, outputs = stakes.len(), "stake certificate counted");
        Ok(())
    }

    /// Drop a certificate (`cert/...` key) and its outputs' ownership.
    async fn forget(&self, ctx: &ServiceContext, cert_key: &str) -> Result<()> {
        if let Some(bytes) = ctx.kv_get(cert_key.as_bytes()).await? {
            self.held.dec();
            if let Ok(r) = serde_json::from_slice::<Record>(&bytes) {
                for (outpoint, _, _) in r.stakes {
                    let owner = format!("owner/{outpoint}");
                    if ctx.kv_get(owner.as_bytes()).await?.as_deref() == Some(cert_key.as_bytes()) {
                        ctx.kv_delete(owner.as_bytes()).await?;
                    }
                }
            }
        }
        ctx.kv_delete(cert_key.as_bytes()).await?;
        Ok(())
    }

    /// Every counted certificate: `(cert key, stake key, record)`.
    async fn certificates(&self, ctx: &ServiceContext) -> Result<Vec<(String, String, Record)>> {
        Ok(ctx
            .kv_scan(b"cert/")
            .await?
            .into_iter()
            .filter_map(|(k, v)| {
                let key = String::from_utf8(k).ok()?;
                let stake = key.split('/').nth(1)?.to_string();
                Some((key, stake, serde_json::from_slice(&v).ok()?))
            })
            .collect())
    }

    /// The attestation of one stake key at `tip`.
    async fn attest(&self, ctx: &ServiceContext, stake: &str, tip: u64) -> Result<Attestation> {
        let stake_key =
            XOnlyPublicKey::from_str(stake).map_err(|e| Error::Invalid(e.to_string()))?;
        let secret = ctx.keys()?.secret_key().to_secret_bytes();
        let mut outputs = Vec::new();
        let mut ids = Vec::new();
        for (_, v) in ctx.kv_scan(format!("cert/{stake}/").as_bytes()).await? {
            let Ok(r) = serde_json::from_slice::<Record>(&v) else {
                continue;
            };
            if u64::from(r.expiry_height) <= tip {
                continue;
            }
            outputs.extend(r.stakes.iter().map(|(_, value, at)| Weighed {
                value_sat: *value,
                confirmations: (tip + 1).saturating_sub(*at),
            }));
            ids.extend(
                r.stakes
                    .iter()
                    .filter_map(|(o, _, _)| OutPoint::from_str(o).ok())
                    .map(|o| output_id(&secret, &o)),
            );
        }
        let history = ctx.kv_scan(format!("orders/{stake}/").as_bytes()).await?;
        let settled = history
            .iter()
            .filter(|(_, s)| s.as_slice() == b"success")
            .count();
        let inputs = self
            .scoring
            .inputs(&outputs, history.len() as u64, settled as u64);
        let score = self.scoring.score(&inputs);
        Ok(Attestation {
            stake_key,
            tier: self.scoring.tier(score),
            score,
            inputs,
            height: tip,
            expires_at: ctx.now().as_secs() + self.cfg.attestation_secs,
            outputs: ids,
        })
    }

    /// Publish the stake key's attestation if it changed or half its life
    /// has passed (or `force`).
    async fn publish(
        &self,
        ctx: &ServiceContext,
        stake: &str,
        tip: u64,
        force: bool,
    ) -> Result<()> {
        let a = self.attest(ctx, stake, tip).await?;
        let mark = format!("attested/{stake}");
        let last: Option<Published> = ctx
            .kv_get(mark.as_bytes())
            .await?
            .and_then(|v| serde_json::from_slice(&v).ok());
        let now = ctx.now().as_secs();
        let fresh = last.as_ref().is_some_and(|p| {
            p.tier == a.tier
                && p.score == a.score
                && p.expires_at > now + self.cfg.attestation_secs / 2
        });
        if fresh && !force {
            return Ok(());
        }
        // Strictly after the previous version, so it replaces it.
        let created_at = last.as_ref().map_or(now, |p| now.max(p.created_at + 1));
        let builder = EventBuilder::new(Kind::from(ATTESTATION_KIND), "")
            .tags(a.tags())
            .custom_created_at(Timestamp::from_secs(created_at));
        let reply = ctx.publish(builder).await?;
        if !reply.accepted {
            return Err(Error::Service {
                instance: ctx.name().to_string(),
                message: format!("attestation refused: {}", reply.message),
            });
        }
        let published = Published {
            created_at,
            tier: a.tier,
            score: a.score,
            expires_at: a.expires_at,
        };
        if a.inputs.certificates == 0 {
            // Said once; nothing more to refresh.
            ctx.kv_delete(mark.as_bytes()).await?;
        } else {
            ctx.kv_put(
                mark.as_bytes(),
                &serde_json::to_vec(&published).unwrap_or_default(),
            )
            .await?;
        }
        info!(tier = a.tier, score = a.score, "tier attested");
        Ok(())
    }

    /// At a new tip: prune spent and expired certificates, then republish
    /// what changed (and what is due).
    async fn on_tip(&self, ctx: &ServiceContext, tip: u64) -> Result<()> {
        let certs = self.certificates(ctx).await?;
        self.held
            .set(i64::try_from(certs.len()).unwrap_or(i64::MAX));
        let mut watch = SpendWatch::new();
        let mut affected = BTreeSet::new();
        for (key, stake, r) in &certs {
            affected.insert(stake.clone());
            if u64::from(r.expiry_height) <= tip {
                self.forget(ctx, key).await?;
                self.pruned.inc();
                continue;
            }
            for (outpoint, _, _) in &r.stakes {
                if let Ok(o) = OutPoint::from_str(outpoint) {
                    watch.watch(o, key.clone());
                }
            }
        }
        let (pruned, failure) = watch.prune_spent(self.chain.as_ref()).await;
        if let Some(e) = failure {
            warn!(error = %e, "could not ask the chain about every output; asking again next block");
        }
        for key in &pruned {
            self.forget(ctx, key).await?;
            self.pruned.inc();
        }
        if !pruned.is_empty() {
            info!(
                pruned = pruned.len(),
                tip, "certificates of spent outputs pruned"
            );
        }
        // Keys attested before but with no certificate left get a last word.
        for (k, _) in ctx.kv_scan(b"attested/").await? {
            if let Some(s) = String::from_utf8(k)
                .ok()
                .and_then(|k| k.strip_prefix("attested/").map(str::to_string))
            {
                affected.insert(s);
            }
        }
        for stake in affected {
            if let Err(e) = self.publish(ctx, &stake, tip, false).await {
                warn!(error = %e, "could not publish an attestation");
            }
        }
        Ok(())
    }

    /// Record an order's status under its stake key.
    async fn note_order(&self, ctx: &ServiceContext, event: &Event) -> Result<Option<String>> {
        let Ok(Some(stake)) = stake_of(event) else {
            return Ok(None);
        };
        let (Some(d), Some(status)) = (tag_value(event, "d"), tag_value(event, "s")) else {
            return Ok(None);
        };
        let stake = stake.to_string();
        // The order's address includes its author: one maker's `d` is not another's.
        let key = format!("orders/{stake}/{}:{d}", event.pubkey);
        ctx.kv_put(key.as_bytes(), status.as_bytes()).await?;
        Ok(Some(stake))
    }

    /// The chain's tip as the follower last saw it; the chain is asked only
    /// before the follower's first answer (not once per staked order).
    async fn tip(&self) -> Result<u64> {
        match self.tip.load(std::sync::atomic::Ordering::Relaxed) {
            0 => {
                let tip = self
                    .chain
                    .tip_height()
                    .await
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                self.tip
                    .fetch_max(tip, std::sync::atomic::Ordering::Relaxed);
                Ok(tip)
            }
            tip => Ok(tip),
        }
    }
}

/// A certificate's refusal as NIP-01 prefixes it.
fn refusal(r: Refusal) -> Rejection {
    match r {
        Refusal::Chain(e) => {
            warn!(error = %e, "chain lookup failed");
            Rejection::error("the chain source could not be reached; retry")
        }
        Refusal::Unsupported(m) => Rejection::unsupported(m),
        Refusal::Spent => Rejection::blocked(r.to_string()),
        other => Rejection::invalid(other.to_string()),
    }
}

#[async_trait]
impl Service for Rank {
    fn nip11_extra(&self, _now: Timestamp) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert(
            "civkit_rank".into(),
            json!({
                "network": self.network.to_core_arg(),
                "certificate_kind": CERTIFICATE_KIND,
                "attestation_kind": ATTESTATION_KIND,
                "certificate_types": self.verifiers.iter().map(|v| v.kind()).collect::<Vec<_>>(),
                "tiers": self.cfg.tiers,
                "maturity_blocks": self.cfg.maturity_blocks,
                "attestation_secs": self.cfg.attestation_secs,
            }),
        );
        m
    }

    async fn admit_event(
        &self,
        ctx: &ServiceContext,
        _origin: &Origin,
        event: &Event,
    ) -> Admission {
        if event.kind.as_u16() != CERTIFICATE_KIND {
            return Admission::Accept;
        }
        // Certificates for another rank service pass through untouched.
        let ours = ctx.keys().ok().map(|k| k.public_key().to_hex());
        if tag_value(event, "p") != ours.as_deref() {
            return Admission::Accept;
        }
        match self.take_certificate(ctx, event).await {
            Ok(()) => Admission::Accept,
            Err(r) => Admission::Reject(r),
        }
    }

    async fn on_stored(&self, ctx: &ServiceContext, _origin: &Origin, event: &Event) {
        let stake = match event.kind.as_u16() {
            CERTIFICATE_KIND => Some(event.pubkey.to_hex()),
            ORDER_KIND => self.note_order(ctx, event).await.unwrap_or_else(|e| {
                warn!(error = %e, "could not note an order");
                None
            }),
            _ => None,
        };
        let Some(stake) = stake else { return };
        let published = async {
            let tip = self.tip().await?;
            self.publish(ctx, &stake, tip, false).await?;
            // Stake keys that lost an output to this certificate.
            for (k, _) in ctx.kv_scan(b"dirty/").await? {
                if let Some(loser) = std::str::from_utf8(&k)
                    .ok()
                    .and_then(|k| k.strip_prefix("dirty/"))
                {
                    self.publish(ctx, loser, tip, false).await?;
                }
                ctx.kv_delete(&k).await?;
            }
            Ok::<_, Error>(())
        };
        if let Err(e) = published.await {
            warn!(error = %e, "could not publish an attestation");
        }
    }

    async fn run(&self, ctx: ServiceContext, mut shutdown: Shutdown) -> Result<()> {
        let mut tips = civkit_chain::follow(
            self.chain.clone(),
            Duration::from_secs(self.cfg.poll_secs.max(1)),
        );
        let mut refresh = tokio::time::interval(Duration::from_secs(self.cfg.attestation_secs / 4));
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                changed = tips.changed() => if changed.is_err() { return Ok(()) },
                _ = refresh.tick() => {}
            }
            let Some(tip) = *tips.borrow_and_update() else {
                continue;
            };
            // A reorganisation may lower it: store, not max.
            self.tip
                .store(tip.height, std::sync::atomic::Ordering::Relaxed);
            // Once per board: the lease holder prunes and republishes.
            if !ctx.is_leader() {
                continue;
            }
            if let Err(e) = self.on_tip(&ctx, tip.height).await {
                warn!(error = %e, "rank upkeep failed");
            }
        }
    }

    async fn admin(&self, ctx: &ServiceContext, command: &str, args: Value) -> Result<Value> {
        match command {
            "show" => {
                let stake = args["stake_key"].as_str().unwrap_or_default();
                let a = self.attest(ctx, stake, self.tip().await?).await?;
                Ok(
                    json!({ "tier": a.tier, "score": a.score, "value_sat": a.inputs.value_sat,
                    "certificates": a.inputs.certificates, "orders": a.inputs.orders, "settled": a.inputs.settled }),
                )
            }
            "summary" => {
                let certs = self.certificates(ctx).await?;
                let keys: BTreeMap<&str, usize> =
                    certs.iter().fold(BTreeMap::new(), |mut m, (_, s, _)| {
                        *m.entry(s.as_str()).or_default() += 1;
                        m
                    });
                let value: u64 = certs
                    .iter()
                    .flat_map(|(_, _, r)| r.stakes.iter().map(|s| s.1))
                    .sum();
                Ok(
                    json!({ "certificates": certs.len(), "stake_keys": keys.len(), "value_sat": Amount::from_sat(value).to_sat() }),
                )
            }
            other => Err(Error::Unsupported(format!(
                "admin command `{other}` (try show, summary)"
            ))),
        }
    }
}
