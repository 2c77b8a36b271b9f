//! The notary service: events of the configured kinds are gathered into
//! rounds; each round's commitment goes to the board's Mainstay slot; proofs
//! are polled, verified and stored. Mainstay being down, slow or wrong never
//! delays event ingestion: events are queued locally and rounds are retried.
//!
//! Key-value layout (the service's namespace):
//! `pending:<seq u64 BE><event id>` = event id (older stores wrote
//! `pending:<seq u64 BE>`; both are read), `round:<n u64 BE>` = round JSON,
//! `last` = `{"round", "seq"}` of the last closed round, `proof:<n>` = the
//! verified slot proof attesting round n, and the lookup indexes
//! `commit:<commitment hex>` and `event:<event id hex>` = round number.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use civkit_framework::metrics::{PromCounter, PromGauge};
use civkit_framework::{
    Admission, Error, Origin, Rejection, Result, ScopedMetrics, Service, ServiceContext, Shutdown,
};
use nostr::Event;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::client::Mainstay;
use crate::proof::{self, SlotProof};
use crate::rounds::{self, Round, GENESIS};

/// Config of `[services.<name>] type = "mainstay"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MainstayConfig {
    /// Base URL of the Mainstay API.
    pub url: String,
    /// The board's slot position.
    pub position: u64,
    /// File with the slot's API token, relative to node.data_dir.
    pub token_file: String,
    /// Event kinds notarized (orders, and the NIP-09 deletions that explain
    /// why an order in the history is no longer served).
    pub kinds: Vec<u16>,
    /// Seconds between rounds.
    pub round_secs: u64,
    /// Seconds between proof polls.
    pub poll_secs: u64,
    /// Longest wait between retries when Mainstay fails, in seconds.
    pub max_backoff_secs: u64,
    /// Longest one request to Mainstay may take, in seconds. Rounds keep
    /// closing every `round_secs` whatever Mainstay does.
    pub request_timeout_secs: u64,
    /// Where attestations are checked on the Bitcoin chain before a round
    /// counts as attested.
    pub chain: ChainConfig,
}

/// `[services.<name>.chain]`: the chain source and what an attestation must be.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainConfig {
    /// `esplora`, `bitcoind`, or `none` (testing only: attestations are
    /// trusted without a chain check; must be chosen explicitly).
    pub backend: String,
    /// Esplora base URL, or bitcoind's RPC URL (bitcoind needs `-txindex`).
    pub url: String,
    /// bitcoind RPC user.
    pub user: String,
    /// File with the bitcoind RPC password, relative to node.data_dir.
    pub password_file: String,
    /// Mainstay's base public key (hex).
    pub base_key: String,
    /// Chain code of the base key (hex).
    pub chain_code: String,
    /// The first transaction of the slot's staychain (from Mainstay): every
    /// attestation must lead back to it.
    pub staychain_start: String,
    /// Confirmations an attestation needs.
    pub min_confirmations: u64,
    /// Longest walk back along the staychain, in transactions.
    pub max_staychain_steps: usize,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            backend: "esplora".into(),
            url: "https://blockstream.info/api".into(),
            user: String::new(),
            password_file: String::new(),
            base_key: crate::chain::MAINNET_BASE_KEY.into(),
            chain_code: crate::chain::MAINNET_CHAIN_CODE.into(),
            staychain_start: String::new(),
            min_confirmations: 3,
            max_staychain_steps: 100_000,
        }
    }
}

impl Default for MainstayConfig {
    fn default() -> Self {
        MainstayConfig {
            url: "https://mainstay.xyz/api/v1".into(),
            position: 0,
            token_file: "mainstay.token".into(),
            kinds: vec![38383, 5],
            round_secs: 600,
            poll_secs: 60,
            max_backoff_secs: 600,
            request_timeout_secs: 30,
            chain: ChainConfig::default(),
        }
    }
}

pub(crate) const EXAMPLE: &str = r#"# Base URL of the Mainstay API.
url = "https://mainstay.xyz/api/v1"
# The board's slot position.
position = 0
# File with the slot's API token, relative to node.data_dir.
token_file = "mainstay.token"
# Event kinds notarized (orders, and the NIP-09 deletions that explain an order's end).
kinds = [38383, 5]
# Seconds between rounds.
round_secs = 600
# Seconds between proof polls.
poll_secs = 60
# Longest wait between retries when Mainstay fails, in seconds.
max_backoff_secs = 600
# Longest one request to Mainstay may take, in seconds (rounds close regardless).
request_timeout_secs = 30

