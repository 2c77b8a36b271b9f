//! Stand-in Lightning nodes for tests (feature `testing`): one HTTPS server
//! answering LND's REST invoice endpoints and Core Lightning's clnrest ones,
//! as documented, with invoices that a test marks paid. Like LND and
//! clnrest, it serves a self-signed certificate of its own (a new one per
//! stand-in), which a backend must be given as `tls_cert_file`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test double: failures are test failures

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

/// A stand-in Lightning node: invoices by payment hash, and which are paid.
#[derive(Default)]
pub struct Ln {
    /// Its self-signed certificate, PEM (what LND writes as `tls.cert`).
    pub cert_pem: String,
    /// Payment hashes of the invoices created, in order.
    pub invoices: Mutex<Vec<String>>,
    /// Payment hashes a test marked paid.
    pub paid: Mutex<HashSet<String>>,
    /// Milliseconds every invoice creation takes (a slow node).
    pub delay_ms: AtomicU64,
}

impl Ln {
    /// Mark every invoice created so far as paid.
    pub fn pay_all(&self) {
        let all = self.invoices.lock().unwrap().clone();
        self.paid.lock().unwrap().extend(all);
    }
}

async fn lnd_add(
    State(ln): State<Arc<Ln>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    if headers
        .get("Grpc-Metadata-macaroon")
        .and_then(|v| v.to_str().ok())
        != Some("00ff")
    {
        return Err(StatusCode::UNAUTHORIZED);
    }
    tokio::time::sleep(Duration::from_millis(ln.delay_ms.load(Ordering::SeqCst))).await;
    assert!(
        body["value_msat"].as_str().is_some(),
        "LND takes value_msat as a string"
    );
    let hash: [u8; 32] = nostr::hashes::Hash::to_byte_array(
        <nostr::hashes::sha256::Hash as nostr::hashes::Hash>::hash(body.to_string().as_bytes()),
    );
    ln.invoices.lock().unwrap().push(hex::encode(hash));
    Ok(Json(json!({
        "r_hash": base64::engine::general_purpose::STANDARD.encode(hash),
        "payment_request": format!("lnbcrt{}n1standin", body["value_msat"].as_str().unwrap()),
        "add_index": "1",
    })))
}

async fn lnd_lookup(State(ln): State<Arc<Ln>>, Path(hash): Path<String>) -> Json<Value> {
    let settled = ln.paid.lock().unwrap().contains(&hash);
    Json(json!({ "state": if settled { "SETTLED" } else { "OPEN" }, "settled": settled }))
}

async fn cln_invoice(
    State(ln): State<Arc<Ln>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    if headers.get("Rune").and_then(|v| v.to_str().ok()) != Some("test-rune") {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let hash = hex::encode(body["label"].as_str().unwrap().as_bytes());
    ln.invoices.lock().unwrap().push(hash.clone());
    Ok(Json(
        json!({ "bolt11": "lnbcrt1standin", "payment_hash": hash, "expires_at": 0 }),
    ))
}

async fn cln_list(State(ln): State<Arc<Ln>>, Json(body): Json<Value>) -> Json<Value> {
    let h = body["payment_hash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let status = if ln.paid.lock().unwrap().contains(&h) {
        "paid"
    } else {
        "unpaid"
    };
    Json(json!({ "invoices": [{ "payment_hash": h, "status": status }] }))
}

/// Start the stand-in on a free port; returns it and its base URL
/// (`https://127.0.0.1:<port>`). LND calls need the macaroon `00ff`, CLN
/// calls the rune `test-rune`.
pub async fn stand_in() -> (Arc<Ln>, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let ln = Arc::new(Ln {
        cert_pem: cert.cert.pem(),
        ..Ln::default()
    });
    let app = Router::new()
        .route("/v1/invoices", post(lnd_add))
        .route("/v1/invoice/{hash}", get(lnd_lookup))
        .route("/v1/invoice", post(cln_invoice))
        .route("/v1/listinvoices", post(cln_list))
        .with_state(ln.clone());
    let key =
        tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends here.
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper_util::service::TowerToHyperService::new(app),
                    )
                    .await;
            });
        }
    });
    (ln, url)
}
