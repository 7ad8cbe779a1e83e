//! A JSON Web Key Set fetched over HTTP and cached: members-fn reads the identity provider's
//! keys (RS256 id_tokens), events-svc reads members-fn's keys (EdDSA session tokens).
//!
//! Keys are fetched on first use, again when a token names a key id the cache does not hold
//! (the issuer rotated), and again on the first use after they are `ttl` old, so a key the
//! issuer stopped publishing (a compromised one, removed) stops being trusted within `ttl`.
//! Fetches happen at most once per `min_refresh` while usable keys are held, so a flood of
//! forged key ids cannot turn into a flood of fetches. When a refresh fails the keys already
//! held are kept for up to another `ttl` (the issuer may be restarting), with a warning; after
//! that they are dropped and every token is refused as "keys unavailable" until a fetch works.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::DecodingKey;
use tokio::sync::{Mutex, RwLock};

/// How long fetched keys are trusted without being fetched again, unless configured.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

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
    cached: RwLock<Cached>,
    /// Held while fetching: concurrent misses wait for one fetch instead of each making one.
    fetching: Mutex<()>,
    min_refresh: Duration,
    ttl: Duration,
}

#[derive(Default)]
struct Cached {
    keys: HashMap<String, DecodingKey>,
    /// When `keys` were fetched.
    fetched_at: Option<Instant>,
    /// When a fetch was last tried, successful or not.
    tried_at: Option<Instant>,
}

impl Cached {
    fn age(&self) -> Option<Duration> {
        self.fetched_at.map(|at| at.elapsed())
    }

    fn fresh(&self, ttl: Duration) -> bool {
        self.age().is_some_and(|age| age <= ttl)
    }

    /// Fresh, or stale but within the grace a failing refresh gets (another `ttl`).
    fn usable(&self, ttl: Duration) -> bool {
        !self.keys.is_empty() && self.age().is_some_and(|age| age <= ttl.saturating_mul(2))
    }
}

impl JwksCache {
    /// A cache of the key set at `url` (or set later with [`JwksCache::set_url`], e.g. once
    /// OIDC discovery told where it is), trusting fetched keys for [`DEFAULT_TTL`].
    pub fn new(http: reqwest::Client, url: Option<String>, min_refresh: Duration) -> Self {
        Self::with_ttl(http, url, min_refresh, DEFAULT_TTL)
    }

