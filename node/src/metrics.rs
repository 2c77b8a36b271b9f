//! The Prometheus endpoint: `GET /metrics` answers every metric of the node
//! in the OpenMetrics text format (see `docs/METRICS.md`). Off unless
//! `[metrics] listen` is set; with a token file, scrapers must send
//! `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use civkit_framework::Node;

use crate::admin::constant_time_eq;

/// The OpenMetrics text format's media type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct MetricsState {
    node: Node,
    token: Option<String>,
}

/// The endpoint's router.
pub fn router(node: Node, token: Option<String>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(MetricsState { node, token }))
}

async fn scrape(State(s): State<Arc<MetricsState>>, headers: HeaderMap) -> Response {
    if let Some(token) = &s.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token\n",
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        s.node.scrape_metrics().await,
    )
        .into_response()
}
