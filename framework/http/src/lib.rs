//! # civkit-http
//!
//! One small HTTP client for the services that reach outside systems (payment
//! nodes, Mainstay, chain sources). It sits beside the framework crate, which
//! itself does no I/O. Calls run ureq on the blocking pool, so they never
//! stall the async runtime; every error is a message naming the URL.

#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::Value;

/// A request: method, URL, extra headers, optional JSON body.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub timeout: Duration,
}

impl Request {
    /// A request with no headers or body and a 20-second timeout.
    pub fn new(method: &'static str, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(20),
        }
    }
    /// Add a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    /// Send `body` as JSON.
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// The response body as text.
    pub async fn text(self) -> Result<String, String> {
        tokio::task::spawn_blocking(move || {
            let agent = ureq::AgentBuilder::new().timeout(self.timeout).build();
            let mut req = agent.request(self.method, &self.url);
            for (k, v) in &self.headers {
                req = req.set(k, v);
            }
            let resp = match self.body {
                Some(b) => req.send_json(b),
                None => req.call(),
            };
            match resp {
                Ok(r) => r.into_string().map_err(|e| format!("{}: {e}", self.url)),
                Err(ureq::Error::Status(code, r)) => Err(format!(
                    "{} answered {code}: {}",
                    self.url,
                    r.into_string().unwrap_or_default()
                )),
                Err(e) => Err(format!("{}: {e}", self.url)),
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The response body as JSON.
    pub async fn send(self) -> Result<Value, String> {
        let url = self.url.clone();
        let text = self.text().await?;
        serde_json::from_str(&text).map_err(|e| format!("bad JSON from {url}: {e}"))
    }
}
