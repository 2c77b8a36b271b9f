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
    /// Trust only this certificate (none: web-PKI roots).
    pub pinned: Option<PinnedCert>,
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
            pinned: None,
        }
    }
    /// Trust only `cert` for this request's TLS.
    pub fn trust_only(mut self, cert: Option<&PinnedCert>) -> Self {
        self.pinned = cert.cloned();
        self
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
            let mut agent = ureq::AgentBuilder::new().timeout(self.timeout);
            if let Some(pin) = &self.pinned {
                agent = agent.tls_config(pin.config.clone());
            }
            let agent = agent.build();
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

/// One server certificate, trusted alone: a Lightning node's self-signed
/// `tls.cert` (LND) or clnrest certificate. A connection succeeds only
/// when the server presents exactly this certificate and proves, in the
/// handshake, that it holds its key. Names, dates and web-PKI roots play no
/// part: the operator chose this certificate for this backend.
#[derive(Clone)]
pub struct PinnedCert {
    config: std::sync::Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PinnedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinnedCert")
    }
}

#[derive(Debug)]
struct OnlyThis {
    cert: rustls_pki_types::CertificateDer<'static>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for OnlyThis {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server presented a certificate other than tls_cert_file".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl PinnedCert {
    /// The first certificate of a PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject;
        let cert = rustls_pki_types::CertificateDer::from_pem_slice(pem)
            .map_err(|e| format!("no PEM certificate: {e}"))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(OnlyThis {
                cert: cert.into_owned(),
                provider,
            }))
            .with_no_client_auth();
        Ok(PinnedCert {
            config: std::sync::Arc::new(config),
        })
    }

    /// The certificate in the PEM file at `path` (LND's `tls.cert`).
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }
}