# Where attestations are checked on the Bitcoin chain before a round counts as attested.
[{table}.chain]
# esplora, bitcoind, or none (testing only: attestations trusted unchecked).
backend = "esplora"
# Esplora base URL, or bitcoind's RPC URL (bitcoind needs -txindex).
url = "https://blockstream.info/api"
# bitcoind RPC user, and a file with its password (relative to node.data_dir).
user = ""
password_file = ""
# Mainstay's base public key and chain code (hex).
base_key = "03e31877426407458858948993f6af1fc70dd2928a328dec6cdf5c215770e40ed2"
chain_code = "14df7ece79e83f0f479a37832d770294014edc6884b0c8bfa2e0aaf51fb00229"
# The first transaction of your slot's staychain, from Mainstay (required).
staychain_start = ""
# Confirmations an attestation needs.
min_confirmations = 3
# Longest walk back along the staychain, in transactions.
max_staychain_steps = 100000
"#;

/// What the notary does in the background; each keeps its own last error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Task {
    Round,
    Send,
    Poll,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::Round => "round",
            Task::Send => "send",
            Task::Poll => "poll",
        }
    }
}

#[derive(Default)]
struct Counters {
    bad_proofs: AtomicU64,
    send_failures: AtomicU64,
    /// The standing error of each task with the unix time it happened;
    /// cleared when that task next succeeds.
    errors: Mutex<std::collections::BTreeMap<Task, (String, u64)>>,
    /// Bad proofs already counted (by txid and root), so a poll that sees
    /// the same bad proof again does not count it again.
    seen_bad: Mutex<std::collections::HashSet<(String, String)>>,
}

/// The notary service.
#[derive(Clone)]
pub struct Notary {
    cfg: Arc<MainstayConfig>,
    api: Arc<Mainstay>,
    /// `None` only with `chain.backend = "none"`.
    chain: Option<Arc<dyn crate::chain::ChainSource>>,
    /// The last acceptance sequence number handed out; read from the store
    /// (the highest one recorded) on first use, then only grows.
    seq: Arc<tokio::sync::OnceCell<AtomicU64>>,
    counters: Arc<Counters>,
    metrics: Arc<NotaryMetrics>,
}

/// The notary's metrics (`civkit_notary_*`).
#[derive(Default)]
struct NotaryMetrics {
    rounds: PromCounter,
    last_round: PromGauge,
    pending: PromGauge,
    /// Unix time this node stored the last new attestation (0: none since start).
    attested_at: AtomicU64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl std::fmt::Debug for Notary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notary")
            .field("position", &self.cfg.position)
            .finish()
    }
}

fn key(prefix: &str, n: u64) -> Vec<u8> {
    [prefix.as_bytes(), &n.to_be_bytes()].concat()
}

/// The number after `prefix` (the first 8 bytes after it).
fn number(k: &[u8], prefix: &str) -> Option<u64> {
    k.get(prefix.len()..prefix.len() + 8)?
        .try_into()
        .ok()
        .map(u64::from_be_bytes)
}

fn kv_err(e: impl std::fmt::Display) -> Error {
    Error::Service {
        instance: "mainstay".into(),
        message: e.to_string(),
    }
}

