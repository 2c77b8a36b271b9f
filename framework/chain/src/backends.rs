//! The two backends of [`ChainSource`]: bitcoind's JSON-RPC and Esplora.

use std::str::FromStr;

use async_trait::async_trait;
use bitcoin::{Amount, BlockHash, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use serde_json::{json, Value};

use crate::{ChainSource, Error, Result};

fn bad(what: impl std::fmt::Display) -> Error {
    Error::BadAnswer(what.to_string())
}

/// A transaction from its hex, checked to be `txid`.
fn checked_tx(hex_tx: &str, txid: &Txid) -> Result<Transaction> {
    let tx: Transaction = bitcoin::consensus::encode::deserialize_hex(hex_tx.trim())
        .map_err(|e| bad(format!("not a transaction: {e}")))?;
    if tx.compute_txid() != *txid {
        return Err(bad(format!("asked for {txid}, got {}", tx.compute_txid())));
    }
    Ok(tx)
}

fn parse<T: FromStr>(text: &str, what: &str) -> Result<T> {
    text.trim()
        .parse()
        .map_err(|_| bad(format!("{what} is not valid: {:.80}", text.trim())))
}

/// bitcoind's JSON-RPC, with the RPC user and password (`-rpcauth`).
/// `getrawtransaction` needs `-txindex` for transactions outside the
/// mempool.
#[derive(Debug, Clone)]
pub struct BitcoindRpc {
    pub url: String,
    pub user: String,
    pub password: String,
}

impl BitcoindRpc {
    async fn call(&self, method: &str, params: Value) -> Result<Value> {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        let body = json!({ "jsonrpc": "1.0", "id": "civkit", "method": method, "params": params });
        let req = civkit_http::Request::new("POST", self.url.clone())
            .header("Authorization", format!("Basic {basic}"))
            .json(body);
        // bitcoind answers RPC errors with HTTP 404/500 and a JSON body.
        let text = match req.text().await {
            Ok(t) => t,
            Err(civkit_http::Error::Status { body, .. }) if body.trim_start().starts_with('{') => {
                body
            }
            Err(e) => return Err(e.into()),
        };
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("bitcoind answered non-JSON: {e}")))?;
        match &v["error"] {
            Value::Null => Ok(v["result"].clone()),
            // -5: no such transaction; -8: height out of range.
            e if matches!(e["code"].as_i64(), Some(-5) | Some(-8)) => Err(Error::NotFound(
                e["message"].as_str().unwrap_or("not found").to_string(),
            )),
            e => Err(bad(format!("bitcoind {method}: {e}"))),
        }
    }
}

#[async_trait]
impl ChainSource for BitcoindRpc {
    async fn tip_height(&self) -> Result<u64> {
        self.call("getblockcount", json!([]))
            .await?
            .as_u64()
            .ok_or_else(|| bad("getblockcount: not a number"))
    }
    async fn block_hash(&self, height: u64) -> Result<BlockHash> {
        let v = self.call("getblockhash", json!([height])).await?;
        parse(v.as_str().unwrap_or(""), "a block hash")
    }
    async fn txid_at(&self, block: &BlockHash, index: u32) -> Result<Txid> {
        let v = self.call("getblock", json!([block.to_string(), 1])).await?;
        let txid = v["tx"]
            .as_array()
            .ok_or_else(|| bad("getblock: no tx list"))?
            .get(index as usize)
            .ok_or_else(|| Error::NotFound(format!("block {block} has no transaction {index}")))?;
        parse(txid.as_str().unwrap_or(""), "a txid")
    }
    async fn transaction(&self, txid: &Txid) -> Result<Transaction> {
        let v = self
            .call("getrawtransaction", json!([txid.to_string(), false]))
            .await?;
        checked_tx(v.as_str().ok_or_else(|| bad("no transaction hex"))?, txid)
    }
    async fn confirmations(&self, txid: &Txid) -> Result<u64> {
        let v = self
            .call("getrawtransaction", json!([txid.to_string(), true]))
            .await?;
        Ok(v["confirmations"].as_u64().unwrap_or(0))
    }
    async fn unspent_output(&self, outpoint: &OutPoint) -> Result<Option<TxOut>> {
        let v = self
            .call(
                "gettxout",
                json!([outpoint.txid.to_string(), outpoint.vout, false]),
            )
            .await?;
        if v.is_null() {
            return Ok(None);
        }
        // The value is in BTC as a JSON number. Every amount up to 21
        // million BTC is below 2^53 satoshis, so the nearest float times
        // 10^8, rounded, is the exact number of satoshis.
        let value = v["value"]
            .as_f64()
            .filter(|b| b.is_finite() && (0.0..=21e6).contains(b))
            .map(|b| Amount::from_sat((b * 1e8).round() as u64))
            .ok_or_else(|| bad(format!("gettxout value: {}", v["value"])))?;
        let script = v["scriptPubKey"]["hex"]
            .as_str()
            .and_then(|h| ScriptBuf::from_hex(h).ok())
            .ok_or_else(|| bad("gettxout: no scriptPubKey hex"))?;
        Ok(Some(TxOut {
            value,
            script_pubkey: script,
        }))
    }
}

/// An Esplora REST server (Blockstream's or mempool.space's API).
#[derive(Debug, Clone)]
pub struct Esplora {
    pub url: String,
}

impl Esplora {
    async fn get(&self, path: &str) -> Result<String> {
        let url = format!("{}/{path}", self.url.trim_end_matches('/'));
        match civkit_http::Request::new("GET", url).text().await {
            Ok(t) => Ok(t),
            Err(civkit_http::Error::Status { status: 404, .. }) => {
                Err(Error::NotFound(path.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
    async fn json(&self, path: &str) -> Result<Value> {
        serde_json::from_str(&self.get(path).await?)
            .map_err(|e| bad(format!("{path} is not JSON: {e}")))
    }
}

#[async_trait]
impl ChainSource for Esplora {
    async fn tip_height(&self) -> Result<u64> {
        parse(&self.get("blocks/tip/height").await?, "the tip height")
    }
    async fn block_hash(&self, height: u64) -> Result<BlockHash> {
        parse(
            &self.get(&format!("block-height/{height}")).await?,
            "a block hash",
        )
    }
    async fn txid_at(&self, block: &BlockHash, index: u32) -> Result<Txid> {
        parse(
            &self.get(&format!("block/{block}/txid/{index}")).await?,
            "a txid",
        )
    }
    async fn transaction(&self, txid: &Txid) -> Result<Transaction> {
        checked_tx(&self.get(&format!("tx/{txid}/hex")).await?, txid)
    }
    async fn confirmations(&self, txid: &Txid) -> Result<u64> {
        let status = self.json(&format!("tx/{txid}/status")).await?;
        let Some(height) = status["block_height"]
            .as_u64()
            .filter(|_| status["confirmed"] == true)
        else {
            return Ok(0);
        };
        Ok(self.tip_height().await?.saturating_sub(height) + 1)
    }
    async fn unspent_output(&self, outpoint: &OutPoint) -> Result<Option<TxOut>> {
        let spend = self
            .json(&format!("tx/{}/outspend/{}", outpoint.txid, outpoint.vout))
            .await?;
        match spend["spent"].as_bool() {
            Some(false) => {}
            Some(true) => return Ok(None),
            None => return Err(bad("outspend: no `spent`")),
        }
        let tx = match self.transaction(&outpoint.txid).await {
            Ok(tx) => tx,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(tx.output.get(outpoint.vout as usize).cloned())
    }
}
