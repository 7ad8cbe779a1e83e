//! Session tokens: what members-fn hands a member after login and events-svc checks on every
//! request. EdDSA-signed JWTs carrying the member id, tenant and roles, short-lived; the
//! public keys are served at members-fn's `/.well-known/jwks.json`, so events-svc needs no
//! shared secret and members-fn can rotate keys (publish the next key, then sign with it).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::TenantId;
use crate::jwks::{JwksCache, JwksError};

/// The audience every session token is minted for.
pub const AUDIENCE: &str = "ekklesia";

/// What a member may do. Roles come from the member registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Vote, read open elections, read results after close.
    Member,
    /// Create, open and close elections; read results at any time.
    Admin,
    /// Switch the queue flag. The flag is platform-wide: grant it to platform staff only.
    Ops,
}

impl Role {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim() {
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            "ops" => Some(Self::Ops),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Ops => "ops",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: String,
    pub aud: String,
    /// The member id (a registry uuid, never the national id).
    pub sub: Uuid,
    pub org: TenantId,
    pub roles: Vec<Role>,
    pub iat: i64,
    pub exp: i64,
}

impl SessionClaims {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// members-fn's signing keys: the first signs, every one is published.
pub struct SessionSigner {
    issuer: String,
    ttl: Duration,
    keys: Vec<(String, SigningKey, EncodingKey)>,
}

impl fmt::Debug for SessionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material never reaches a log line.
        f.debug_struct("SessionSigner")
            .field("issuer", &self.issuer)
            .field("kids", &self.keys.iter().map(|k| &k.0).collect::<Vec<_>>())
            .finish()
    }
}

impl SessionSigner {
    /// `kid:base64url(seed)` entries separated by commas (`SESSION_SIGNING_KEYS`).
    pub fn from_config(raw: &str, issuer: String, ttl: Duration) -> Result<Self, String> {
        let mut keys = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kid, seed) = entry
                .split_once(':')
                .ok_or("each key is kid:base64url-seed")?;
            let key = crate::token::decode_signing_key(seed)
                .ok_or_else(|| format!("key {kid}: not an Ed25519 seed"))?;
            keys.push(Self::entry(kid, key)?);
        }
        if keys.is_empty() {
            return Err("at least one key is needed".into());
        }
        Ok(Self { issuer, ttl, keys })
    }

    pub fn generate(kid: &str, issuer: String, ttl: Duration) -> Self {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let entry = Self::entry(kid, key).expect("a fresh key encodes");
        Self {
            issuer,
            ttl,
            keys: vec![entry],
        }
    }

    fn entry(kid: &str, key: SigningKey) -> Result<(String, SigningKey, EncodingKey), String> {
        let der = key
            .to_pkcs8_der()
            .map_err(|_| format!("key {kid}: cannot encode"))?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        Ok((kid.to_owned(), key, encoding))
    }

    /// `kid:seed` of the signing key (a secret; for generated development configuration).
    pub fn config_entry(&self) -> String {
        let (kid, key, _) = &self.keys[0];
        format!("{kid}:{}", crate::token::encode_signing_key(key))
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn sign(
        &self,
        member: Uuid,
        org: TenantId,
        roles: Vec<Role>,
        now: DateTime<Utc>,
    ) -> (String, DateTime<Utc>) {
        let expires_at = now + self.ttl;
        let claims = SessionClaims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.into(),
            sub: member,
            org,
            roles,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
        };
        (self.sign_claims(&claims), expires_at)
    }

    /// Signs arbitrary claims (tests craft expired or foreign sessions with it).
    pub fn sign_claims(&self, claims: &SessionClaims) -> String {
        let (kid, _, encoding) = &self.keys[0];
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        // Ed25519 signing of serialisable claims cannot fail.
        jsonwebtoken::encode(&header, claims, encoding).unwrap_or_default()
    }

    /// The public half of every key, as `/.well-known/jwks.json` serves it.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|(kid, key, _)| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                    "kid": kid, "x": B64.encode(key.verifying_key().to_bytes()),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("send the session token as `Authorization: Bearer <token>`")]
    Missing,
    #[error("the session token is malformed")]
    Malformed,
    #[error("the session token is signed with an unknown key")]
    UnknownKey,
    #[error("the session token has expired; log in again")]
    Expired,
    #[error("the session token is not valid here")]
    Invalid,
    #[error("the session keys cannot be fetched right now")]
    KeysUnavailable,
}

/// events-svc's side: checks signature (keys from members-fn's JWKS), issuer, audience, expiry.
#[derive(Clone)]
pub struct SessionVerifier {
    issuer: String,
    keys: JwksCache,
}

impl SessionVerifier {
    /// Trusts the keys fetched from `jwks_url` for [`crate::jwks::DEFAULT_TTL`].
    pub fn new(jwks_url: String, issuer: String, http: reqwest::Client) -> Self {
        Self::with_key_ttl(jwks_url, issuer, http, crate::jwks::DEFAULT_TTL)
    }

    /// Trusts the keys fetched from `jwks_url` for `key_ttl`: a key members-fn stops
    /// publishing is refused at most `key_ttl` later (see [`JwksCache`]).
    pub fn with_key_ttl(
        jwks_url: String,
        issuer: String,
        http: reqwest::Client,
        key_ttl: Duration,
    ) -> Self {
        Self {
            issuer,
            keys: JwksCache::with_ttl(http, Some(jwks_url), Duration::from_secs(5), key_ttl),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<SessionClaims, SessionError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| SessionError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(SessionError::Invalid);
        }
        let kid = header.kid.ok_or(SessionError::Malformed)?;
        let key = self.keys.key(&kid).await.map_err(|e| match e {
            JwksError::UnknownKey => SessionError::UnknownKey,
            JwksError::Unavailable(reason) => {
                tracing::warn!(%reason, "session keys unavailable");
                SessionError::KeysUnavailable
            }
        })?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<SessionClaims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => SessionError::Expired,
                jsonwebtoken::errors::ErrorKind::InvalidToken
                | jsonwebtoken::errors::ErrorKind::Base64(_)
                | jsonwebtoken::errors::ErrorKind::Json(_)
                | jsonwebtoken::errors::ErrorKind::Utf8(_) => SessionError::Malformed,
                _ => SessionError::Invalid,
            })
    }
}
