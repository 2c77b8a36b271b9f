//! A stand-in chain server for tests (feature `testing`): real blocks and
//! transactions, built with the `bitcoin` crate, served over both the
//! Esplora REST API and bitcoind's JSON-RPC (user `civkit`, password
//! `stand-in`), as [`crate::Esplora`] and [`crate::BitcoindRpc`] call them.
//! Blocks carry no proof of work; everything else is consensus-encoded as
//! on the real chain.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test double: failures are test failures

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{
    absolute, transaction, Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use serde_json::{json, Value};

/// The RPC user and password the stand-in accepts.
pub const RPC_USER: &str = "civkit";
pub const RPC_PASSWORD: &str = "stand-in";

#[derive(Default)]
struct Chain {
    blocks: Vec<Block>,
    /// Every mined transaction and the height of its block.
    txs: HashMap<Txid, (Transaction, u64)>,
    /// Spent outputs and the transaction that spent them.
    spent: HashMap<OutPoint, Txid>,
}

/// The stand-in's chain.
#[derive(Default)]
pub struct StandInChain(Mutex<Chain>);

impl StandInChain {
    fn chain(&self) -> MutexGuard<'_, Chain> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mine a block holding a coinbase and `txs`, in that order, on the tip.
    /// Returns its height and hash.
    pub fn mine(&self, txs: Vec<Transaction>) -> (u64, BlockHash) {
        let mut c = self.chain();
        let height = c.blocks.len() as u64;
        let coinbase = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                // BIP34: the height first, so that every coinbase differs.
                script_sig: bitcoin::script::Builder::new()
                    .push_int(height as i64 + 1)
                    .into_script(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(50 * 100_000_000),
                script_pubkey: ScriptBuf::new_op_return([]),
            }],
        };
        let mut txdata = vec![coinbase];
        txdata.extend(txs);
        let prev_blockhash = c
            .blocks
            .last()
            .map_or(BlockHash::all_zeros(), |b| b.block_hash());
        let mut block = Block {
            header: Header {
                version: Version::TWO,
                prev_blockhash,
                merkle_root: TxMerkleNode::all_zeros(),
                time: 1_700_000_000 + height as u32 * 600,
                bits: CompactTarget::from_consensus(0x207f_ffff),
                nonce: 0,
            },
            txdata,
        };
        block.header.merkle_root = block
            .compute_merkle_root()
            .expect("a block has transactions");
        for tx in &block.txdata {
            for input in &tx.input {
                if !input.previous_output.is_null() {
                    c.spent.insert(input.previous_output, tx.compute_txid());
                }
            }
            c.txs.insert(tx.compute_txid(), (tx.clone(), height));
        }
        let hash = block.block_hash();
        c.blocks.push(block);
        (height, hash)
    }

    /// Mine `n` empty blocks.
    pub fn mine_empty(&self, n: usize) {
        for _ in 0..n {
            self.mine(Vec::new());
        }
    }

    /// The best block's height (`None` before the first block).
    pub fn tip(&self) -> Option<u64> {
        (self.chain().blocks.len() as u64).checked_sub(1)
    }

    fn confirmations(&self, txid: &Txid) -> Option<u64> {
        let c = self.chain();
        let (_, h) = c.txs.get(txid)?;
        Some(c.blocks.len() as u64 - h)
    }

    fn unspent(&self, outpoint: &OutPoint) -> Option<(TxOut, u64)> {
        let c = self.chain();
        if c.spent.contains_key(outpoint) {
            return None;
        }
        let (tx, h) = c.txs.get(&outpoint.txid)?;
        let out = tx.output.get(outpoint.vout as usize)?.clone();
        Some((out, c.blocks.len() as u64 - h))
    }
}

/// A transaction spending `from` into `outputs` (unsigned: the stand-in
/// checks no scripts).
pub fn spending(from: OutPoint, outputs: Vec<TxOut>) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: from,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: outputs,
    }
}

type Shared = Arc<StandInChain>;

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

async fn tip(State(s): State<Shared>) -> Response {
    match s.tip() {
        Some(h) => h.to_string().into_response(),
        None => not_found(),
    }
}

async fn block_at(State(s): State<Shared>, Path(h): Path<u64>) -> Response {
    let c = s.chain();
    match c.blocks.get(h as usize) {
        Some(b) => b.block_hash().to_string().into_response(),
        None => not_found(),
    }
}

fn block_by_hash<'c>(c: &'c Chain, hash: &str) -> Option<&'c Block> {
    c.blocks.iter().find(|b| b.block_hash().to_string() == hash)
}

async fn txid_at(State(s): State<Shared>, Path((hash, index)): Path<(String, usize)>) -> Response {
    let c = s.chain();
    match block_by_hash(&c, &hash).and_then(|b| b.txdata.get(index)) {
        Some(tx) => tx.compute_txid().to_string().into_response(),
        None => not_found(),
    }
}