    /// As [`JwksCache::new`], trusting fetched keys for `ttl`.
    pub fn with_ttl(
        http: reqwest::Client,
        url: Option<String>,
        min_refresh: Duration,
        ttl: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                url: RwLock::new(url),
                cached: RwLock::new(Cached::default()),
                fetching: Mutex::new(()),
                min_refresh,
                ttl,
            }),
        }
    }

    pub async fn set_url(&self, url: String) {
        let mut current = self.inner.url.write().await;
        if current.as_deref() != Some(url.as_str()) {
            *current = Some(url);
            *self.inner.cached.write().await = Cached::default();
        }
    }

    /// The key for `kid`, fetching the set when the cache does not hold it or holds it for
    /// longer than the TTL.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, JwksError> {
        {
            let cached = self.inner.cached.read().await;
            if cached.fresh(self.inner.ttl) {
                if let Some(key) = cached.keys.get(kid) {
                    return Ok(key.clone());
                }
            }
        }
        self.refresh(kid).await?;
        let cached = self.inner.cached.read().await;
        if !cached.usable(self.inner.ttl) {
            return Err(JwksError::Unavailable(
                "no current key set (the last fetch failed)".into(),
            ));
        }
        cached.keys.get(kid).cloned().ok_or(JwksError::UnknownKey)
    }

    async fn refresh(&self, kid: &str) -> Result<(), JwksError> {
        let _one_fetch = self.inner.fetching.lock().await;
        {
            let cached = self.inner.cached.read().await;
            if cached.fresh(self.inner.ttl) && cached.keys.contains_key(kid) {
                // Another request fetched while this one waited.
                return Ok(());
            }
            let tried_recently = cached
                .tried_at
                .is_some_and(|at| at.elapsed() < self.inner.min_refresh);
            let last_try_failed = cached.tried_at > cached.fetched_at;
            if tried_recently
                && cached.usable(self.inner.ttl)
                && (cached.fresh(self.inner.ttl) || last_try_failed)
            {
                // Fetched a moment ago: an unknown key id now is not a rotation. Or tried a
                // moment ago and failed: a failing issuer is not asked on every request.
                return Ok(());
            }
        }
        let url = self
            .inner
            .url
            .read()
            .await
            .clone()
            .ok_or_else(|| JwksError::Unavailable("no key set location yet".into()))?;
        let fetched = self.fetch(&url).await;
        let mut cached = self.inner.cached.write().await;
        let now = Instant::now();
        cached.tried_at = Some(now);
        match fetched {
            Ok(keys) => {
                cached.keys = keys;
                cached.fetched_at = Some(now);
                Ok(())
            }
            Err(e) => {
                let age_secs = cached.age().map(|a| a.as_secs());
                if cached.usable(self.inner.ttl) {
                    tracing::warn!(reason = %e, ?age_secs,
                        "key set refresh failed; keeping the keys fetched before, for at most one more TTL");
                    Ok(())
                } else {
                    if !cached.keys.is_empty() {
                        tracing::error!(reason = %e, ?age_secs,
                            "key set refresh failed and the keys held are too old; trusting none");
                        cached.keys.clear();
                    }
                    Err(e)
                }
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<HashMap<String, DecodingKey>, JwksError> {
        let set: JwkSet = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| JwksError::Unavailable(e.without_url().to_string()))?
            .json()
            .await
            .map_err(|e| JwksError::Unavailable(e.without_url().to_string()))?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|k| (kid, k))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;
    use crate::session::SessionSigner;

    /// A key set server the test can make fail; counts the fetches.
    struct Issuer {
        url: String,
        failing: Arc<AtomicBool>,
        fetches: Arc<AtomicUsize>,
    }

    async fn issuer(jwks: serde_json::Value) -> Issuer {
        let failing = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (f, n) = (failing.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks",
            get(move || async move {
                n.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    axum::Json(jwks).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Issuer {
            url,
            failing,
            fetches,
        }
    }

    /// Polls `key(kid)` until `done` holds for its answer, or fails after `within`.
    async fn until(
        cache: &JwksCache,
        kid: &str,
        within: Duration,
        done: impl Fn(&Result<DecodingKey, JwksError>) -> bool,
    ) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if done(&cache.key(kid).await) {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "condition not reached in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_failing_refresh_keeps_the_keys_for_one_more_ttl_then_trusts_none() {
        let signer = SessionSigner::generate("k1", "iss".into(), Duration::from_secs(60));
        let issuer = issuer(signer.jwks()).await;
        let ttl = Duration::from_millis(400);
        let cache = JwksCache::with_ttl(
            reqwest::Client::new(),
            Some(issuer.url.clone()),
            Duration::from_millis(50),
            ttl,
        );
        assert!(cache.key("k1").await.is_ok());
        let fetched = Instant::now();
        // Held and fresh: no fetch per use.
        for _ in 0..20 {
            assert!(cache.key("k1").await.is_ok());
        }
        assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1);

        issuer.failing.store(true, Ordering::SeqCst);
        // Past the TTL the refresh fails, but the key is still served (grace)...
        until(&cache, "k1", Duration::from_secs(5), |_| {
            issuer.fetches.load(Ordering::SeqCst) > 1
        })
        .await;
        assert!(
            cache.key("k1").await.is_ok(),
            "kept through a failing refresh"
        );
        // ...until twice the TTL, then nothing is trusted.
        let dropped = until(&cache, "k1", Duration::from_secs(5), |r| {
            matches!(r, Err(JwksError::Unavailable(_)))
        })
        .await;
        assert!(
            dropped.duration_since(fetched) >= ttl * 2,
            "dropped too early"
        );
        // A failing issuer is not asked on every request in the meantime.
        let asked = issuer.fetches.load(Ordering::SeqCst);
        assert!(asked < 40, "{asked} fetches");

        // Once it answers again the keys come back.
        issuer.failing.store(false, Ordering::SeqCst);
        until(&cache, "k1", Duration::from_secs(5), |r| r.is_ok()).await;
    }
}
