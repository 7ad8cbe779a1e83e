//! A JSON Web Key Set fetched over HTTP and cached: members-fn reads the identity provider's
//! keys (RS256 id_tokens), events-svc reads members-fn's keys (EdDSA session tokens).
//!
//! Keys are fetched on first use and again when a token names a key id the cache does not
//! hold (the issuer rotated), at most once per `min_refresh` so a flood of forged key ids
//! cannot turn into a flood of fetches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::DecodingKey;
use tokio::sync::{Mutex, RwLock};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("no key with this key id")]
    UnknownKey,
    #[error("the key set could not be fetched: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct JwksCache {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    url: RwLock<Option<String>>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    min_refresh: Duration,
}

impl JwksCache {
    /// A cache of the key set at `url` (or set later with [`JwksCache::set_url`], e.g. once
    /// OIDC discovery told where it is).
    pub fn new(http: reqwest::Client, url: Option<String>, min_refresh: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                url: RwLock::new(url),
                keys: RwLock::new(HashMap::new()),
                last_fetch: Mutex::new(None),
                min_refresh,
            }),
        }
    }

    pub async fn set_url(&self, url: String) {
        let mut current = self.inner.url.write().await;
        if current.as_deref() != Some(url.as_str()) {
            *current = Some(url);
            self.inner.keys.write().await.clear();
        }
    }

    /// The key for `kid`, fetching the set when the cache does not hold it.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, JwksError> {
        if let Some(key) = self.inner.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        self.refresh().await?;
        self.inner
            .keys
            .read()
            .await
            .get(kid)
            .cloned()
            .ok_or(JwksError::UnknownKey)
    }

    async fn refresh(&self) -> Result<(), JwksError> {
        let mut last = self.inner.last_fetch.lock().await;
        let cached = !self.inner.keys.read().await.is_empty();
        if cached && last.is_some_and(|at| at.elapsed() < self.inner.min_refresh) {
            // Refreshed a moment ago: an unknown key id now is not a rotation.
            return Ok(());
        }
        let url = self
            .inner
            .url
            .read()
            .await
            .clone()
            .ok_or_else(|| JwksError::Unavailable("no key set location yet".into()))?;
        let set: JwkSet = self
            .inner
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| JwksError::Unavailable(e.without_url().to_string()))?
            .json()
            .await
            .map_err(|e| JwksError::Unavailable(e.without_url().to_string()))?;
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|k| (kid, k))
            })
            .collect::<HashMap<_, _>>();
        *last = Some(Instant::now());
        *self.inner.keys.write().await = keys;
        Ok(())
    }
}
