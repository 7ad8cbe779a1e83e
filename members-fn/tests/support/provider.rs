//! Test driver for the local OIDC provider (`infra/local/oidc`, started by
//! `infra/local/oidc-up.sh` / `up.sh`).
//!
//! [`authorize`] plays the browser: it sends an authorization-code request with
//! PKCE (S256), a nonce and a state to the provider, follows the provider's own
//! redirects by hand (carrying its cookies), and stops at the redirect to the
//! client's `redirect_uri`, returning the code and what the client needs to redeem
//! it. The provider has no login page: it logs in the account named by
//! `login_hint` (the national id) and approves the requested scopes by itself.
//!
//! ```ignore
//! mod support { pub mod provider; }
//! use support::provider::{self, Settings};
//!
//! let oidc = Settings::from_env();
//! let auth = provider::authorize(&oidc.issuer, &oidc.client_id, &oidc.redirect_uri, "0101302989").await;
//! // POST /v1/auth/oidc/callback {code: auth.code, code_verifier: auth.code_verifier,
//! //                              redirect_uri: auth.redirect_uri}
//! // The id_token the code redeems for carries nonce == auth.nonce.
//! ```
//!
//! A code is single-use and expires 60 s after it is issued (oidc-provider's
//! default); the provider keeps codes and keys in memory, so restarting it
//! invalidates both (and changes the signing key's `kid`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use reqwest::{header, redirect, StatusCode, Url};
use sha2::{Digest, Sha256};

/// What [`authorize`] returns: everything the client sends to redeem the code.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub code: String,
    /// The PKCE verifier whose S256 challenge went into the authorization request.
    pub code_verifier: String,
    /// The nonce sent in the authorization request; the id_token echoes it.
    pub nonce: String,
    pub redirect_uri: String,
}

/// The local provider's settings, read like `infra/local/env.sh` does (same
/// variables, same defaults).
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
}

impl Settings {
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let port = var("OIDC_PORT", "8090");
        Self {
            issuer: var("OIDC_ISSUER", &format!("http://127.0.0.1:{port}")),
            client_id: var("OIDC_CLIENT_ID", "ekklesia-local"),
            client_secret: var("OIDC_CLIENT_SECRET", "local-only-secret"),
            redirect_uri: var(
                "OIDC_REDIRECT_URI",
                "http://127.0.0.1:8082/v1/auth/oidc/redirect",
            ),
        }
    }
}

/// Fetches `{issuer}/.well-known/openid-configuration` and checks that it names
/// `issuer`. Panics with a hint to run `oidc-up.sh` when nothing answers.
pub async fn discovery(issuer: &str) -> serde_json::Value {
    let issuer = issuer.trim_end_matches('/');
    let url = format!("{issuer}/.well-known/openid-configuration");
    let response = client().get(&url).send().await.unwrap_or_else(|e| {
        panic!("OIDC discovery GET {url} failed: {e} (is the local provider running? infra/local/oidc-up.sh)")
    });
    let status = response.status();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("OIDC discovery GET {url}: reading the body failed: {e}"));
    assert!(
        status.is_success(),
        "OIDC discovery GET {url} answered {status}: {body}"
    );
    let doc: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("OIDC discovery GET {url}: not JSON ({e}): {body}"));
    assert_eq!(
        doc["issuer"].as_str(),
        Some(issuer),
        "OIDC discovery at {url} names another issuer: {body}"
    );
    doc
}

