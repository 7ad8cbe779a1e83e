//! Test driver for the local OIDC provider (`infra/local/oidc`, started by
//! `infra/local/oidc-up.sh` / `up.sh`), and for members-fn's login through it.
//!
//! [`login`] plays the browser of a whole login: `GET /v1/auth/oidc/start` at members-fn
//! ([`start`]: the login cookie and the provider's authorization URL, with members-fn's state,
//! nonce and PKCE challenge), the provider's own redirects ([`follow`], carrying its cookies),
//! and the redirect back to members-fn with the login cookie ([`finish`]). The provider has no
//! login page: it logs in the account named by `login_hint` (the national id), which [`follow`]
//! adds to the authorization URL, and approves the requested scopes by itself.
//!
//! ```ignore
//! use testkit::oidc_provider as provider;
//!
//! let (status, session) = provider::login(&members_url, "0101302989", "").await;
//! ```
//!
//! The redirect URI registered with the provider is `OIDC_REDIRECT_URI` (members-fn of the local
//! stack, port 8082); [`finish`] delivers its query to the members-fn instance given instead, so
//! a test's members-fn on another port can finish the login.
//!
//! [`authorize`] is the older, client-side flow (the driver makes its own verifier, nonce and
//! state and returns the code), for tests that need a bare authorization code.
//!
//! A code is single-use and expires 60 s after it is issued (oidc-provider's
//! default); the provider keeps codes and keys in memory, so restarting it
//! invalidates both (and changes the signing key's `kid`).

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

    /// members-fn's settings for this provider.
    pub fn members_env(self) -> Vec<(&'static str, String)> {
        vec![
            ("OIDC_ISSUER", self.issuer),
            ("OIDC_CLIENT_ID", self.client_id),
            ("OIDC_CLIENT_SECRET", self.client_secret),
            ("OIDC_REDIRECT_URI", self.redirect_uri),
        ]
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
    let url = Url::parse_with_params(
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

    let location = follow_to(url, issuer, redirect_uri, national_id).await;
    finish_authorization(
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
    )
}

/// Follows the provider's redirects from `url` by hand (carrying its cookies) and returns the
/// `Location` of the redirect to `redirect_uri`. Panics if a step fails or leaves the issuer.
async fn follow_to(mut url: Url, issuer: &str, redirect_uri: &str, national_id: &str) -> String {
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
                return location;
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

/// What members-fn's `GET /v1/auth/oidc/start` answered.
#[derive(Debug, Clone)]
pub struct Started {
    /// `name=value` of the login cookie, for a `Cookie` header.
    pub cookie: String,
    /// The whole `Set-Cookie` header (its attributes).
    pub set_cookie: String,
    /// Where members-fn sends the browser: the provider's authorization endpoint.
    pub authorization_url: Url,
}

impl Started {
    /// A query parameter of the authorization URL (`state`, `nonce`, `code_challenge`, ...).
    pub fn param(&self, name: &str) -> Option<String> {
        self.authorization_url
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// `GET {members_url}/v1/auth/oidc/start?{query}` (`query` may be empty). Panics unless
/// members-fn answers 302 with a login cookie.
pub async fn start(members_url: &str, query: &str) -> Started {
    let url = format!("{members_url}/v1/auth/oidc/start?{query}");
    let response = client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    if status != StatusCode::FOUND {
        let body = response.text().await.unwrap_or_default();
        panic!("GET {url} answered {status} instead of 302: {body}");
    }
    let set_cookie = headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("GET {url}: no Set-Cookie"))
        .to_owned();
    let cookie = set_cookie
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("GET {url}: no Location"));
    let authorization_url = Url::parse(location)
        .unwrap_or_else(|e| panic!("GET {url}: Location {location:?} is not a URL: {e}"));
    Started {
        cookie,
        set_cookie,
        authorization_url,
    }
}

/// Plays the person at the provider: adds `login_hint`, follows the provider's redirects and
/// returns the redirect back to the authorization URL's `redirect_uri` (code, state, iss).
pub async fn follow(authorization_url: &Url, national_id: &str) -> Url {
    let redirect_uri = authorization_url
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{authorization_url} names no redirect_uri"));
    let issuer = authorization_url.origin().ascii_serialization();
    let mut url = authorization_url.clone();
    url.query_pairs_mut().append_pair("login_hint", national_id);
    let location = follow_to(url, &issuer, &redirect_uri, national_id).await;
    Url::parse(&location)
        .unwrap_or_else(|e| panic!("the redirect back {location:?} is not a URL: {e}"))
}

/// Delivers the provider's redirect back (`redirect`: its path and query) to members-fn at
/// `members_url`, with the login cookie if given. Returns members-fn's status and JSON body.
pub async fn finish(
    members_url: &str,
    cookie: Option<&str>,
    redirect: &Url,
) -> (u16, serde_json::Value) {
    let url = format!(
        "{members_url}{}?{}",
        redirect.path(),
        redirect.query().unwrap_or_default()
    );
    let mut request = client().get(&url);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {} failed: {e}", redirect.path()));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// A whole login at members-fn through the provider, as a browser does it: start (with
/// `query`, e.g. `org=party-b`), the provider, the redirect back with the login cookie.
pub async fn login(members_url: &str, national_id: &str, query: &str) -> (u16, serde_json::Value) {
    let started = start(members_url, query).await;
    let redirect = follow(&started.authorization_url, national_id).await;
    finish(members_url, Some(&started.cookie), &redirect).await
}

/// Reads the final redirect to redirect_uri: an error, or code + state (+ iss).
fn finish_authorization(
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
