//! The admin API: JSON over HTTP on loopback, authenticated by the cookie in
//! the data dir (`Authorization: Bearer <cookie>`). `civkit-cli` is its client.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/status` | | uptime, endpoints, connections per transport, store size |
//! | GET | `/v1/connections` | | every open session |
//! | POST | `/v1/events/query` | a filter or an array of filters | matching events |
//! | POST | `/v1/events/delete` | `{"ids": [hex, ...]}` | `{"deleted": n}` |
//! | POST | `/v1/publish-note` | `{"text": "..."}` | the `OK` of a kind-1 note signed by the node key |
//! | POST | `/v1/services/{name}/{command}` | arguments | the service's answer |
//! | POST | `/v1/control/{name}/{command}` | arguments | a transport's answer (e.g. `peers`) |

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use civkit_framework::{LocalOrigin, Node};
use nostr::{EventBuilder, EventId, Filter};
use serde_json::{json, Value};

/// Shared state of the admin server.
pub struct AdminState {
    pub node: Node,
    pub cookie: String,
}

/// An error answered as `{"error": "..."}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl ToString) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.to_string())
}
fn internal(msg: impl ToString) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg.to_string())
}

/// Compare without leaking the position of the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Proof that the request carried the cookie.
pub struct Authorized;

impl FromRequestParts<Arc<AdminState>> for Authorized {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AdminState>,
    ) -> Result<Self, ApiError> {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), state.cookie.as_bytes()) {
            Ok(Authorized)
        } else {
            Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin cookie".into(),
            ))
        }
    }
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/connections", get(connections))
        .route("/v1/events/query", post(query))
        .route("/v1/events/delete", post(delete))
        .route("/v1/publish-note", post(publish_note))
        .route("/v1/services/{name}/{command}", post(service_command))
        .route("/v1/control/{name}/{command}", post(control_command))
        .with_state(state)
}

async fn status(_: Authorized, State(s): State<Arc<AdminState>>) -> Result<Json<Value>, ApiError> {
    let node = &s.node;
    let stats = node.persister().stats().await.map_err(internal)?;
    let (accepted, rejected) = node.event_counters();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": node.uptime().as_secs(),
        "pubkey": node.keys().public_key().to_hex(),
        "endpoints": node.endpoints(),
        "connections": node.connection_counts(),
        "events_stored": stats.events,
        "store_bytes": stats.size_bytes,
        "store_backend": node.persister().backend(),
        "role": if node.is_leader() { "leader" } else { "follower" },
        "store_write_error": stats.write_error,
        "events_accepted": accepted,
        "events_rejected": rejected,
        "services": node.service_names(),
        "components": node.control_statuses(),
    })))
}

async fn connections(_: Authorized, State(s): State<Arc<AdminState>>) -> Json<Value> {
    Json(json!(s.node.connections()))
}

async fn query(
    _: Authorized,
    State(s): State<Arc<AdminState>>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let values = match body {
        Value::Array(a) => a,
        other => vec![other],
    };
    let filters: Vec<Filter> = values
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("bad filter: {e}")))?;
    let events = s
        .node
        .persister()
        .query(&filters, s.node.now())
        .await
        .map_err(internal)?;
    Ok(Json(json!(events)))
}

#[derive(serde::Deserialize)]
struct DeleteBody {
    ids: Vec<String>,
}

async fn delete(
    _: Authorized,
    State(s): State<Arc<AdminState>>,
    Json(body): Json<DeleteBody>,
) -> Result<Json<Value>, ApiError> {
    let ids: Vec<EventId> = body
        .ids
        .iter()
        .map(|h| EventId::from_hex(h).map_err(|e| bad(format!("bad event id `{h}`: {e}"))))
        .collect::<Result<_, _>>()?;
    let n = s
        .node
        .persister()
        .delete_events(&ids)
        .await
        .map_err(internal)?;
    tracing::info!(deleted = n, "operator deleted events");
    Ok(Json(json!({ "deleted": n })))
}

#[derive(serde::Deserialize)]
struct NoteBody {
    text: String,
}

async fn publish_note(
    _: Authorized,
    State(s): State<Arc<AdminState>>,
    Json(body): Json<NoteBody>,
) -> Result<Json<Value>, ApiError> {
    let event = EventBuilder::text_note(body.text)
        .sign_with_keys(s.node.keys())
        .map_err(internal)?;
    let reply = s.node.submit(LocalOrigin::admin(), event).await;
    Ok(Json(json!({
        "id": reply.event_id.to_hex(),
        "accepted": reply.accepted,
        "message": reply.message,
    })))
}

async fn service_command(
    _: Authorized,
    State(s): State<Arc<AdminState>>,
    Path((name, command)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Result<Json<Value>, ApiError> {
    let args = body.map(|Json(v)| v).unwrap_or(Value::Null);
    s.node
        .service_admin(&name, &command, args)
        .await
        .map(Json)
        .map_err(api_error)
}

async fn control_command(
    _: Authorized,
    State(s): State<Arc<AdminState>>,
    Path((name, command)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Result<Json<Value>, ApiError> {
    let args = body.map(|Json(v)| v).unwrap_or(Value::Null);
    s.node
        .control(&name, &command, args)
        .await
        .map(Json)
        .map_err(api_error)
}

/// Unknown service, control or command: 404; bad arguments: 400.
fn api_error(e: civkit_framework::Error) -> ApiError {
    match e.kind() {
        civkit_framework::ErrorKind::BadInput => bad(e),
        civkit_framework::ErrorKind::Unsupported => ApiError(StatusCode::NOT_FOUND, e.to_string()),
        _ => internal(e),
    }
}