impl Notary {
    /// A notary sending to `api`.
    pub fn new(
        cfg: MainstayConfig,
        api: Mainstay,
        chain: Option<Arc<dyn crate::chain::ChainSource>>,
    ) -> Self {
        if chain.is_none() {
            warn!("the notary trusts Mainstay's attestations without checking them on chain (chain.backend = none; testing only)");
        }
        Notary {
            cfg: Arc::new(cfg),
            api: Arc::new(api),
            chain,
            seq: Arc::default(),
            counters: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// Count rounds, pending events and the attestation's age in `m`.
    pub fn with_metrics(mut self, m: &ScopedMetrics) -> Self {
        let metrics = Arc::new(NotaryMetrics {
            rounds: m.counter("notary_rounds", "Rounds closed by this node"),
            last_round: m.gauge("notary_last_round", "Number of the last round closed"),
            pending: m.gauge(
                "notary_pending_events",
                "Accepted events waiting for the next round",
            ),
            attested_at: AtomicU64::new(0),
        });
        let read = Arc::downgrade(&metrics);
        let age = m.float_gauge(
            "notary_last_attestation_age_seconds",
            "Seconds since this node stored the last new Mainstay attestation (NaN: none since start)",
        );
        m.node().on_scrape(move || {
            let at = read
                .upgrade()
                .map_or(0, |m| m.attested_at.load(Ordering::Relaxed));
            age.set(if at == 0 {
                f64::NAN
            } else {
                unix_now().saturating_sub(at) as f64
            });
        });
        self.metrics = metrics;
        self
    }

    /// The next acceptance sequence number: persisted (as the keys of
    /// pending events and the last round's `seq`), so it keeps growing
    /// across restarts whatever the clock does, and never below the clock
    /// in microseconds, so that nodes sharing a store order their events
    /// by acceptance time (to the second) rather than by how many each
    /// took. Two nodes may take the same number; the pending key carries
    /// the event id as well, and a round orders by both.
    async fn next_seq(&self, ctx: &ServiceContext) -> Result<u64> {
        let counter = self
            .seq
            .get_or_try_init(|| async {
                let last = Self::last(ctx).await?.map_or(0, |(_, s)| s);
                let pending = ctx
                    .kv_scan(b"pending:")
                    .await?
                    .iter()
                    .filter_map(|(k, _)| number(k, "pending:"))
                    .max()
                    .unwrap_or(0);
                Ok::<_, Error>(AtomicU64::new(last.max(pending)))
            })
            .await?;
        let floor = ctx.now().as_secs().saturating_mul(1_000_000);
        let previous = counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(1).max(floor))
            })
            .unwrap_or_else(|n| n);
        Ok(previous.saturating_add(1).max(floor))
    }

    fn errors(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<Task, (String, u64)>> {
        self.counters
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn note(
        &self,
        ctx: &ServiceContext,
        task: Task,
        r: std::result::Result<(), crate::error::Error>,
    ) {
        match r {
            Ok(()) => {
                self.errors().remove(&task);
            }
            Err(e) => {
                warn!(error = %e, kind = ?e.kind(), task = task.name(), "mainstay");
                self.errors()
                    .insert(task, (e.to_string(), ctx.now().as_secs()));
            }
        }
    }

    async fn last(ctx: &ServiceContext) -> Result<Option<(u64, u64)>> {
        Ok(ctx
            .kv_get(b"last")
            .await?
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| Some((v["round"].as_u64()?, v["seq"].as_u64()?))))
    }

    /// The round number an index entry (`commit:` or `event:`) points at.
    async fn indexed(ctx: &ServiceContext, entry: &str) -> Result<Option<u64>> {
        Ok(ctx
            .kv_get(entry.as_bytes())
            .await?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes))
    }

    async fn round(ctx: &ServiceContext, n: u64) -> Result<Option<Round>> {
        Ok(ctx
            .kv_get(&key("round:", n))
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Close a round over the pending events (none: no round).
    pub async fn close_round(&self, ctx: &ServiceContext) -> Result<Option<Round>> {
        let last = Self::last(ctx).await?;
        // Every pending event, in acceptance order, however late it was
        // written; one already in a round (a crash between writing a round
        // and clearing its pending entries) is only cleared. kv_scan
        // answers in key order: by sequence, then event id.
        let mut pending: Vec<(Vec<u8>, u64, String)> = Vec::new();
        for (k, v) in ctx.kv_scan(b"pending:").await? {
            let Some(seq) = number(&k, "pending:") else {
                continue;
            };
            let id = hex::encode(v);
            if Self::indexed(ctx, &format!("event:{id}")).await?.is_some() {
                ctx.kv_delete(&k).await?;
            } else {
                pending.push((k, seq, id));
            }
        }
        self.metrics
            .pending
            .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        let Some(max_seq) = pending.iter().map(|(_, s, _)| *s).max() else {
            return Ok(None);
        };
        let max_seq = max_seq.max(last.map_or(0, |(_, s)| s));
        let (n, previous) = match last {
            Some((n, _)) => (
                n + 1,
                Self::round(ctx, n)
                    .await?
                    .map_or(GENESIS.to_string(), |r| r.commitment),
            ),
            None => (0, GENESIS.to_string()),
        };
        let built = rounds::build(
            n,
            &previous,
            pending.iter().map(|(_, _, id)| id.clone()).collect(),
        )
        .map_err(kv_err)?;
        // Round n is written once. When it is already there (another node
        // of the board closed it during a lease handover, or this node
        // crashed before finishing it), that round stands, and is finished
        // here: its indexes and `last` are written again, which is
        // idempotent, and only its own events leave the pending set.
        let round = if ctx
            .kv_insert_new(
                &key("round:", n),
                &serde_json::to_vec(&built).map_err(kv_err)?,
            )
            .await?
        {
            built
        } else {
            warn!(round = n, "round already written; finishing it as it is");
            Self::round(ctx, n)
                .await?
                .ok_or_else(|| kv_err(format!("round {n} is unreadable")))?
        };
        // Indexes for proof lookups: commitment -> round, event id -> round.
        ctx.kv_put(
            format!("commit:{}", round.commitment).as_bytes(),
            &n.to_be_bytes(),
        )
        .await?;
        for id in &round.events {
            ctx.kv_put(format!("event:{id}").as_bytes(), &n.to_be_bytes())
                .await?;
        }
        ctx.kv_put(
            b"last",
            json!({ "round": n, "seq": max_seq }).to_string().as_bytes(),
        )
        .await?;
        let included: std::collections::HashSet<&String> = round.events.iter().collect();
        for (k, _, id) in &pending {
            if included.contains(id) {
                ctx.kv_delete(k).await?;
            }
        }
        info!(round = n, events = round.events.len(), commitment = %round.commitment, "round closed");
        self.metrics.rounds.inc();
        self.metrics
            .last_round
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        self.metrics
            .pending
            .dec_by(i64::try_from(included.len()).unwrap_or(0));
        self.publish_round(ctx, &round, None).await;
        Ok(Some(round))
    }

    /// Send the latest round's commitment unless it was sent (it chains
    /// all earlier ones).
    pub async fn send_latest(&self, ctx: &ServiceContext) -> crate::error::Result<()> {
        let Some((n, _)) = Self::last(ctx).await? else {
            return Ok(());
        };
        if ctx.kv_get(&key("sent:", n)).await?.is_some() {
            return Ok(());
        }
        let round = Self::round(ctx, n)
            .await?
            .ok_or_else(|| crate::error::Error::Document(format!("round {n} is missing")))?;
        self.api.send(&round.commitment).await?;
        ctx.kv_put(&key("sent:", n), &[1]).await?;
        info!(round = n, "commitment sent to Mainstay");
        Ok(())
    }

    /// Fetch the latest slot proof; store it if it verifies and attests one of our rounds.
    pub async fn poll(&self, ctx: &ServiceContext) -> crate::error::Result<Option<u64>> {
        let Some(p) = self.api.latest_proof().await? else {
            return Ok(None);
        };
        if !proof::verify(&p).unwrap_or(false) {
            let first_time = {
                let mut seen = self
                    .counters
                    .seen_bad
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                // A Mainstay that lies anew at every poll must not grow this
                // without bound; forgetting old ones may count one twice.
                if seen.len() >= 1_024 {
                    seen.clear();
                }
                seen.insert((p.txid.clone(), p.merkle_root.clone()))
            };
            if first_time {
                self.counters.bad_proofs.fetch_add(1, Ordering::Relaxed);
            }
            return Err(crate::error::Error::Document(format!(
                "Mainstay's proof for txid {} does not verify; not stored",
                p.txid
            )));
        }
        let commit = format!("commit:{}", p.commitment);
        let Some(n) = Self::indexed(ctx, &commit).await? else {
            return Ok(None);
        };
        let Some(r) = Self::round(ctx, n).await? else {
            return Ok(None);
        };
        if ctx.kv_get(&key("proof:", n)).await?.is_none() {
            if !self.on_chain(ctx, &p).await? {
                return Ok(None);
            }
            let bytes = serde_json::to_vec(&p)
                .map_err(|e| crate::error::Error::Document(format!("proof of round {n}: {e}")))?;
            ctx.kv_put(&key("proof:", n), &bytes).await?;
            info!(round = n, txid = %p.txid, "round attested");
            self.metrics
                .attested_at
                .store(unix_now(), Ordering::Relaxed);
            self.publish_round(ctx, &r, Some(&p)).await;
        }
        Ok(Some(n))
    }

    /// Whether the attestation `p` is Mainstay's on the chain: its
    /// transaction pays the base key tweaked by the proof's root, is deep
    /// enough, and leads back along the staychain to the slot's start.
    /// `false` while it is not deep enough yet; an error when it is not an
    /// attestation of this slot.
    async fn on_chain(&self, ctx: &ServiceContext, p: &SlotProof) -> crate::error::Result<bool> {
        use crate::chain;
        let Some(source) = &self.chain else {
            return Ok(true);
        };
        let c = &self.cfg.chain;
        let txid: bitcoin::Txid = p
            .txid
            .parse()
            .map_err(|_| crate::error::Error::Document(format!("{} is not a txid", p.txid)))?;
        if source.confirmations(&txid).await? < c.min_confirmations {
            return Ok(false);
        }
        chain::check_attestation(
            source.as_ref(),
            &c.base_key,
            &c.chain_code,
            &p.txid,
            &p.merkle_root,
            c.min_confirmations,
        )
        .await?;
        let verified: std::collections::HashSet<String> = ctx
            .kv_scan(b"chain:")
            .await?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k["chain:".len()..]).into_owned())
            .collect();
        let start = c.staychain_start.clone();
        let walked = chain::walk_staychain(
            source.as_ref(),
            &p.txid,
            move |t| t == start || verified.contains(t),
            c.max_staychain_steps,
        )
        .await?;
        for t in walked {
            ctx.kv_put(format!("chain:{t}").as_bytes(), &[1]).await?;
        }
        Ok(true)
    }

    /// Publish a round (and its proof once attested) as an addressable event
    /// of kind 30384, `d` = the round number, signed by the board key.
    async fn publish_round(
        &self,
        ctx: &ServiceContext,
        round: &Round,
        attestation: Option<&SlotProof>,
    ) {
        let published = crate::history::PublishedRound {
            round: round.clone(),
            attestation: attestation.cloned(),
        };
        let content = serde_json::to_string(&published).unwrap_or_default();
        let builder =
            nostr::EventBuilder::new(nostr::Kind::from(crate::history::ROUND_KIND), content)
                .tags(nostr::Tag::parse(["d", &round.number.to_string()]).ok());
        match ctx.publish_replacing(builder).await {
            Ok(r) if r.accepted => {}
            Ok(r) => warn!(round = round.number, reason = %r.message, "round event refused"),
            Err(e) => warn!(round = round.number, error = %e, "could not publish a round"),
        }
    }

    async fn status(&self, ctx: &ServiceContext) -> Result<Value> {
        let last = Self::last(ctx).await?;
        let pending = ctx.kv_scan(b"pending:").await?.len();
        let proofs = ctx.kv_scan(b"proof:").await?;
        let attested = proofs.last().and_then(|(k, v)| {
            let p: SlotProof = serde_json::from_slice(v).ok()?;
            Some(json!({ "round": number(k, "proof:")?, "txid": p.txid, "merkle_root": p.merkle_root }))
        });
        let unsent = match last {
            Some((n, _)) => ctx.kv_get(&key("sent:", n)).await?.is_none(),
            None => false,
        };
        Ok(json!({
            "last_round": last.map(|(n, _)| n),
            "pending_events": pending,
            "last_round_unsent": unsent,
            "last_attested": attested,
            "on_chain_check": self.chain.is_some(),
            "bad_proofs": self.counters.bad_proofs.load(Ordering::Relaxed),
            "send_failures": self.counters.send_failures.load(Ordering::Relaxed),
            "errors": self.errors().iter().map(|(t, (m, at))| (t.name().to_string(), json!({ "error": m, "at": at }))).collect::<serde_json::Map<_, _>>(),
            "last_error": self.errors().values().max_by_key(|(_, at)| *at).map(|(m, at)| json!({ "error": m, "at": at })),
        }))
    }

    /// A self-contained proof for an event: its path into its round, the
    /// chain of rounds up to the first attested one, and Mainstay's slot proof.
    pub async fn proof_document(&self, ctx: &ServiceContext, event_id: &str) -> Result<Value> {
        let Some((last, _)) = Self::last(ctx).await? else {
            return Err(Error::Invalid("no round closed yet".into()));
        };
        let mut found = None;
        if let Some(n) = Self::indexed(ctx, &format!("event:{event_id}")).await? {
            if let Some(r) = Self::round(ctx, n).await? {
                found = r.events.iter().position(|e| e == event_id).map(|i| (r, i));
            }
        }
        let (round, index) = found
            .ok_or_else(|| Error::Invalid(format!("event {event_id} is in no closed round")))?;
        let inclusion = rounds::inclusion(&round, index).map_err(kv_err)?;
        let mut chain = vec![round.clone()];
        let mut attestation = Value::Null;
        for n in round.number..=last {
            if n > round.number {
                match Self::round(ctx, n).await? {
                    Some(r) => chain.push(r),
                    None => break,
                }
            }
            if let Some(p) = ctx.kv_get(&key("proof:", n)).await? {
                attestation = json!({ "round": n, "proof": serde_json::from_slice::<Value>(&p).map_err(kv_err)? });
                break;
            }
        }
        if attestation.is_null() {
            chain.truncate(1);
        }
        Ok(
            json!({ "event": event_id, "round": round.number, "inclusion": inclusion, "rounds": chain, "attestation": attestation }),
        )
    }
}

