//! An OIDC issuer the test controls: real discovery, a real JWKS with an RSA key, an
//! authorization endpoint that logs in the `login_hint` at once, and a token endpoint that
//! answers with whatever id_token the test set, so members-fn can be shown expired, forged,
//! foreign and malformed tokens through its real callback.
//!
//! Until the test sets an answer, the token endpoint redeems the codes its authorization
//! endpoint issued, for the account and nonce of that authorization request, and it does so
//! like a lax provider: it does NOT enforce PKCE (any `code_verifier`, or none, is accepted)
//! and a code may be redeemed more than once. Whatever protects a login here is members-fn's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::extract::Query;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};

pub const CLIENT_ID: &str = "members-test";
/// The redirect URI members-fn is configured with against this issuer. Nothing is fetched
/// there: the test delivers the redirect to its own members-fn (`provider::finish`).
pub const REDIRECT_URI: &str = "https://members.example/v1/auth/oidc/redirect";

pub struct RsaKey {
    pub kid: String,
    key: KeyPair,
}

impl RsaKey {
    pub fn generate(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            key: KeyPair::generate(KeySize::Rsa2048).expect("RSA key"),
        }
    }

    pub fn jwk(&self) -> Value {
        let public = self.key.public_key();
        json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
            "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
            "e": B64.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// A compact JWS over `claims` with the given header `alg` (signature always RS256).
    pub fn sign(&self, alg: &str, claims: &Value) -> String {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": self.kid });
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .expect("sign");
        format!("{input}.{}", B64.encode(signature))
    }
}

#[derive(Clone)]
pub struct FakeIssuer {
    pub issuer: String,
    pub key: Arc<RsaKey>,
    /// What the token endpoint answers with next; `None`: redeem the issued codes.
    answer: Arc<Mutex<Option<(u16, Value)>>>,
    /// Codes the authorization endpoint issued: (national id, nonce).
    codes: Arc<Mutex<HashMap<String, (String, String)>>>,
    /// The form of the last token request.
    pub last_request: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeIssuer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let issuer = format!("http://{addr}");
        let fake = Self {
            issuer: issuer.clone(),
            key: Arc::new(RsaKey::generate("fake-1")),
            answer: Arc::new(Mutex::new(None)),
            codes: Arc::new(Mutex::new(HashMap::new())),
            last_request: Arc::new(Mutex::new(Vec::new())),
        };
        let discovery = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
        });
        let jwks = json!({ "keys": [fake.key.jwk()] });
        let answer = fake.answer.clone();
        let last = fake.last_request.clone();
        let (issued, redeemed) = (fake.codes.clone(), fake.codes.clone());
        let signer = fake.clone();
        let next_code = Arc::new(AtomicU64::new(1));
        let app = Router::new()
            .route(
                "/auth",
                get(move |Query(q): Query<HashMap<String, String>>| async move {
                    let param = |name: &str| q.get(name).cloned().unwrap_or_default();
                    let code = format!("code-{}", next_code.fetch_add(1, Ordering::SeqCst));
                    issued
                        .lock()
                        .unwrap()
                        .insert(code.clone(), (param("login_hint"), param("nonce")));
                    let mut back = reqwest::Url::parse(&param("redirect_uri")).expect("redirect_uri");
                    back.query_pairs_mut()
                        .append_pair("code", &code)
                        .append_pair("state", &param("state"));
                    (
                        axum::http::StatusCode::FOUND,
                        [(header::LOCATION, back.to_string())],
                    )
                        .into_response()
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/jwks", get(move || async move { Json(jwks) }))
            .route(
                "/token",
                post(move |Form(form): Form<Vec<(String, String)>>| async move {
                    let code = form
                        .iter()
                        .find(|(k, _)| k == "code")
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    *last.lock().unwrap() = form;
                    let set = answer.lock().unwrap().clone();
                    let (status, body) = set.unwrap_or_else(|| {
                        match redeemed.lock().unwrap().get(&code).cloned() {
                            Some((national_id, nonce)) => (
                                200,
                                json!({ "id_token": signer.key.sign("RS256", &signer.claims(&national_id, &nonce)),
                                        "token_type": "Bearer", "access_token": "at" }),
                            ),
                            None => (400, json!({ "error": "invalid_grant" })),
                        }
                    });
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        Json(body),
                    )
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// Claims a correct id_token for `national_id` carries.
    pub fn claims(&self, national_id: &str, nonce: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer, "aud": CLIENT_ID, "sub": format!("sub-{national_id}"),
            "national_id": national_id, "nonce": nonce, "iat": now, "exp": now + 300,
        })
    }

    pub fn answer_id_token(&self, id_token: String) {
        *self.answer.lock().unwrap() = Some((
            200,
            json!({ "id_token": id_token, "token_type": "Bearer", "access_token": "at" }),
        ));
    }

    pub fn answer(&self, status: u16, body: Value) {
        *self.answer.lock().unwrap() = Some((status, body));
    }

    /// Back to redeeming the codes the authorization endpoint issued.
    pub fn redeem_codes(&self) {
        *self.answer.lock().unwrap() = None;
    }

    /// The value of `name` in the last token request members-fn sent.
    pub fn last(&self, name: &str) -> Option<String> {
        self.last_request
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// members-fn settings pointing at this issuer.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OIDC_ISSUER", self.issuer.clone()),
            ("OIDC_CLIENT_ID", CLIENT_ID.into()),
            ("OIDC_CLIENT_SECRET", "fake-secret".into()),
            ("OIDC_REDIRECT_URI", REDIRECT_URI.into()),
        ]
    }
}