fn txid(text: &str) -> Option<Txid> {
    text.parse().ok()
}

async fn tx_hex(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let c = s.chain();
    match txid(&id).and_then(|t| c.txs.get(&t)) {
        Some((tx, _)) => bitcoin::consensus::encode::serialize_hex(tx).into_response(),
        None => not_found(),
    }
}

async fn tx_status(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let c = s.chain();
    match txid(&id).and_then(|t| c.txs.get(&t)) {
        Some((_, h)) => Json(json!({ "confirmed": true, "block_height": h })).into_response(),
        None => not_found(),
    }
}

async fn outspend(State(s): State<Shared>, Path((id, vout)): Path<(String, u32)>) -> Response {
    let Some(t) = txid(&id) else {
        return not_found();
    };
    let c = s.chain();
    match c.spent.get(&OutPoint::new(t, vout)) {
        Some(by) => Json(json!({ "spent": true, "txid": by.to_string() })).into_response(),
        None => Json(json!({ "spent": false })).into_response(),
    }
}

/// bitcoind's answer: a result, or an error with bitcoind's code (HTTP 500).
fn rpc(result: std::result::Result<Value, (i64, &str)>) -> Response {
    match result {
        Ok(v) => Json(json!({ "result": v, "error": null, "id": "civkit" })).into_response(),
        Err((code, message)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "result": null, "error": { "code": code, "message": message }, "id": "civkit" })),
        )
            .into_response(),
    }
}

async fn json_rpc(State(s): State<Shared>, headers: HeaderMap, Json(req): Json<Value>) -> Response {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{RPC_USER}:{RPC_PASSWORD}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let p = &req["params"];
    let no_tx = (-5, "No such mempool or blockchain transaction");
    let result = match req["method"].as_str().unwrap_or("") {
        "getblockcount" => s.tip().map(|h| json!(h)).ok_or((-1, "no blocks")),
        "getblockhash" => {
            let c = s.chain();
            p[0].as_u64()
                .and_then(|h| c.blocks.get(h as usize))
                .map(|b| json!(b.block_hash().to_string()))
                .ok_or((-8, "Block height out of range"))
        }
        "getblock" => {
            let c = s.chain();
            block_by_hash(&c, p[0].as_str().unwrap_or(""))
                .map(|b| {
                    let txids: Vec<String> = b
                        .txdata
                        .iter()
                        .map(|t| t.compute_txid().to_string())
                        .collect();
                    json!({ "hash": b.block_hash().to_string(), "tx": txids })
                })
                .ok_or((-5, "Block not found"))
        }
        "getrawtransaction" => {
            let id = p[0].as_str().and_then(txid);
            let found = id.and_then(|t| s.chain().txs.get(&t).map(|(tx, _)| tx.clone()));
            match (found, p[1].as_bool().unwrap_or(false)) {
                (None, _) => Err(no_tx),
                (Some(tx), false) => Ok(json!(bitcoin::consensus::encode::serialize_hex(&tx))),
                (Some(tx), true) => Ok(json!({
                    "txid": tx.compute_txid().to_string(),
                    "confirmations": s.confirmations(&tx.compute_txid()),
                })),
            }
        }
        "gettxout" => {
            let outpoint = p[0]
                .as_str()
                .and_then(txid)
                .zip(p[1].as_u64())
                .map(|(t, v)| OutPoint::new(t, v as u32));
            Ok(match outpoint.and_then(|o| s.unspent(&o)) {
                None => Value::Null,
                Some((out, confirmations)) => {
                    // bitcoind writes the value as a JSON number of BTC.
                    let btc: Value = serde_json::from_str(&format!(
                        "{}",
                        out.value.display_in(bitcoin::Denomination::Bitcoin)
                    ))
                    .expect("a decimal number");
                    json!({
                        "value": btc,
                        "confirmations": confirmations,
                        "scriptPubKey": { "hex": out.script_pubkey.to_hex_string() },
                    })
                }
            })
        }
        _ => Err((-32601, "Method not found")),
    };
    rpc(result)
}

/// Start the stand-in on a free loopback port. Returns the chain and the
/// base URL, which serves Esplora's paths and, at `/`, bitcoind's RPC.
pub async fn start() -> (Arc<StandInChain>, String) {
    let chain: Shared = Arc::default();
    let app = Router::new()
        .route("/", post(json_rpc))
        .route("/blocks/tip/height", get(tip))
        .route("/block-height/{h}", get(block_at))
        .route("/block/{hash}/txid/{index}", get(txid_at))
        .route("/tx/{txid}/hex", get(tx_hex))
        .route("/tx/{txid}/status", get(tx_status))
        .route("/tx/{txid}/outspend/{vout}", get(outspend))
        .with_state(chain.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (chain, format!("http://{addr}"))
}
