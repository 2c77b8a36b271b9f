//! Attestation and staychain checks through stand-in bitcoind (JSON-RPC)
//! and Esplora (REST) servers serving transactions built here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use civkit_mainstay::chain::{
    self, BitcoindRpc, ChainSource, Esplora, MAINNET_BASE_KEY, MAINNET_CHAIN_CODE,
};
use serde_json::{json, Value};

/// Raw transactions by txid, with the height of the block that holds them.
type Txs = Arc<HashMap<String, (String, u64)>>;

/// The chain tip of the stand-ins.
const TIP: u64 = 100;

async fn rpc(
    State(txs): State<Txs>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    // "civkit:secret" in basic auth.
    if headers.get("Authorization").and_then(|v| v.to_str().ok())
        != Some("Basic Y2l2a2l0OnNlY3JldA==")
    {
        return Err(StatusCode::UNAUTHORIZED);
    }
    assert_eq!(body["method"], "getrawtransaction");
    let txid = body["params"][0].as_str().unwrap_or_default();
    let verbose = body["params"][1] == true;
    Ok(Json(match txs.get(txid) {
        Some((hex, height)) if verbose => {
            json!({ "result": { "hex": hex, "confirmations": TIP - height + 1 }, "error": null, "id": "civkit" })
        }
        Some((hex, _)) => json!({ "result": hex, "error": null, "id": "civkit" }),
        None => {
            json!({ "result": null, "error": { "code": -5, "message": "No such transaction" }, "id": "civkit" })
        }
    }))
}

async fn esplora(State(txs): State<Txs>, Path(txid): Path<String>) -> Result<String, StatusCode> {
    txs.get(&txid)
        .map(|t| t.0.clone())
        .ok_or(StatusCode::NOT_FOUND)
}

async fn esplora_status(
    State(txs): State<Txs>,
    Path(txid): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    let (_, height) = txs.get(&txid).ok_or(StatusCode::NOT_FOUND)?;
    Ok(Json(json!({ "confirmed": true, "block_height": height })))
}

async fn serve(txs: Txs) -> String {
    let app = Router::new()
        .route("/", post(rpc))
        .route("/tx/{txid}/hex", get(esplora))
        .route("/tx/{txid}/status", get(esplora_status))
        .route("/blocks/tip/height", get(|| async { TIP.to_string() }))
        .with_state(txs);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

fn tx(spends: Txid, pays: ScriptBuf, outputs: usize) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: spends,
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: (0..outputs)
            .map(|_| TxOut {
                value: Amount::from_sat(10_000),
                script_pubkey: pays.clone(),
            })
            .collect(),
    }
}

const ROOT0: &str = "3ea94460d201a1c1a6bd1da3e5c5e1e4f8b1b1d1c1a1a1a1a1a1a1a1a1a1a1a1";
const ROOT1: &str = "a43a0fdf839705254ea230e4ae0b2076685b37e00ed73bb0f4c35c687bb0f608";