/// Check a proof document from [`Notary::proof_document`]: the event is in
/// its round, the rounds chain up to the attested one, and the slot proof
/// reaches Mainstay's merkle root. Returns the attesting txid.
pub fn verify_document(doc: &Value) -> crate::error::Result<String> {
    let bad = |m: String| crate::error::Error::Document(m);
    let inclusion: SlotProof = serde_json::from_value(doc["inclusion"].clone())
        .map_err(|e| bad(format!("inclusion: {e}")))?;
    let chain: Vec<Round> =
        serde_json::from_value(doc["rounds"].clone()).map_err(|e| bad(format!("rounds: {e}")))?;
    let first = chain.first().ok_or_else(|| bad("no rounds".into()))?;
    if inclusion.commitment != doc["event"].as_str().unwrap_or_default()
        || !rounds::verify_inclusion(&inclusion).unwrap_or(false)
    {
        return Err(bad(
            "the event's path does not reach a round commitment".into()
        ));
    }
    if inclusion.merkle_root != first.commitment {
        return Err(bad("the event's path leads to another round".into()));
    }
    rounds::verify_history(&chain)?;
    let slot: SlotProof = serde_json::from_value(doc["attestation"]["proof"].clone())
        .map_err(|_| bad("not attested yet".into()))?;
    let last = chain.last().ok_or_else(|| bad("no rounds".into()))?;
    if slot.commitment != last.commitment {
        return Err(bad("the slot proof attests another commitment".into()));
    }
    if !proof::verify(&slot)? {
        return Err(bad(
            "the slot proof does not reach Mainstay's merkle root".into()
        ));
    }
    Ok(slot.txid)
}

