//! OIDC authorization-code login with PKCE, against the identity provider (Kenni.is in
//! production, any OIDC issuer by configuration): members-fn builds the authorization request
//! (with the state, nonce and PKCE challenge of a login attempt it started, see `attempts`),
//! then exchanges the `code` the browser brings back at the provider's token endpoint with
//! that attempt's verifier, verifies the RS256 id_token against the provider's JWKS, requires
//! the attempt's nonce in it, and reads the national id from it.

use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use shared::jwks::{JwksCache, JwksError};
use tokio::sync::OnceCell;

use crate::configuration::OidcSettings;
use crate::error::MembersError;
use crate::national_id::NationalId;

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

pub struct OidcClient {
    settings: OidcSettings,
    http: reqwest::Client,
    discovery: OnceCell<Discovery>,
    keys: JwksCache,
}

/// What a successful exchange proves.
pub struct Login {
    pub national_id: NationalId,
}

impl OidcClient {
    pub fn new(settings: OidcSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(2))
            // The token endpoint answers directly; a redirect there is a misconfiguration.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            keys: JwksCache::new(http.clone(), None, Duration::from_secs(10)),
            settings,
            http,
            discovery: OnceCell::new(),
        }
    }

    /// Discovery is read once; a failure is retried on the next login.
    async fn discovery(&self) -> Result<&Discovery, MembersError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.settings.issuer);
                let discovery: Discovery = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| MembersError::ProviderUnavailable(e.without_url().to_string()))?
                    .json()
                    .await
                    .map_err(|e| MembersError::ProviderUnavailable(e.without_url().to_string()))?;
                if discovery.issuer.trim_end_matches('/') != self.settings.issuer {
                    return Err(MembersError::ProviderUnavailable(
                        "the discovery document names another issuer".into(),
                    ));
                }
                self.keys.set_url(discovery.jwks_uri.clone()).await;
                Ok(discovery)
            })
            .await
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Where to send the browser: the provider's authorization endpoint asking for a code for
    /// this client and redirect URI, with the login attempt's state, nonce and S256 challenge.
    pub async fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String, MembersError> {
        let discovery = self.discovery().await?;
        let url = reqwest::Url::parse_with_params(
            &discovery.authorization_endpoint,
            [
                ("response_type", "code"),
                ("client_id", self.settings.client_id.as_str()),
                ("redirect_uri", self.settings.redirect_uri.as_str()),
                ("scope", self.settings.scopes.as_str()),
                ("state", state),
                ("nonce", nonce),
                ("code_challenge", code_challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .map_err(|_| {
            MembersError::ProviderUnavailable(
                "the discovery document's authorization_endpoint is not a URL".into(),
            )
        })?;
        Ok(url.into())
    }

    /// Exchanges the code with the login attempt's verifier and returns the verified national
    /// id. The id_token must carry the attempt's `nonce`.
    pub async fn login(
        &self,
        code: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<Login, MembersError> {
        let discovery = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.settings.redirect_uri.as_str()),
            ("code_verifier", code_verifier),
            ("client_id", self.settings.client_id.as_str()),
        ];
        if let Some(secret) = &self.settings.client_secret {
            form.push(("client_secret", secret.as_str()));
        }
        let response = self
            .http
            .post(&discovery.token_endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| MembersError::ProviderUnavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(MembersError::ProviderUnavailable(format!(
                "the token endpoint answered {status}"
            )));
        }
        if !status.is_success() {
            // invalid_grant: a used, expired or forged code, or a verifier that does not match.
            return Err(MembersError::CodeRejected);
        }
        let tokens: TokenResponse = response
            .json()
            .await
            .map_err(|_| MembersError::IdToken("the token endpoint's answer is not JSON".into()))?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| MembersError::IdToken("the provider sent no id_token".into()))?;
        self.verify_id_token(&id_token, nonce).await
    }

    async fn verify_id_token(&self, id_token: &str, nonce: &str) -> Result<Login, MembersError> {
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|_| MembersError::IdToken("the id_token is malformed".into()))?;
        // RS256 only: never `none`, never an HMAC keyed with a public key.
        if header.alg != Algorithm::RS256 {
            return Err(MembersError::IdToken(
                "the id_token is not signed with RS256".into(),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| MembersError::IdToken("the id_token names no key".into()))?;
        let key = self.keys.key(&kid).await.map_err(|e| match e {
            JwksError::UnknownKey => MembersError::IdToken(
                "the id_token is signed with a key the provider does not publish".into(),
            ),
            JwksError::Unavailable(reason) => MembersError::ProviderUnavailable(reason),
        })?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            id_token,
            &key,
            &validation,
        )
        .map_err(|e| invalid_id_token(&e))?
        .claims;
        // The nonce ties the id_token to this browser's login attempt: a code obtained for
        // another login (where PKCE is not enforced by the provider) carries another nonce.
        match claims.get("nonce").and_then(|n| n.as_str()) {
            None => {
                return Err(MembersError::IdToken(
                    "the id_token carries no nonce (members-fn requires the login's nonce)".into(),
                ))
            }
            Some(n) if n != nonce => {
                return Err(MembersError::IdToken(
                    "the id_token's nonce does not match the login request's".into(),
                ))
            }
            Some(_) => {}
        }
        let raw = claims
            .get(&self.settings.national_id_claim)
            .and_then(|v| v.as_str())
            .ok_or_else(|| MembersError::IdToken("the id_token carries no national id".into()))?;
        let national_id = NationalId::parse(raw)
            .map_err(|e| MembersError::IdToken(format!("the id_token's national id: {e}")))?;
        Ok(Login { national_id })
    }
}

/// Why the id_token was refused, in words a client can act on (never the token).
fn invalid_id_token(e: &jsonwebtoken::errors::Error) -> MembersError {
    use jsonwebtoken::errors::ErrorKind;
    MembersError::IdToken(
        match e.kind() {
            ErrorKind::ExpiredSignature => "the id_token has expired",
            ErrorKind::InvalidIssuer => "the id_token is from another issuer",
            ErrorKind::InvalidAudience => "the id_token is for another client",
            ErrorKind::InvalidSignature => "the id_token's signature is wrong",
            ErrorKind::ImmatureSignature => "the id_token is not valid yet",
            ErrorKind::MissingRequiredClaim(_) => "the id_token lacks a required claim",
            _ => "the id_token is invalid",
        }
        .into(),
    )
}