fn pays_to(root: &str) -> ScriptBuf {
    let key = chain::tweaked_key(MAINNET_BASE_KEY, MAINNET_CHAIN_CODE, root).unwrap();
    chain::paying_scripts(&key)[2].clone() // P2SH 1-of-1 multisig, as the staychain uses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestations_and_the_staychain_check_through_bitcoind_and_esplora() {
    let genesis_input: Txid = "5222ffe08bfd4ca0db30d261b2d54d0b6e3faed5276be422e5e6ac32c450ccd7"
        .parse()
        .unwrap();
    let t0 = tx(genesis_input, pays_to(ROOT0), 1);
    let t1 = tx(t0.compute_txid(), pays_to(ROOT1), 1);
    // Anyone can pay the tweaked key; this one is not on the slot's staychain.
    let elsewhere: Txid = "11".repeat(32).parse().unwrap();
    let stray = tx(elsewhere, pays_to(ROOT1), 1);
    let two_outputs = tx(t0.compute_txid(), pays_to(ROOT1), 2);
    let hex = |t: &Transaction| bitcoin::consensus::encode::serialize_hex(t);
    let mut map = HashMap::new();
    for (t, height) in [(&t0, 91), (&t1, TIP), (&stray, 95), (&two_outputs, 96)] {
        map.insert(t.compute_txid().to_string(), (hex(t), height));
    }
    map.insert("00".repeat(32), ("not a transaction".into(), 1));
    let url = serve(Arc::new(map)).await;
    let sources: Vec<Box<dyn ChainSource>> = vec![
        Box::new(BitcoindRpc {
            url: url.clone(),
            user: "civkit".into(),
            password: "secret".into(),
        }),
        Box::new(Esplora { url: url.clone() }),
    ];
    let (id0, id1) = (t0.compute_txid().to_string(), t1.compute_txid().to_string());
    for s in &sources {
        let s = s.as_ref();
        chain::check_attestation(s, MAINNET_BASE_KEY, MAINNET_CHAIN_CODE, &id1, ROOT1, 1)
            .await
            .unwrap();
        let shallow =
            chain::check_attestation(s, MAINNET_BASE_KEY, MAINNET_CHAIN_CODE, &id1, ROOT1, 2).await;
        assert!(
            shallow
                .unwrap_err()
                .to_string()
                .contains("1 confirmation(s)"),
            "too few confirmations"
        );
        let wrong =
            chain::check_attestation(s, MAINNET_BASE_KEY, MAINNET_CHAIN_CODE, &id1, ROOT0, 1).await;
        assert!(
            wrong.unwrap_err().to_string().contains("does not pay"),
            "another root is refused"
        );
        let two = two_outputs.compute_txid().to_string();
        assert!(
            chain::check_attestation(s, MAINNET_BASE_KEY, MAINNET_CHAIN_CODE, &two, ROOT1, 1)
                .await
                .unwrap_err()
                .to_string()
                .contains("2 outputs")
        );
        let start = genesis_input.to_string();
        chain::check_staychain(s, &[id1.clone(), id0.clone()], &start, 100)
            .await
            .unwrap();
        // One attestation is walked back to the start too.
        chain::check_staychain(s, std::slice::from_ref(&id1), &start, 100)
            .await
            .unwrap();
        // A transaction paying the tweaked key but off the slot's staychain.
        let forged =
            chain::check_staychain(s, &[stray.compute_txid().to_string()], &start, 100).await;
        assert!(
            forged.is_err(),
            "an attestation off the staychain is refused"
        );
        let reordered = chain::check_staychain(s, &[id0.clone(), id1.clone()], &start, 100).await;
        assert!(reordered
            .unwrap_err()
            .to_string()
            .contains("is not on the staychain"));
        let short = chain::check_staychain(s, std::slice::from_ref(&id1), &start, 1).await;
        assert!(short.unwrap_err().to_string().contains("within 1"));
        assert!(
            s.transaction(&"00".repeat(32).parse().unwrap())
                .await
                .is_err(),
            "garbage is an error"
        );
        assert!(
            s.transaction(&"11".repeat(32).parse().unwrap())
                .await
                .is_err(),
            "unknown txid is an error"
        );
    }
    let bad_auth = BitcoindRpc {
        url,
        user: "civkit".into(),
        password: "wrong".into(),
    };
    assert!(bad_auth
        .transaction(&id0.parse().unwrap())
        .await
        .unwrap_err()
        .to_string()
        .contains("401"));
}

#[test]
fn the_tweak_follows_the_root_and_differs_per_root() {
    let a = chain::tweaked_key(MAINNET_BASE_KEY, MAINNET_CHAIN_CODE, ROOT1).unwrap();
    let b = chain::tweaked_key(MAINNET_BASE_KEY, MAINNET_CHAIN_CODE, ROOT1).unwrap();
    let c = chain::tweaked_key(MAINNET_BASE_KEY, MAINNET_CHAIN_CODE, ROOT0).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(chain::tweaked_key(MAINNET_BASE_KEY, MAINNET_CHAIN_CODE, "abcd").is_err());
}