#[async_trait]
impl Service for Notary {
    /// Where takers find the slot that attests this board's rounds, to check
    /// that the board publishes every round Mainstay attests.
    fn nip11_extra(&self, _now: nostr::Timestamp) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert(
            "civkit_notary".into(),
            json!({
                "mainstay": self.api.url,
                "position": self.cfg.position,
                "kinds": self.cfg.kinds,
                "staychain_start": self.cfg.chain.staychain_start,
            }),
        );
        m
    }

    /// Take the event's place in acceptance order now, and record it as
    /// pending with the event's own durable write (a claim): an event that
    /// is stored is always in the pending set, one that is not never is.
    async fn admit_event(
        &self,
        ctx: &ServiceContext,
        _origin: &Origin,
        event: &Event,
    ) -> Admission {
        if !self.cfg.kinds.contains(&event.kind.as_u16()) {
            return Admission::Accept;
        }
        match self.next_seq(ctx).await {
            Ok(seq) => Admission::AcceptClaiming {
                keys: vec![(
                    [key("pending:", seq).as_slice(), event.id.as_bytes()].concat(),
                    event.id.to_bytes().to_vec(),
                )],
                taken: Rejection::error("the notary's sequence repeated; retry"),
            },
            Err(e) => {
                warn!(error = %e, "could not read the notary's sequence");
                Admission::Reject(Rejection::error("the notary cannot record the event"))
            }
        }
    }

    async fn on_stored(&self, _ctx: &ServiceContext, _origin: &Origin, event: &Event) {
        if self.cfg.kinds.contains(&event.kind.as_u16()) {
            self.metrics.pending.inc();
        }
    }

    async fn run(&self, ctx: ServiceContext, shutdown: Shutdown) -> Result<()> {
        // Three clocks, so that a Mainstay that hangs or fails never holds
        // up the rounds: rounds close every `round_secs`; the latest round
        // is sent with backoff; proofs are polled every `poll_secs`. Every
        // request has its own deadline. With a store that several nodes
        // share, only the node holding the board lease runs them: the
        // rounds, the sent marks and the proofs are the board's, in the
        // store.
        let deadline = Duration::from_secs(self.cfg.request_timeout_secs.max(1));
        let timed = |what: &'static str| {
            move |r: std::result::Result<crate::error::Result<()>, tokio::time::error::Elapsed>| {
                r.unwrap_or_else(|_| {
                    Err(crate::error::Error::BadAnswer(format!(
                        "Mainstay did not answer the {what} within {} s",
                        deadline.as_secs()
                    )))
                })
            }
        };
        let round_closed = Arc::new(tokio::sync::Notify::new());
        let rounds = {
            let (this, ctx, mut sd, closed) = (
                self.clone(),
                ctx.clone(),
                shutdown.clone(),
                round_closed.clone(),
            );
            async move {
                let every = Duration::from_secs(this.cfg.round_secs.max(1));
                loop {
                    tokio::select! {
                        _ = sd.wait() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if !ctx.is_leader() {
                        continue;
                    }
                    let r = this.close_round(&ctx).await;
                    if matches!(r, Ok(Some(_))) {
                        closed.notify_one();
                    }
                    this.note(&ctx, Task::Round, r.map(|_| ()).map_err(Into::into));
                }
            }
        };
        let sender = {
            let (this, ctx, mut sd, closed) = (
                self.clone(),
                ctx.clone(),
                shutdown.clone(),
                round_closed.clone(),
            );
            async move {
                let max_backoff = Duration::from_secs(this.cfg.max_backoff_secs.max(1));
                let mut backoff = Duration::from_secs(1);
                loop {
                    if !ctx.is_leader() {
                        tokio::select! {
                            _ = sd.wait() => return,
                            _ = closed.notified() => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        continue;
                    }
                    let r = timed("commitment")(
                        tokio::time::timeout(deadline, this.send_latest(&ctx)).await,
                    );
                    let wait = match &r {
                        Ok(()) => {
                            backoff = Duration::from_secs(1);
                            max_backoff
                        }
                        Err(_) => {
                            this.counters.send_failures.fetch_add(1, Ordering::Relaxed);
                            backoff = (backoff * 2).min(max_backoff);
                            backoff
                        }
                    };
                    this.note(&ctx, Task::Send, r);
                    tokio::select! {
                        _ = sd.wait() => return,
                        _ = closed.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
        let poller = {
            let (this, ctx, mut sd) = (self.clone(), ctx.clone(), shutdown.clone());
            async move {
                let every = Duration::from_secs(this.cfg.poll_secs.max(1));
                loop {
                    tokio::select! {
                        _ = sd.wait() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if !ctx.is_leader() {
                        continue;
                    }
                    let r = timed("proof request")(
                        tokio::time::timeout(deadline, this.poll(&ctx))
                            .await
                            .map(|r| r.map(|_| ())),
                    );
                    this.note(&ctx, Task::Poll, r);
                }
            }
        };
        tokio::join!(rounds, sender, poller);
        Ok(())
    }

    async fn admin(&self, ctx: &ServiceContext, command: &str, args: Value) -> Result<Value> {
        match command {
            "status" => self.status(ctx).await,
            "proof" => {
                let id = args["event"]
                    .as_str()
                    .ok_or_else(|| Error::Invalid("proof needs {\"event\": \"<id>\"}".into()))?;
                self.proof_document(ctx, id).await
            }
            "rounds" => {
                let all: Vec<Value> = ctx
                    .kv_scan(b"round:")
                    .await?
                    .into_iter()
                    .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
                    .collect();
                Ok(json!(all))
            }
            other => Err(Error::Unsupported(format!(
                "notary command `{other}` (status, proof, rounds)"
            ))),
        }
    }
}
