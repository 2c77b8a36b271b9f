//! The NIP-11 relay information document, with CORS.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Shared;

fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    r
}

pub(crate) fn preflight() -> Response {
    cors(StatusCode::NO_CONTENT.into_response())
}

/// The document: node description, supported NIPs of the core and every
/// service, and the limits this transport's sessions enforce.
pub(crate) fn info_document(shared: &Shared) -> serde_json::Value {
    let node = &shared.node;
    let info = node.info();
    let l = &shared.config.limits;
    let mut limitation = json!({
        "max_message_length": shared.config.max_message_bytes,
        "max_subscriptions": l.max_subscriptions,
        "max_filters": l.max_filters,
        "max_limit": l.max_limit,
        "default_limit": l.default_limit,
        "max_subid_length": l.max_subid_length,
        "auth_required": l.auth_required,
        "payment_required": false,
        "restricted_writes": false,
    });
    if let Some(map) = limitation.as_object_mut() {
        if l.created_at_lower_limit > 0 {
            map.insert(
                "created_at_lower_limit".into(),
                json!(l.created_at_lower_limit),
            );
        }
        if l.created_at_upper_limit > 0 {
            map.insert(
                "created_at_upper_limit".into(),
                json!(l.created_at_upper_limit),
            );
        }
        for (k, v) in node.service_limitations() {
            map.insert(k, v);
        }
    }
    let mut doc = json!({
        "name": info.name,
        "description": info.description,
        "pubkey": node.keys().public_key().to_hex(),
        "contact": info.contact,
        "supported_nips": node.supported_nips(),
        "software": "civkit",
        "version": env!("CARGO_PKG_VERSION"),
        "limitation": limitation,
    });
    if let Some(map) = doc.as_object_mut() {
        // The board's onion service, when a tor transport runs.
        let onion: Vec<String> = node
            .endpoints()
            .into_values()
            .filter(|u| u.starts_with("ws://") && u.ends_with(".onion"))
            .collect();
        if !onion.is_empty() {
            map.insert("civkit_onion".into(), json!(onion));
        }
        map.extend(node.service_nip11());
    }
    doc
}

pub(crate) fn document(shared: &Shared) -> Response {
    let body = info_document(shared).to_string();
    cors(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/nostr+json")],
            body,
        )
            .into_response(),
    )
}
