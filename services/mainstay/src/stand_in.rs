//! A stand-in Mainstay server for tests (feature `testing`): the documented
//! `commitment/send` and `commitment/latestproof` endpoints over a real slot
//! Merkle tree, attested on demand with a made-up staychain txid.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test double: failures are test failures

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::proof::{Op, SlotProof};
use crate::rounds;

/// Mainstay's slot tree over a power-of-two number of slot commitments
/// (display hex): double SHA-256 of the pair in internal order, as its
/// proofs (`crate::proof`) fold. Returns the root and each slot's ops.
fn slot_tree(leaves: &[String]) -> (String, Vec<Vec<Op>>) {
    use nostr::hashes::{sha256d, Hash};
    let internal = |h: &str| {
        let mut b: [u8; 32] = hex::decode(h).unwrap().try_into().unwrap();
        b.reverse();
        b
    };
    let display = |mut b: [u8; 32]| {
        b.reverse();
        hex::encode(b)
    };
    let mut level: Vec<[u8; 32]> = leaves.iter().map(|l| internal(l)).collect();
    let mut paths: Vec<Vec<Op>> = vec![Vec::new(); leaves.len()];
    let mut index: Vec<usize> = (0..leaves.len()).collect();
    while level.len() > 1 {
        for (slot, i) in index.iter_mut().enumerate() {
            let sibling = *i ^ 1;
            paths[slot].push(Op {
                append: i.is_multiple_of(2),
                commitment: display(level[sibling]),
            });
            *i /= 2;
        }
        level = level
            .chunks(2)
            .map(|c| sha256d::Hash::hash(&[c[0], c[1]].concat()).to_byte_array())
            .collect();
    }
    (display(level[0]), paths)
}

/// The stand-in's state.
#[derive(Default)]
pub struct StandIn {
    /// Latest commitment sent per slot.
    pub slots: Mutex<BTreeMap<u64, String>>,
    /// Proof per slot of the last attestation.
    pub proofs: Mutex<BTreeMap<u64, SlotProof>>,
    /// Answer 503 to everything (an outage).
    pub down: Mutex<bool>,
    /// Attestations made so far.
    pub attestations: Mutex<u64>,
    /// The fake staychain: raw transactions by txid (served as Esplora does).
    pub txs: Mutex<BTreeMap<String, String>>,
    /// The last attestation, spent by the next.
    pub last_txid: Mutex<Option<bitcoin::Txid>>,
    /// Height of each attestation's block: the n-th attestation is in
    /// block n; the tip is the number of attestations plus `extra_blocks`.
    pub heights: Mutex<BTreeMap<String, u64>>,
    /// Blocks mined on top of the last attestation.
    pub extra_blocks: Mutex<u64>,
}

/// The staychain's start: the transaction the stand-in's first attestation
/// spends (configure it as `staychain_start`).
pub const STAYCHAIN_START: &str =
    "5222ffe08bfd4ca0db30d261b2d54d0b6e3faed5276be422e5e6ac32c450ccd7";

