//! Lightning payment backends: create an invoice, then ask whether it was paid.
//!
//! - LND over its REST API (`POST /v1/invoices`, `GET /v1/invoice/{r_hash}`,
//!   macaroon in `Grpc-Metadata-macaroon`);
//! - Core Lightning over clnrest (`POST /v1/invoice`, `POST /v1/listinvoices`,
//!   rune in the `Rune` header);
//! - `free`, for local testing only: every invoice counts as paid.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use civkit_framework::{Error, Result};
use serde_json::{json, Value};

/// An invoice to show the buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub bolt11: String,
    /// Payment hash, hex.
    pub payment_hash: String,
}

/// A Lightning node that takes payments for the board.
#[async_trait]
pub trait PaymentBackend: Send + Sync + 'static {
    /// A short name for logs and NIP-11.
    fn name(&self) -> &'static str;
    /// Create an invoice for `amount_msat`.
    async fn create_invoice(
        &self,
        amount_msat: u64,
        memo: &str,
        expiry_secs: u64,
    ) -> Result<Invoice>;
    /// True once the invoice with this payment hash is paid.
    async fn is_paid(&self, payment_hash: &str) -> Result<bool>;
}

/// `[services.<name>.payment]`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentConfig {
    /// `lnd`, `cln` or `free` (testing only; must be chosen explicitly).
    pub backend: String,
    /// Base URL of the node's REST API, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// LND: file holding the invoice macaroon (binary or hex).
    pub macaroon_file: String,
    /// Core Lightning: file holding a rune allowed to call `invoice` and `listinvoices`.
    pub rune_file: String,
    /// The node's own TLS certificate (LND's `tls.cert`, clnrest's
    /// certificate), relative to node.data_dir: trusted alone, for this
    /// backend only; any other certificate is refused. Empty: web-PKI roots.
    pub tls_cert_file: String,
}

fn backend_err(backend: &str, e: impl std::fmt::Display) -> Error {
    Error::Service {
        instance: format!("payment/{backend}"),
        message: e.to_string(),
    }
}

/// Build the configured backend. `key` is the config path for errors.
pub fn from_config(
    cfg: &PaymentConfig,
    data_dir: &std::path::Path,
    key: &str,
) -> Result<Arc<dyn PaymentBackend>> {
    let read = |file: &str, what: &str| -> Result<String> {
        if file.is_empty() {
            return Err(Error::config(
                format!("{key}.{what}"),
                "is required for this backend",
            ));
        }
        // A macaroon or rune is a credential: refused when others may read it.
        let bytes = civkit_framework::keyfile::read_private_bytes(&data_dir.join(file))
            .map_err(|e| Error::config(format!("{key}.{what}"), e))?;
        Ok(match std::str::from_utf8(&bytes) {
            Ok(t) if t.trim().chars().all(|c| c.is_ascii_hexdigit()) => t.trim().to_string(),
            Ok(t) if what == "rune_file" => t.trim().to_string(),
            _ => hex::encode(bytes),
        })
    };
    let api = || -> Result<Api> {
        if cfg.url.is_empty() {
            return Err(Error::config(
                format!("{key}.url"),
                "is required for this backend",
            ));
        }
        let pinned = if cfg.tls_cert_file.is_empty() {
            None
        } else {
            if !cfg.url.starts_with("https://") {
                return Err(Error::config(
                    format!("{key}.tls_cert_file"),
                    "is set, so url must start with https://",
                ));
            }
            let cert = civkit_http::PinnedCert::from_file(&data_dir.join(&cfg.tls_cert_file))
                .map_err(|e| Error::config(format!("{key}.tls_cert_file"), e))?;
            Some(cert)
        };
        Ok(Api {
            url: cfg.url.trim_end_matches('/').to_string(),
            pinned,
        })
    };
    match cfg.backend.as_str() {
        "lnd" => Ok(Arc::new(Lnd {
            api: api()?,
            macaroon: read(&cfg.macaroon_file, "macaroon_file")?,
        })),
        "cln" => Ok(Arc::new(Cln {
            api: api()?,
            rune: read(&cfg.rune_file, "rune_file")?,
        })),
        "free" => {
            tracing::warn!("credentials use the `free` payment backend: invoices are never charged (testing only)");
            Ok(Arc::new(Free))
        }
        "" => Err(Error::config(
            format!("{key}.backend"),
            "choose lnd, cln or free",
        )),
        other => Err(Error::config(
            format!("{key}.backend"),
            format!("unknown backend `{other}` (lnd, cln, free)"),
        )),
    }
}

/// A node's REST API: its base URL, and the certificate it must present.
struct Api {
    url: String,
    pinned: Option<civkit_http::PinnedCert>,
}

