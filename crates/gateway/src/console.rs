//! The web console at `/`: one page, a script and a style sheet, embedded
//! in the binary (no CDN, works offline, nothing to build). It talks to the
//! gateway's own endpoints as the browser's principal, so it can do only
//! what the policy lets that principal do.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::routes::State;

const PAGE: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/style.css");

/// What every console asset is sent with: no other site may frame it, and
/// the page loads scripts and styles only from the gateway.
const POLICY: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(kind: &'static str, text: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        text,
    )
}

pub fn routes() -> Router<State> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
        .route("/console/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}
