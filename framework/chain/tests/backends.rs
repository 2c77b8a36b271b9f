//! Both backends against the stand-in chain, on the same real blocks: a
//! 2-of-2 P2WSH funding output found by its short channel id position,
//! followed until it is spent; and hostile answers refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Amount, OutPoint, ScriptBuf, TxOut, Txid};
use civkit_chain::stand_in::{self, RPC_PASSWORD, RPC_USER};
use civkit_chain::{BitcoindRpc, ChainSource, Error, Esplora};

fn backends(url: &str) -> Vec<(&'static str, Arc<dyn ChainSource>)> {
    vec![
        (
            "esplora",
            Arc::new(Esplora {
                url: url.to_string(),
            }),
        ),
        (
            "bitcoind",
            Arc::new(BitcoindRpc {
                url: url.to_string(),
                user: RPC_USER.into(),
                password: RPC_PASSWORD.into(),
            }),
        ),
    ]
}

/// The BOLT3 funding script of two keys.
fn funding_script() -> ScriptBuf {
    let secp = Secp256k1::new();
    let key =
        |b: u8| bitcoin::PublicKey::new(SecretKey::from_slice(&[b; 32]).unwrap().public_key(&secp));
    let (mut a, mut b) = (key(1), key(2));
    if a.inner.serialize() > b.inner.serialize() {
        std::mem::swap(&mut a, &mut b);
    }
    bitcoin::script::Builder::new()
        .push_int(2)
        .push_key(&a)
        .push_key(&b)
        .push_int(2)
        .push_opcode(bitcoin::opcodes::all::OP_CHECKMULTISIG)
        .into_script()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_read_the_same_chain() {
    let (chain, url) = stand_in::start().await;
    chain.mine_empty(3);
    let redeem = funding_script();
    let funding = stand_in::spending(
        OutPoint::new(Txid::all_zeros(), 7),
        vec![
            TxOut {
                value: Amount::from_sat(1_234_567),
                script_pubkey: ScriptBuf::new_p2wsh(&redeem.wscript_hash()),
            },
            // The most any output can hold: read back to the satoshi.
            TxOut {
                value: Amount::from_sat(2_099_999_999_999_999),
                script_pubkey: ScriptBuf::new_op_return([]),
            },
        ],
    );
    let (height, hash) = chain.mine(vec![funding.clone()]);
    chain.mine_empty(5);
    let txid = funding.compute_txid();
    let outpoint = OutPoint::new(txid, 0);
    for (name, b) in backends(&url) {
        assert_eq!(b.tip_height().await.unwrap(), 8, "{name}");
        assert_eq!(b.block_hash(height).await.unwrap(), hash, "{name}");
        let (found, tx) = civkit_chain::transaction_at(b.as_ref(), height, 1)
            .await
            .unwrap();
        assert_eq!((found, &tx), (txid, &funding), "{name}");
        assert_eq!(b.confirmations(&txid).await.unwrap(), 6, "{name}");
        let out = b.unspent_output(&outpoint).await.unwrap().expect(name);
        assert_eq!(out.value, Amount::from_sat(1_234_567), "{name}");
        assert!(out.script_pubkey.is_p2wsh(), "{name}");
        assert!(
            matches!(b.block_hash(99).await, Err(Error::NotFound(_))),
            "{name}"
        );
        assert!(
            matches!(
                b.transaction(&Txid::all_zeros()).await,
                Err(Error::NotFound(_))
            ),
            "{name}"
        );
    }

    // The channel closes: the output is spent, and both backends say so.
    let follower = civkit_chain::follow(backends(&url)[0].1.clone(), Duration::from_millis(50));
    let mut tips = follower.clone();
    tips.wait_for(|t| t.is_some_and(|t| t.height == 8))
        .await
        .unwrap();
    chain.mine(vec![stand_in::spending(
        outpoint,
        vec![TxOut {
            value: Amount::from_sat(1_000_000),
            script_pubkey: ScriptBuf::new_op_return([]),
        }],
    )]);
    tips.wait_for(|t| t.is_some_and(|t| t.height == 9))
        .await
        .unwrap();
    for (name, b) in backends(&url) {
        assert_eq!(b.unspent_output(&outpoint).await.unwrap(), None, "{name}");
        // The other output is still there, to the satoshi.
        let other = b.unspent_output(&OutPoint::new(txid, 1)).await.unwrap();
        assert_eq!(
            other.map(|o| o.value),
            Some(Amount::from_sat(2_099_999_999_999_999)),
            "{name}"
        );
    }
}

/// A chain source that lies, stalls on nothing, and answers garbage.
async fn liar() -> String {
    use axum::routing::{get, post};
    let other = stand_in::spending(OutPoint::new(Txid::all_zeros(), 1), vec![]);
    let hex = bitcoin::consensus::encode::serialize_hex(&other);
    let app = axum::Router::new()
        .route("/blocks/tip/height", get(|| async { "not a number" }))
        .route("/block-height/{h}", get(|| async { "zz" }))
        .route("/tx/{txid}/hex", get(move || async move { hex }))
        .route("/tx/{txid}/outspend/{vout}", get(|| async { "{}" }))
        .route(
            "/",
            post(|| async {
                axum::Json(serde_json::json!({ "result": "deadbeef", "error": null }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn lies_and_garbage_are_bad_answers() {
    let url = liar().await;
    let txid = Txid::from_byte_array([9; 32]);
    fn bad<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
        matches!(r, Err(Error::BadAnswer(_)))
    }
    for (name, b) in backends(&url) {
        let tip = b.tip_height().await;
        assert!(bad(&tip), "{name}: {tip:?}");
        let tx = b.transaction(&txid).await;
        assert!(bad(&tx), "{name}: another transaction was taken: {tx:?}");
        let hash = b.block_hash(1).await;
        assert!(bad(&hash), "{name}: {hash:?}");
        let out = b.unspent_output(&OutPoint::new(txid, 0)).await;
        assert!(bad(&out), "{name}: {out:?}");
    }
    // Wrong RPC credentials: refused, not mistaken for an answer.
    let (_chain, url) = stand_in::start().await;
    let wrong = BitcoindRpc {
        url,
        user: RPC_USER.into(),
        password: "guess".into(),
    };
    assert!(matches!(
        wrong.tip_height().await,
        Err(Error::Unreachable(civkit_http::Error::Status {
            status: 401,
            ..
        }))
    ));
}