impl StandIn {
    /// Attest the current slot commitments: build the slot tree (8 slots,
    /// empty ones zero), record each slot's proof.
    pub fn attest(&self) {
        let slots = self.slots.lock().unwrap().clone();
        let mut n = self.attestations.lock().unwrap();
        *n += 1;
        let leaves: Vec<String> = (0..8u64)
            .map(|i| {
                slots
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| rounds::GENESIS.to_string())
            })
            .collect();
        let (root, paths) = slot_tree(&leaves);
        // A real transaction paying to the base key tweaked by the slot root,
        // spending the previous attestation.
        let key = crate::chain::tweaked_key(
            crate::chain::MAINNET_BASE_KEY,
            crate::chain::MAINNET_CHAIN_CODE,
            &root,
        )
        .unwrap();
        let prev = self
            .last_txid
            .lock()
            .unwrap()
            .unwrap_or_else(|| STAYCHAIN_START.parse().unwrap());
        let tx = bitcoin::Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![bitcoin::TxIn {
                previous_output: bitcoin::OutPoint {
                    txid: prev,
                    vout: 0,
                },
                script_sig: bitcoin::ScriptBuf::new(),
                sequence: bitcoin::Sequence::MAX,
                witness: bitcoin::Witness::new(),
            }],
            output: vec![bitcoin::TxOut {
                value: bitcoin::Amount::from_sat(10_000 + *n),
                script_pubkey: crate::chain::paying_scripts(&key)[2].clone(),
            }],
        };
        let txid = tx.compute_txid();
        self.txs.lock().unwrap().insert(
            txid.to_string(),
            bitcoin::consensus::encode::serialize_hex(&tx),
        );
        *self.last_txid.lock().unwrap() = Some(txid);
        self.heights.lock().unwrap().insert(txid.to_string(), *n);
        let mut proofs = self.proofs.lock().unwrap();
        for (i, c) in leaves.iter().enumerate() {
            if slots.contains_key(&(i as u64)) {
                proofs.insert(
                    i as u64,
                    SlotProof {
                        commitment: c.clone(),
                        merkle_root: root.clone(),
                        ops: paths[i].clone(),
                        txid: txid.to_string(),
                        height: Value::Null,
                    },
                );
            }
        }
    }
}

async fn send(State(s): State<Arc<StandIn>>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if *s.down.lock().unwrap() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "down" })),
        );
    }
    if body["token"] != "test-token" {
        return (StatusCode::OK, Json(json!({ "error": "invalid token" })));
    }
    let c = body["commitment"].as_str().unwrap_or_default().to_string();
    if c.len() != 64 || hex::decode(&c).is_err() {
        return (
            StatusCode::OK,
            Json(json!({ "error": "invalid commitment" })),
        );
    }
    s.slots
        .lock()
        .unwrap()
        .insert(body["position"].as_u64().unwrap_or(0), c);
    (
        StatusCode::OK,
        Json(json!({ "response": "Commitment sent" })),
    )
}

async fn latest(
    State(s): State<Arc<StandIn>>,
    Query(q): Query<BTreeMap<String, u64>>,
) -> (StatusCode, Json<Value>) {
    if *s.down.lock().unwrap() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "down" })),
        );
    }
    let pos = q.get("position").copied().unwrap_or(0);
    match s.proofs.lock().unwrap().get(&pos) {
        Some(p) => (StatusCode::OK, Json(json!({ "response": p }))),
        None => (StatusCode::OK, Json(json!({ "response": null }))),
    }
}

async fn tx_hex(
    State(s): State<Arc<StandIn>>,
    axum::extract::Path(txid): axum::extract::Path<String>,
) -> (StatusCode, String) {
    match s.txs.lock().unwrap().get(&txid) {
        Some(hex) => (StatusCode::OK, hex.clone()),
        None => (StatusCode::NOT_FOUND, "Transaction not found".into()),
    }
}

async fn tx_status(
    State(s): State<Arc<StandIn>>,
    axum::extract::Path(txid): axum::extract::Path<String>,
) -> (StatusCode, Json<Value>) {
    match s.heights.lock().unwrap().get(&txid) {
        Some(h) => (
            StatusCode::OK,
            Json(json!({ "confirmed": true, "block_height": h })),
        ),
        None => (StatusCode::NOT_FOUND, Json(Value::Null)),
    }
}

async fn tip(State(s): State<Arc<StandIn>>) -> String {
    (*s.attestations.lock().unwrap() + *s.extra_blocks.lock().unwrap()).to_string()
}

/// Start the stand-in on a free port; returns it and its base URL (also an
/// Esplora endpoint for the fake staychain: `GET /tx/{txid}/hex`,
/// `/tx/{txid}/status`, `/blocks/tip/height`).
pub async fn start() -> (Arc<StandIn>, String) {
    let state = Arc::new(StandIn::default());
    let app = Router::new()
        .route("/commitment/send", post(send))
        .route("/commitment/latestproof", get(latest))
        .route("/tx/{txid}/hex", get(tx_hex))
        .route("/tx/{txid}/status", get(tx_status))
        .route("/blocks/tip/height", get(tip))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, url)
}
