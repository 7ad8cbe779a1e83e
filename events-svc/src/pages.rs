//! The web pages: the voter's ballot page (`/pages/vote`) and the meeting console for admins and
//! platform operators (`/pages/console`). Plain HTML, CSS and a little JavaScript compiled into
//! the binary (no build step, nothing read from disk at run time).
//!
//! events-svc serves them because most of what they call is here (elections, tokens, results,
//! the queue flag), same-origin; members-fn (login) and ingest (vote, receipt) allow this origin
//! through `PAGE_ORIGINS` (`shared::cors`). The pages never decide access: every action is
//! checked by the API with the caller's session, and the pages only show the refusal.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::state::AppState;

/// Where the browser reaches members-fn and ingest (`PAGES_MEMBERS_URL`, `PAGES_INGEST_URL`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PageConfig {
    pub members_url: String,
    pub ingest_url: String,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pages/vote", get(|s: State<AppState>| page(s, VOTE_HTML)))
        .route(
            "/pages/console",
            get(|s: State<AppState>| page(s, CONSOLE_HTML)),
        )
        .route("/pages/config.json", get(config))
        .route("/pages/common.js", get(|| asset(JS, COMMON_JS)))
        .route("/pages/vote.js", get(|| asset(JS, VOTE_JS)))
        .route("/pages/console.js", get(|| asset(JS, CONSOLE_JS)))
        .route("/pages/pages.css", get(|| asset(CSS, PAGES_CSS)))
}

const VOTE_HTML: &str = include_str!("../pages/vote.html");
const CONSOLE_HTML: &str = include_str!("../pages/console.html");
const COMMON_JS: &str = include_str!("../pages/common.js");
const VOTE_JS: &str = include_str!("../pages/vote.js");
const CONSOLE_JS: &str = include_str!("../pages/console.js");
const PAGES_CSS: &str = include_str!("../pages/pages.css");
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

async fn page(State(state): State<AppState>, html: &'static str) -> Response {
    let pages = &state.settings.pages;
    // Scripts only from this origin (no inline script, so an injected one cannot run), calls
    // only to this origin and the two services the pages need, never framed.
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self' {} {}; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        pages.members_url, pages.ingest_url
    );
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

async fn config(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Json(state.settings.pages.clone()),
    )
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
