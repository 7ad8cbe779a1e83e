//! CORS for the web pages (`PAGE_ORIGINS`). The pages are served by events-svc; the voter page
//! also calls members-fn (login) and ingest (vote, receipt), which are other origins. Rather
//! than a proxy (one more hop on the vote path) or a copy of the page on every origin (the
//! voting token, kept in memory only, would not survive moving between them), those two
//! services allow exactly the configured page origins, with no credentials: every call carries
//! its token in `Authorization`, so no cookie is ever sent cross-origin. Default: no origin,
//! no CORS headers at all.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::config::Env;

/// The origins (`scheme://host[:port]`, no path) a page may call this service from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Arc<Vec<String>>);

impl AllowedOrigins {
    /// `PAGE_ORIGINS`: comma-separated origins, e.g. `https://vote.example.is`; default none.
    pub fn from_env(env: &mut Env) -> Self {
        let raw = env.string_or("PAGE_ORIGINS", "");
        match Self::parse(&raw) {
            Ok(origins) => origins,
            Err(bad) => {
                env.problem(format!(
                    "PAGE_ORIGINS: `{bad}` is not an origin (http[s]://host[:port], no path)"
                ));
                Self::default()
            }
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut origins = Vec::new();
        for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .ok_or_else(|| origin.to_owned())?;
            // An origin has no path, query, credentials or wildcard: `*` would let any site
            // drive a voter's browser against the API.
            if rest.is_empty()
                || rest
                    .chars()
                    .any(|c| matches!(c, '/' | '?' | '#' | '@' | '*' | ' '))
            {
                return Err(origin.to_owned());
            }
            origins.push(origin.to_ascii_lowercase());
        }
        Ok(Self(Arc::new(origins)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `origin` (`scheme://host[:port]`) is one of these, exactly.
    pub fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// The router with CORS for `origins` (unchanged when there are none).
pub fn allow(router: Router, origins: AllowedOrigins) -> Router {
    if origins.is_empty() {
        return router;
    }
    router.layer(middleware::from_fn_with_state(origins, cors))
}

async fn cors(State(origins): State<AllowedOrigins>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| origins.allows(o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let Some(origin) = origin else {
        // Not a listed page: no CORS headers, so the browser keeps the answer from the script.
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, idempotency-key"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    // The page honours Retry-After on 503 and 429, so it must be able to read it.
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("retry-after"),
    );
    h.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_exact_and_never_wildcards() {
        let o = AllowedOrigins::parse(" http://127.0.0.1:8081 , https://Vote.example.is").unwrap();
        assert!(o.allows("http://127.0.0.1:8081"));
        assert!(o.allows("https://vote.example.is"));
        assert!(!o.allows("http://127.0.0.1:8082"));
        assert!(!o.allows("null"));
        for bad in [
            "*",
            "https://*.example.is",
            "vote.example.is",
            "https://x/path",
        ] {
            assert!(AllowedOrigins::parse(bad).is_err(), "{bad}");
        }
        assert!(AllowedOrigins::parse("").unwrap().is_empty());
    }
}
