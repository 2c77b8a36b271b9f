//! The Mainstay API, as documented: `POST {url}/commitment/send` with
//! `{"commitment", "position", "token"}`, and
//! `GET {url}/commitment/latestproof?position=N` answering a slot proof.

use std::time::Duration;

use serde_json::{json, Value};

use crate::proof::SlotProof;

/// A Mainstay API endpoint and slot.
#[derive(Debug, Clone)]
pub struct Mainstay {
    pub url: String,
    pub position: u64,
    pub token: String,
}

async fn call(method: &'static str, url: String, body: Option<Value>) -> Result<Value, String> {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .build();
        let req = agent.request(method, &url);
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match resp {
            Ok(r) => r
                .into_json::<Value>()
                .map_err(|e| format!("bad JSON from {url}: {e}")),
            Err(ureq::Error::Status(code, r)) => Err(format!(
                "{url} answered {code}: {}",
                r.into_string().unwrap_or_default()
            )),
            Err(e) => Err(format!("{url}: {e}")),
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

impl Mainstay {
    /// Send a 64-hex commitment to our slot.
    pub async fn send(&self, commitment: &str) -> Result<(), String> {
        let body =
            json!({ "commitment": commitment, "position": self.position, "token": self.token });
        let v = call("POST", format!("{}/commitment/send", self.url), Some(body)).await?;
        match v.get("error") {
            Some(e) if !e.is_null() => Err(format!("Mainstay refused the commitment: {e}")),
            _ => Ok(()),
        }
    }

    /// The latest attested proof of our slot, if any.
    pub async fn latest_proof(&self) -> Result<Option<SlotProof>, String> {
        let v = call(
            "GET",
            format!(
                "{}/commitment/latestproof?position={}",
                self.url, self.position
            ),
            None,
        )
        .await?;
        let body = v.get("response").cloned().unwrap_or(v);
        if body.is_null() || body.get("merkle_root").is_none() {
            return Ok(None);
        }
        serde_json::from_value(body)
            .map(Some)
            .map_err(|e| format!("the proof is not a slot proof: {e}"))
    }
}
