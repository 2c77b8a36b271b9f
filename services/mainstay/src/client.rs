//! The Mainstay API, as documented: `POST {url}/commitment/send` with
//! `{"commitment", "position", "token"}`, and
//! `GET {url}/commitment/latestproof?position=N` answering a slot proof.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::proof::SlotProof;

/// A Mainstay API endpoint and slot.
#[derive(Debug, Clone)]
pub struct Mainstay {
    pub url: String,
    pub position: u64,
    pub token: String,
}

async fn call(method: &'static str, url: String, body: Option<Value>) -> Result<Value> {
    let req = civkit_http::Request::new(method, url);
    Ok(match body {
        Some(b) => req.json(b).send().await?,
        None => req.send().await?,
    })
}

impl Mainstay {
    /// Send a 64-hex commitment to our slot.
    pub async fn send(&self, commitment: &str) -> Result<()> {
        let body =
            json!({ "commitment": commitment, "position": self.position, "token": self.token });
        let v = call("POST", format!("{}/commitment/send", self.url), Some(body)).await?;
        match v.get("error") {
            Some(e) if !e.is_null() => Err(Error::BadAnswer(format!(
                "Mainstay refused the commitment: {e}"
            ))),
            _ => Ok(()),
        }
    }

    /// The latest attested proof of our slot, if any.
    pub async fn latest_proof(&self) -> Result<Option<SlotProof>> {
        let v = call(
            "GET",
            format!(
                "{}/commitment/latestproof?position={}",
                self.url, self.position
            ),
            None,
        )
        .await?;
        proof_from_answer(v)
    }
}

/// The slot proof in an answer of `commitment/latestproof` (bare, or under
/// `response`); `None` when there is none yet.
pub fn proof_from_answer(v: Value) -> Result<Option<SlotProof>> {
    let body = v.get("response").cloned().unwrap_or(v);
    if body.is_null() || body.get("merkle_root").is_none() {
        return Ok(None);
    }
    serde_json::from_value(body)
        .map(Some)
        .map_err(|e| Error::BadAnswer(format!("the proof is not a slot proof: {e}")))
}