impl Api {
    async fn call(
        &self,
        method: &'static str,
        path: &str,
        auth: (&'static str, &str),
        body: Option<Value>,
    ) -> std::result::Result<Value, civkit_http::Error> {
        let mut req = civkit_http::Request::new(method, format!("{}{path}", self.url))
            .header(auth.0, auth.1)
            .trust_only(self.pinned.as_ref());
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await
    }
}

/// LND's REST API.
pub struct Lnd {
    api: Api,
    macaroon: String,
}

#[async_trait]
impl PaymentBackend for Lnd {
    fn name(&self) -> &'static str {
        "lnd"
    }
    async fn create_invoice(
        &self,
        amount_msat: u64,
        memo: &str,
        expiry_secs: u64,
    ) -> Result<Invoice> {
        let body = json!({ "value_msat": amount_msat.to_string(), "memo": memo, "expiry": expiry_secs.to_string() });
        let v = self
            .api
            .call(
                "POST",
                "/v1/invoices",
                ("Grpc-Metadata-macaroon", &self.macaroon),
                Some(body),
            )
            .await
            .map_err(|e| backend_err("lnd", e))?;
        let r_hash = v["r_hash"]
            .as_str()
            .ok_or_else(|| backend_err("lnd", "no r_hash in AddInvoice answer"))?;
        let hash = base64::engine::general_purpose::STANDARD
            .decode(r_hash)
            .map_err(|e| backend_err("lnd", format!("r_hash is not base64: {e}")))?;
        Ok(Invoice {
            bolt11: v["payment_request"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            payment_hash: hex::encode(hash),
        })
    }
    async fn is_paid(&self, payment_hash: &str) -> Result<bool> {
        let v = self
            .api
            .call(
                "GET",
                &format!("/v1/invoice/{payment_hash}"),
                ("Grpc-Metadata-macaroon", &self.macaroon),
                None,
            )
            .await
            .map_err(|e| backend_err("lnd", e))?;
        Ok(v["state"] == "SETTLED" || v["settled"] == true)
    }
}

/// Core Lightning's clnrest API.
pub struct Cln {
    api: Api,
    rune: String,
}

#[async_trait]
impl PaymentBackend for Cln {
    fn name(&self) -> &'static str {
        "cln"
    }
    async fn create_invoice(
        &self,
        amount_msat: u64,
        memo: &str,
        expiry_secs: u64,
    ) -> Result<Invoice> {
        let mut label = [0u8; 16];
        getrandom(&mut label);
        let body = json!({ "amount_msat": amount_msat, "label": format!("civkit-{}", hex::encode(label)), "description": memo, "expiry": expiry_secs });
        let v = self
            .api
            .call("POST", "/v1/invoice", ("Rune", &self.rune), Some(body))
            .await
            .map_err(|e| backend_err("cln", e))?;
        Ok(Invoice {
            bolt11: v["bolt11"].as_str().unwrap_or_default().to_string(),
            payment_hash: v["payment_hash"]
                .as_str()
                .ok_or_else(|| backend_err("cln", "no payment_hash in invoice answer"))?
                .to_string(),
        })
    }
    async fn is_paid(&self, payment_hash: &str) -> Result<bool> {
        let v = self
            .api
            .call(
                "POST",
                "/v1/listinvoices",
                ("Rune", &self.rune),
                Some(json!({ "payment_hash": payment_hash })),
            )
            .await
            .map_err(|e| backend_err("cln", e))?;
        Ok(v["invoices"]
            .as_array()
            .is_some_and(|i| i.iter().any(|inv| inv["status"] == "paid")))
    }
}

/// Testing only: invoices are free and count as paid at once.
pub struct Free;

#[async_trait]
impl PaymentBackend for Free {
    fn name(&self) -> &'static str {
        "free"
    }
    async fn create_invoice(
        &self,
        _amount_msat: u64,
        _memo: &str,
        _expiry_secs: u64,
    ) -> Result<Invoice> {
        let mut hash = [0u8; 32];
        getrandom(&mut hash);
        Ok(Invoice {
            bolt11: "free (testing backend: nothing to pay)".into(),
            payment_hash: hex::encode(hash),
        })
    }
    async fn is_paid(&self, _payment_hash: &str) -> Result<bool> {
        Ok(true)
    }
}

fn getrandom(buf: &mut [u8]) {
    // Labels and test hashes only need to be unique; fall back to the clock.
    if ::getrandom::getrandom(buf).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        buf.iter_mut()
            .zip(t.to_le_bytes().iter().cycle())
            .for_each(|(b, t)| *b = *t);
    }
}
