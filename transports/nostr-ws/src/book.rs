//! The live order book for browsers: one page and three assets, embedded in
//! the binary (no CDN, no build step). The page talks NIP-01 to this same
//! transport; `assets/book.js` says what it shows.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../assets/book.html");
const SCRIPT: &str = include_str!("../assets/book.js");
const QR: &str = include_str!("../assets/qr.js");
const STYLE: &str = include_str!("../assets/book.css");

/// What the page may load and reach: its own scripts and style, the
/// board's NIP-11 document and websocket, and the QR code's canvas. No
/// inline script runs, nothing from elsewhere is fetched, and no other
/// site may frame it.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Whether a request is a browser asking for a page.
pub(crate) fn wants_page(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

/// The asset at `path`, if it is one of the page's.
pub(crate) fn asset(path: &str) -> Option<Response> {
    let (body, kind) = match path.rsplit('/').next()? {
        "book.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "qr.js" => (QR, "text/javascript; charset=utf-8"),
        "book.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(respond(body, kind))
}

/// The page itself.
pub(crate) fn page() -> Response {
    respond(PAGE, "text/html; charset=utf-8")
}

fn respond(body: &'static str, kind: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
