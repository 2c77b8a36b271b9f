//! # civkit-http
//!
//! One small HTTP client for the services that reach outside systems (payment
//! nodes, Mainstay, chain sources). It sits beside the framework crate, which
//! itself does no I/O. Calls run ureq on the blocking pool, so they never
//! stall the async runtime; every [`Error`] names the URL.

#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::Value;

/// What a caller can do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No answer (connection, TLS, timeout): retrying later may work.
    Unreachable,
    /// The server answered with an error status.
    Refused,
    /// The server answered, but not with what was asked for.
    BadAnswer,
}

/// A failed request, naming its URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("bad answer from {url}: {message}")]
    BadAnswer { url: String, message: String },
}

impl Error {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unreachable { .. } => ErrorKind::Unreachable,
            Error::Status { .. } => ErrorKind::Refused,
            Error::BadAnswer { .. } => ErrorKind::BadAnswer,
        }
    }
}

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
    pub async fn text(self) -> Result<String, Error> {
        let url = self.url.clone();
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
            let url = self.url;
            match resp {
                Ok(r) => r.into_string().map_err(|e| Error::BadAnswer {
                    url,
                    message: e.to_string(),
                }),
                Err(ureq::Error::Status(status, r)) => Err(Error::Status {
                    url,
                    status,
                    body: r.into_string().unwrap_or_default(),
                }),
                Err(e) => Err(Error::Unreachable {
                    url,
                    message: e.to_string(),
                }),
            }
        })
        .await
        .map_err(|e| Error::Unreachable {
            url,
            message: e.to_string(),
        })?
    }

    /// The response body as JSON.
    pub async fn send(self) -> Result<Value, Error> {
        let url = self.url.clone();
        let text = self.text().await?;
        serde_json::from_str(&text).map_err(|e| Error::BadAnswer {
            url,
            message: format!("not JSON: {e}"),
        })
    }
}
