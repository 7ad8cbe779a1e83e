//! The OIDC login's hand-back to the web pages. A page (served by events-svc, another origin)
//! sends the browser to `GET /v1/auth/oidc/start?return_to=<the page's URL>`; when the provider
//! sends it back and the login succeeds, members-fn answers `303` to
//! `<return_to>#session=<session token>`. A fragment is never sent to a server, so the session
//! reaches no access log, proxy or Referer; the page reads it from `location.hash`, clears it
//! with `history.replaceState` and keeps it in memory only.
//!
//! `return_to` must be a page on one of `PAGE_ORIGINS` (exact origin, a `/pages/<name>` path,
//! no query, credentials or fragment): anything else would make members-fn an open redirect
//! that hands sessions to whoever names the target. It is checked when the login starts and
//! again when it is handed back (the setting may have changed in between). A `return_to` that
//! is a path on members-fn's own site keeps its old meaning (echoed in the JSON answer).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use reqwest::Url;
use shared::cors::AllowedOrigins;

use crate::routes::Session;

/// `return_to` as given to the start, if it is acceptable: a path on this site
/// (`attempts::site_path`) or one of the pages' URLs.
pub fn check(raw: &str, origins: &AllowedOrigins) -> Result<String, shared::Problem> {
    if raw.starts_with('/') {
        return crate::attempts::site_path(raw)
            .map(str::to_owned)
            .ok_or_else(refused);
    }
    page(raw, origins)
        .map(|url| url.to_string())
        .ok_or_else(refused)
}

fn refused() -> shared::Problem {
    shared::Problem::bad_request(
        "invalid-return-to",
        "`return_to` must be a path on this site or a page on one of the pages' origins \
         (PAGE_ORIGINS: the exact origin, a /pages/ path, no query or fragment)",
    )
}

/// The page `raw` names, if it is one: `http(s)`, an origin listed in `origins` exactly (the
/// default port written or not), a path `/pages/<name>` of lowercase letters and dashes, no
/// user info, query or fragment, at most 512 bytes (what the attempt may store).
pub fn page(raw: &str, origins: &AllowedOrigins) -> Option<Url> {
    if raw.len() > 512 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    let name = url.path().strip_prefix("/pages/")?;
    let shape = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    (shape && origins.allows(&url.origin().ascii_serialization())).then_some(url)
}

/// The hand-back: `303` to the page with the session in the fragment, the login cookie cleared,
/// not stored by any cache. The Location is never logged (the request log names the route).
pub fn redirect(mut page: Url, session: &Session, clear_cookie: String) -> Response {
    page.set_fragment(Some(&format!("session={}", session.session_token)));
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, page.to_string()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::REFERRER_POLICY, "no-referrer".to_owned()),
            (header::SET_COOKIE, clear_cookie),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins() -> AllowedOrigins {
        AllowedOrigins::parse("http://127.0.0.1:8081,https://vote.example.is").unwrap()
    }

    #[test]
    fn only_a_page_on_an_allowed_origin_is_a_page() {
        for good in [
            "http://127.0.0.1:8081/pages/vote",
            "http://127.0.0.1:8081/pages/console",
            "https://vote.example.is/pages/vote",
            "https://vote.example.is:443/pages/vote",
            "https://VOTE.example.is/pages/vote",
        ] {
            assert!(page(good, &origins()).is_some(), "{good}");
            assert!(check(good, &origins()).is_ok(), "{good}");
        }
        for bad in [
            "https://evil.example/pages/vote",
            "http://127.0.0.1:8082/pages/vote",
            "http://127.0.0.1/pages/vote",
            "https://127.0.0.1:8081/pages/vote",
            "http://vote.example.is/pages/vote",
            "https://vote.example.is.evil.example/pages/vote",
            "https://vote.example.is@evil.example/pages/vote",
            "https://user@vote.example.is/pages/vote",
            "https://vote.example.is/pages/vote?x=1",
            "https://vote.example.is/pages/vote#x",
            "https://vote.example.is/pages/",
            "https://vote.example.is/pages/../v1/elections",
            "https://vote.example.is/other",
            "https://vote.example.is/pages/vote.js",
            "javascript://vote.example.is/pages/vote",
            "//vote.example.is/pages/vote",
            "https://vote.example.is/pages/vote ",
        ] {
            assert!(page(bad, &origins()).is_none(), "{bad}");
            assert!(check(bad, &origins()).is_err(), "{bad}");
        }
        // Nothing is a page where no origin is configured.
        assert!(page(
            "http://127.0.0.1:8081/pages/vote",
            &AllowedOrigins::default()
        )
        .is_none());
        // A path on this site keeps working as before.
        assert_eq!(check("/elections", &origins()).unwrap(), "/elections");
        assert!(check("//evil.example", &origins()).is_err());
    }
}