/// Runs the browser side of an authorization-code + PKCE login at the local
/// provider for the account `national_id` (sent as `login_hint`) and returns the
/// authorization code issued to `client_id` for `redirect_uri`.
///
/// Panics with the provider's answer if any step fails (unknown client,
/// unregistered redirect_uri, error redirect, state mismatch, ...).
pub async fn authorize(
    issuer: &str,
    client_id: &str,
    redirect_uri: &str,
    national_id: &str,
) -> Authorization {
    let issuer = issuer.trim_end_matches('/');
    let code_verifier = random_token(32); // 43 characters, within RFC 7636's 43..=128
    let code_challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()));
    let nonce = random_token(16);
    let state = random_token(16);

    let doc = discovery(issuer).await;
    let endpoint = doc["authorization_endpoint"].as_str().unwrap_or_else(|| {
        panic!("OIDC discovery of {issuer} has no authorization_endpoint: {doc}")
    });
    let mut url = Url::parse_with_params(
        endpoint,
        &[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", "openid profile"),
            ("code_challenge", code_challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("nonce", nonce.as_str()),
            ("state", state.as_str()),
            ("login_hint", national_id),
        ],
    )
    .unwrap_or_else(|e| panic!("authorization_endpoint {endpoint:?} is not a URL: {e}"));

    let http = client();
    let mut cookies = CookieJar::default();
    // Normally 5 hops: /auth -> /interaction (login) -> /auth/:uid -> /interaction
    // (consent) -> /auth/:uid -> redirect_uri.
    const MAX_HOPS: usize = 10;
    let mut trail = Vec::new();
    for _ in 0..MAX_HOPS {
        trail.push(url.path().to_owned());
        let mut request = http.get(url.clone());
        if let Some(cookie) = cookies.header() {
            request = request.header(header::COOKIE, cookie);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("OIDC authorize: GET {} failed: {e}", url.path()));
        let status = response.status();
        cookies.store(response.headers());
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().map(str::to_owned));
        let location = match (status, location) {
            (StatusCode::FOUND | StatusCode::SEE_OTHER, Some(Ok(location))) => location,
            _ => {
                let body = response.text().await.unwrap_or_default();
                panic!(
                    "OIDC authorize for {national_id}: GET {} answered {status} instead of a redirect \
                     (path so far: {}): {body}",
                    url.path(),
                    trail.join(" -> ")
                );
            }
        };

        if let Some(rest) = location.strip_prefix(redirect_uri) {
            if rest.is_empty() || rest.starts_with('?') || rest.starts_with('#') {
                return finish(
                    &location,
                    issuer,
                    &state,
                    national_id,
                    Authorization {
                        code: String::new(),
                        code_verifier,
                        nonce,
                        redirect_uri: redirect_uri.to_owned(),
                    },
                );
            }
        }
        url = url.join(&location).unwrap_or_else(|e| {
            panic!("OIDC authorize: provider redirected to an unusable Location {location:?}: {e}")
        });
        assert!(
            url.as_str().starts_with(issuer),
            "OIDC authorize: provider redirected off the issuer to {location:?}, expected {redirect_uri}"
        );
    }
    panic!(
        "OIDC authorize for {national_id}: no redirect to {redirect_uri} after {MAX_HOPS} hops: {}",
        trail.join(" -> ")
    );
}

/// Reads the final redirect to redirect_uri: an error, or code + state (+ iss).
fn finish(
    location: &str,
    issuer: &str,
    state: &str,
    national_id: &str,
    mut authorization: Authorization,
) -> Authorization {
    let url = Url::parse(location).unwrap_or_else(|e| {
        panic!("OIDC authorize: final redirect {location:?} is not a URL: {e}")
    });
    let params: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    if let Some(error) = params.get("error") {
        panic!(
            "OIDC authorize for {national_id}: provider redirected with error={error} ({})",
            params
                .get("error_description")
                .map(String::as_str)
                .unwrap_or("no description")
        );
    }
    assert_eq!(
        params.get("state").map(String::as_str),
        Some(state),
        "OIDC authorize: state in the redirect does not match the request's: {location}"
    );
    // RFC 9207: oidc-provider names itself in the authorization response.
    if let Some(iss) = params.get("iss") {
        assert_eq!(
            iss, issuer,
            "OIDC authorize: iss in the redirect is not the issuer"
        );
    }
    authorization.code = params
        .get("code")
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| {
            panic!("OIDC authorize: redirect to redirect_uri without a code: {location}")
        })
        .clone();
    authorization
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("building the reqwest client for the OIDC driver")
}

/// `n` random bytes, base64url without padding.
fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The provider's cookies, by name. Paths and expiry are ignored (all requests go
/// to the one provider, and a flow takes seconds); a cookie set to an empty value
/// or with Max-Age=0 is how the provider deletes it.
#[derive(Default)]
struct CookieJar(BTreeMap<String, String>);

impl CookieJar {
    fn store(&mut self, headers: &header::HeaderMap) {
        for value in headers.get_all(header::SET_COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            let mut parts = value.split(';');
            let Some((name, val)) = parts.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let (name, val) = (name.trim(), val.trim());
            let deleted =
                val.is_empty() || parts.any(|attr| attr.trim().eq_ignore_ascii_case("max-age=0"));
            if deleted {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), val.to_owned());
            }
        }
    }

    fn header(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| {
            self.0
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}
