//! Service-to-service calls signed with HMAC-SHA256.
//!
//! The signature covers `METHOD|PATH|TIMESTAMP|NONCE|hex(sha256(body))` and travels in
//! `X-Signature` (base64url) beside `X-Key-Id`, `X-Timestamp` (Unix seconds) and `X-Nonce`.
//! Keys are per tenant; a tenant may have several keys at once so a new one can be rolled out
//! before the old one is withdrawn. The server layer rejects bad signatures, timestamps outside
//! the window and replayed nonces, and answers a repeated `X-Idempotency-Key` with the first
//! answer. The client retries 5xx/429 only (exponential backoff with jitter) and stops calling
//! a failing peer for a while (circuit breaker).
//!
//! Nonces and idempotent answers are remembered in memory, per instance: a nonce until no
//! replay of it can pass the timestamp check, an answer for twice the timestamp window; both
//! caches forget their oldest entries first, a few at a time. That is enough because every
//! internal write is itself idempotent (upserts, inserts that ignore duplicates); the cache only
//! saves the repeated work and keeps answers identical.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::TenantId;
use crate::problem::Problem;
use crate::telemetry::{CorrelationId, CORRELATION_HEADER};

type HmacSha256 = Hmac<Sha256>;

pub const KEY_ID: &str = "x-key-id";
pub const TIMESTAMP: &str = "x-timestamp";
pub const NONCE: &str = "x-nonce";
pub const SIGNATURE: &str = "x-signature";
pub const IDEMPOTENCY_KEY: &str = "x-idempotency-key";
/// How far a request's timestamp may be from the receiver's clock.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Internal bodies (bulk token registration) are bounded too.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct S2sKey {
    pub id: String,
    pub tenant: TenantId,
    secret: Vec<u8>,
}

impl std::fmt::Debug for S2sKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2sKey")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl S2sKey {
    pub fn new(id: impl Into<String>, tenant: TenantId, secret: Vec<u8>) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err("S2S secrets need at least 32 bytes".into());
        }
        Ok(Self {
            id: id.into(),
            tenant,
            secret,
        })
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts any key length")
    }
}

/// All S2S keys a service knows. For signing, a tenant's *first* key is its current one.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<S2sKey>,
}

impl Keyring {
    pub fn new(keys: Vec<S2sKey>) -> Self {
        Self { keys }
    }

    /// Parses `S2S_KEYS`: `keyid:tenant:base64url-secret` entries separated by commas, the
    /// current key of each tenant first.
    pub fn from_config(raw: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut parts = entry.splitn(3, ':');
            let (Some(id), Some(tenant), Some(secret)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err("each S2S key is keyid:tenant:base64url-secret".into());
            };
            let tenant = TenantId::parse(tenant).map_err(|e| format!("S2S key {id}: {e}"))?;
            let secret = B64
                .decode(secret.trim_end_matches('='))
                .map_err(|_| format!("S2S key {id}: secret is not base64url"))?;
            keys.push(S2sKey::new(id, tenant, secret).map_err(|e| format!("S2S key {id}: {e}"))?);
        }
        Ok(Self { keys })
    }

    pub fn current_for(&self, tenant: &TenantId) -> Option<&S2sKey> {
        self.keys.iter().find(|k| &k.tenant == tenant)
    }

    pub fn by_id(&self, id: &str) -> Option<&S2sKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

fn canonical(method: &Method, path: &str, timestamp: i64, nonce: &str, body: &[u8]) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        method.as_str(),
        path,
        timestamp,
        nonce,
        hex::encode(Sha256::digest(body))
    )
}

/// The headers that sign one request.
pub fn sign(
    key: &S2sKey,
    method: &Method,
    path: &str,
    body: &[u8],
    timestamp: i64,
) -> Vec<(&'static str, String)> {
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let nonce = hex::encode(nonce);
    let mut mac = key.mac();
    mac.update(canonical(method, path, timestamp, &nonce, body).as_bytes());
    let signature = B64.encode(mac.finalize().into_bytes());
    vec![
        (KEY_ID, key.id.clone()),
        (TIMESTAMP, timestamp.to_string()),
        (NONCE, nonce),
        (SIGNATURE, signature),
    ]
}

/// The verified caller, put into the request's extensions by [`verify_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S2sCaller {
    pub tenant: TenantId,
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing or malformed S2S signature headers")]
    MissingHeaders,
    #[error("unknown S2S key")]
    UnknownKey,
    #[error("S2S timestamp outside the accepted window")]
    Skewed,
    #[error("S2S signature does not match")]
    BadSignature,
    #[error("S2S nonce was already used")]
    Replayed,
}

struct IdempotentEntry {
    fingerprint: [u8; 32],
    stored_at: Instant,
    answer: Option<(StatusCode, Option<HeaderValue>, Bytes)>,
}

/// Idempotent answers by `(tenant, idempotency key)`, each kept for twice the window after its
/// first request. `order` lists the entries as they were stored, so pruning pops from its front
/// and stops at the first entry still young enough: amortised O(1) per request instead of a scan
/// of every cached answer. A key that was removed (its first attempt failed) and stored again
/// has two records in `order`; the older one no longer matches the entry and only goes away.
#[derive(Default)]
struct AnswerCache {
    entries: HashMap<(String, String), IdempotentEntry>,
    order: VecDeque<(Instant, (String, String))>,
}

impl AnswerCache {
    /// Forgets the answers stored `retention` or longer before `now`, oldest first.
    fn prune(&mut self, now: Instant, retention: Duration) {
        while let Some((stored_at, _)) = self.order.front() {
            if now.saturating_duration_since(*stored_at) < retention {
                break;
            }
            let Some((stored_at, key)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&key)
                .is_some_and(|entry| entry.stored_at == stored_at)
            {
                self.entries.remove(&key);
            }
        }
    }

    fn insert(&mut self, key: (String, String), entry: IdempotentEntry) {
        self.order.push_back((entry.stored_at, key.clone()));
        self.entries.insert(key, entry);
    }
}

/// Spent nonces, `(key id, nonce)`, each kept until no replay of it can pass the timestamp
/// check any more.
///
/// A request signed at `timestamp` passes the check while `|now - timestamp| <= window`, and it
/// was first accepted at some `now >= timestamp - window`, so a replay can pass at most
/// `2 × window` after the first arrival, plus up to one second because both `now` and the
/// timestamp are whole seconds. An entry is dropped only when both clocks agree it is out of
/// reach: the monotonic clock says more than that retention has passed since its arrival, and
/// the caller's `now` is past `timestamp + window`.
///
/// `order` holds the entries in arrival order, so pruning pops from its front and stops at the
/// first entry still needed: amortised O(1) per call instead of a scan of every cached nonce.
#[derive(Default)]
struct NonceCache {
    seen: HashSet<Arc<(String, String)>>,
    order: VecDeque<SpentNonce>,
}

struct SpentNonce {
    arrived: Instant,
    timestamp: i64,
    key: Arc<(String, String)>,
}

impl NonceCache {
    /// Forgets the entries no replay can reach any more, oldest first.
    fn prune(&mut self, arrived: Instant, now: i64, window: Duration) {
        let retention = window * 2 + Duration::from_secs(1);
        let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        while let Some(oldest) = self.order.front() {
            let expired = arrived.saturating_duration_since(oldest.arrived) > retention
                && now.saturating_sub(oldest.timestamp) > window;
            if !expired {
                break;
            }
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest.key);
            }
        }
    }

    /// Records a nonce; `false` if it was already spent.
    fn spend(&mut self, key: (String, String), timestamp: i64, arrived: Instant) -> bool {
        if self.seen.contains(&key) {
            return false;
        }
        let key = Arc::new(key);
        self.seen.insert(Arc::clone(&key));
        self.order.push_back(SpentNonce {
            arrived,
            timestamp,
            key,
        });
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        debug_assert_eq!(self.seen.len(), self.order.len());
        self.seen.len()
    }
}

/// Server side: checks signatures, timestamps and nonces; remembers idempotent answers.
pub struct Verifier {
    keyring: Keyring,
    window: Duration,
    nonces: Mutex<NonceCache>,
    answers: Mutex<AnswerCache>,
}

impl Verifier {
    pub fn new(keyring: Keyring) -> Self {
        Self::with_window(keyring, DEFAULT_WINDOW)
    }

    pub fn with_window(keyring: Keyring, window: Duration) -> Self {
        Self {
            keyring,
            window,
            nonces: Mutex::new(NonceCache::default()),
            answers: Mutex::new(AnswerCache::default()),
        }
    }

    /// Checks one request; on success the nonce is spent.
    pub fn verify(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<S2sCaller, VerifyError> {
        self.verify_at(method, path, headers, body, now, Instant::now())
    }

    /// [`Self::verify`] with the arrival instant given, so tests can move the monotonic clock.
    fn verify_at(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
        arrived: Instant,
    ) -> Result<S2sCaller, VerifyError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(key_id), Some(timestamp), Some(nonce), Some(signature)) = (
            header(KEY_ID),
            header(TIMESTAMP),
            header(NONCE),
            header(SIGNATURE),
        ) else {
            return Err(VerifyError::MissingHeaders);
        };
        if nonce.len() < 16 || nonce.len() > 64 {
            return Err(VerifyError::MissingHeaders);
        }
        let timestamp: i64 = timestamp.parse().map_err(|_| VerifyError::MissingHeaders)?;
        let key = self.keyring.by_id(key_id).ok_or(VerifyError::UnknownKey)?;
        if (now - timestamp).unsigned_abs() > self.window.as_secs() {
            return Err(VerifyError::Skewed);
        }
        let signature = B64
            .decode(signature)
            .map_err(|_| VerifyError::BadSignature)?;
        let mut mac = key.mac();
        mac.update(canonical(method, path, timestamp, nonce, body).as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| VerifyError::BadSignature)?;

        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        nonces.prune(arrived, now, self.window);
        if !nonces.spend((key.id.clone(), nonce.to_owned()), timestamp, arrived) {
            return Err(VerifyError::Replayed);
        }
        Ok(S2sCaller {
            tenant: key.tenant.clone(),
            key_id: key.id.clone(),
        })
    }
}

fn verify_problem(error: &VerifyError) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "s2s-unauthorized",
        "Unauthorized",
        error.to_string(),
    )
}

/// axum middleware (`middleware::from_fn_with_state(verifier, verify_layer)`) for internal routes.
pub async fn verify_layer(
    State(verifier): State<Arc<Verifier>>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return crate::problem::body_too_large().into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let now = chrono::Utc::now().timestamp();
    let caller = match verifier.verify(&parts.method, &path, &parts.headers, &bytes, now) {
        Ok(caller) => caller,
        Err(e) => {
            tracing::warn!(reason = %e, "S2S request refused");
            return verify_problem(&e).into_response();
        }
    };
    let idempotency_key = parts
        .headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .map(str::to_owned);
    parts.extensions.insert(caller.clone());
    let Some(idempotency_key) = idempotency_key else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };

    // The same key with another request is a client bug, not a retry.
    let mut fingerprint_hasher = Sha256::new();
    fingerprint_hasher.update(parts.method.as_str());
    fingerprint_hasher.update(path.as_bytes());
    fingerprint_hasher.update(&bytes);
    let fingerprint: [u8; 32] = fingerprint_hasher.finalize().into();
    let cache_key = (caller.tenant.to_string(), idempotency_key);
    {
        let mut answers = verifier.answers.lock().unwrap_or_else(|p| p.into_inner());
        let window = verifier.window * 2;
        answers.prune(Instant::now(), window);
        match answers.entries.get(&cache_key) {
            Some(entry) if entry.stored_at.elapsed() < window => {
                if entry.fingerprint != fingerprint {
                    return Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "idempotency-key-reused",
                        "Idempotency key reused",
                        "this idempotency key was used for a different request",
                    )
                    .into_response();
                }
                return match &entry.answer {
                    Some((status, content_type, body)) => {
                        let mut response = (*status, body.clone()).into_response();
                        if let Some(ct) = content_type {
                            response
                                .headers_mut()
                                .insert(axum::http::header::CONTENT_TYPE, ct.clone());
                        }
                        response
                            .headers_mut()
                            .insert("idempotent-replayed", HeaderValue::from_static("true"));
                        response
                    }
                    None => Problem::unavailable(
                        "in-progress",
                        "the first request with this idempotency key is still running",
                        1,
                    )
                    .into_response(),
                };
            }
            _ => {
                answers.insert(
                    cache_key.clone(),
                    IdempotentEntry {
                        fingerprint,
                        stored_at: Instant::now(),
                        answer: None,
                    },
                );
            }
        }
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (response_parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let mut answers = verifier.answers.lock().unwrap_or_else(|p| p.into_inner());
    if response_parts.status.is_server_error()
        || response_parts.status == StatusCode::TOO_MANY_REQUESTS
    {
        // Failures are not answers: let the retry do the work again.
        answers.entries.remove(&cache_key);
    } else if let Some(entry) = answers.entries.get_mut(&cache_key) {
        entry.answer = Some((
            response_parts.status,
            response_parts
                .headers
                .get(axum::http::header::CONTENT_TYPE)
                .cloned(),
            body.clone(),
        ));
    }
    drop(answers);
    Response::from_parts(response_parts, Body::from(body))
}

/// Extractor for handlers behind [`verify_layer`].
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for S2sCaller {
    type Rejection = Problem;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<S2sCaller>()
            .cloned()
            .ok_or_else(|| verify_problem(&VerifyError::MissingHeaders))
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no S2S key configured for tenant {0}")]
    NoKey(TenantId),
    #[error("the peer is failing; calls are paused (circuit open)")]
    CircuitOpen,
    #[error("the peer could not be reached: {0}")]
    Transport(String),
    #[error("the peer answered {status}")]
    Status { status: StatusCode, body: Bytes },
}

impl CallError {
    /// The peer answered; its problem body, if it sent one.
    pub fn problem(&self) -> Option<Problem> {
        match self {
            Self::Status { body, .. } => serde_json::from_slice(body).ok(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RetrySettings {
    pub initial: Duration,
    pub max_interval: Duration,
    /// Total time spent retrying one call.
    pub max_elapsed: Duration,
    pub attempt_timeout: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max_interval: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(8),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// Opens after `threshold` consecutive failed calls; after `cooldown` one trial call is let
/// through (half-open) and its outcome closes or re-opens it.
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            state: Mutex::new(BreakerState::default()),
        }
    }

    fn allow(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.open_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                // Half-open: this caller is the trial; others stay out until it reports.
                state.open_until = Some(Instant::now() + self.cooldown);
                true
            }
            None => true,
        }
    }

    fn record(&self, success: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if success {
            state.consecutive_failures = 0;
            state.open_until = None;
        } else {
            state.consecutive_failures += 1;
            if state.consecutive_failures >= self.threshold {
                state.open_until = Some(Instant::now() + self.cooldown);
            }
        }
    }

    pub fn is_open(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.open_until.is_some_and(|until| Instant::now() < until)
    }
}

/// A signing HTTP client for one peer.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    keyring: Keyring,
    retry: RetrySettings,
    breaker: Arc<CircuitBreaker>,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, CallError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| CallError::Transport(format!("unreadable answer: {e}")))
    }
}

impl Client {
    pub fn new(base_url: impl Into<String>, keyring: Keyring, retry: RetrySettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(retry.attempt_timeout)
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            keyring,
            retry,
            breaker: Arc::new(CircuitBreaker::new(5, Duration::from_secs(10))),
        }
    }

    pub fn with_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Arc::new(breaker);
        self
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Sends one signed request for `tenant`, retrying 5xx, 429 and transport failures with
    /// exponential backoff and jitter (honouring `Retry-After`). 4xx answers are returned as
    /// [`CallError::Status`] at once.
    pub async fn call(
        &self,
        tenant: &TenantId,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotency_key: Option<&str>,
        correlation: &CorrelationId,
    ) -> Result<Reply, CallError> {
        let key = self
            .keyring
            .current_for(tenant)
            .ok_or_else(|| CallError::NoKey(tenant.clone()))?;
        if !self.breaker.allow() {
            return Err(CallError::CircuitOpen);
        }
        let body_bytes = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let policy = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(self.retry.initial)
            .with_max_interval(self.retry.max_interval)
            .with_randomization_factor(0.5)
            .with_multiplier(2.0)
            .with_max_elapsed_time(Some(self.retry.max_elapsed))
            .build();
        let url = format!("{}{}", self.base_url, path);
        let outcome =
            backoff::future::retry(policy, || async {
                let mut request = self
                    .http
                    .request(method.clone(), &url)
                    .header(CORRELATION_HEADER, &correlation.0)
                    .body(body_bytes.clone());
                if body.is_some() {
                    request = request.header(axum::http::header::CONTENT_TYPE, "application/json");
                }
                if let Some(k) = idempotency_key {
                    request = request.header(IDEMPOTENCY_KEY, k);
                }
                // A fresh nonce and timestamp per attempt: a retry is not a replay.
                for (name, value) in sign(
                    key,
                    &method,
                    path,
                    &body_bytes,
                    chrono::Utc::now().timestamp(),
                ) {
                    request = request.header(name, value);
                }
                let response = request.send().await.map_err(|e| {
                    backoff::Error::transient(CallError::Transport(without_url(&e)))
                })?;
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(axum::http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(5)));
                let bytes = response.bytes().await.map_err(|e| {
                    backoff::Error::transient(CallError::Transport(without_url(&e)))
                })?;
                if status.is_success() {
                    Ok(Reply {
                        status,
                        body: bytes,
                    })
                } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    let err = CallError::Status {
                        status,
                        body: bytes,
                    };
                    Err(match retry_after {
                        Some(after) => backoff::Error::retry_after(err, after),
                        None => backoff::Error::transient(err),
                    })
                } else {
                    Err(backoff::Error::permanent(CallError::Status {
                        status,
                        body: bytes,
                    }))
                }
            })
            .await;
        let peer_failed = match &outcome {
            Ok(_) => false,
            Err(CallError::Status { status, .. }) => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Err(_) => true,
        };
        self.breaker.record(!peer_failed);
        outcome
    }
}

fn without_url(error: &reqwest::Error) -> String {
    // reqwest's Display includes the URL; the kind is enough and cannot leak anything.
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, tenant: &str, byte: u8) -> S2sKey {
        S2sKey::new(id, TenantId::parse(tenant).unwrap(), vec![byte; 32]).unwrap()
    }

    fn headers(pairs: Vec<(&'static str, String)>) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn signatures_verify_and_are_bound_to_everything_signed() {
        let k = key("k1", "party-a", 1);
        let verifier = Verifier::new(Keyring::new(vec![k.clone()]));
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"a":1}"#;
        let signed = headers(sign(&k, &Method::PUT, "/internal/v1/x", body, now));
        assert!(verifier
            .verify(&Method::PUT, "/internal/v1/x", &signed, body, now)
            .is_ok());
        // The same headers again: the nonce is spent.
        assert_eq!(
            verifier.verify(&Method::PUT, "/internal/v1/x", &signed, body, now),
            Err(VerifyError::Replayed)
        );
        let fresh = headers(sign(&k, &Method::PUT, "/internal/v1/x", body, now));
        assert_eq!(
            verifier.verify(&Method::PUT, "/internal/v1/x", &fresh, br#"{"a":2}"#, now),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verifier.verify(&Method::POST, "/internal/v1/x", &fresh, body, now),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verifier.verify(&Method::PUT, "/internal/v1/y", &fresh, body, now),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn skew_unknown_and_wrong_keys_are_refused_and_rotation_works() {
        let old = key("k-old", "party-a", 1);
        let new = key("k-new", "party-a", 2);
        let verifier = Verifier::new(Keyring::new(vec![new.clone(), old.clone()]));
        let now = chrono::Utc::now().timestamp();
        let skewed = headers(sign(&old, &Method::GET, "/p", b"", now - 3600));
        assert_eq!(
            verifier.verify(&Method::GET, "/p", &skewed, b"", now),
            Err(VerifyError::Skewed)
        );
        let stranger = key("k-x", "party-a", 3);
        let unknown = headers(sign(&stranger, &Method::GET, "/p", b"", now));
        assert_eq!(
            verifier.verify(&Method::GET, "/p", &unknown, b"", now),
            Err(VerifyError::UnknownKey)
        );
        // Right key id, wrong secret.
        let impostor = key("k-old", "party-a", 9);
        let forged = headers(sign(&impostor, &Method::GET, "/p", b"", now));
        assert_eq!(
            verifier.verify(&Method::GET, "/p", &forged, b"", now),
            Err(VerifyError::BadSignature)
        );
        // Both rotation keys are accepted.
        for k in [&old, &new] {
            let h = headers(sign(k, &Method::GET, "/p", b"", now));
            assert_eq!(
                verifier
                    .verify(&Method::GET, "/p", &h, b"", now)
                    .unwrap()
                    .tenant
                    .as_str(),
                "party-a"
            );
        }
        assert!(verifier
            .verify(&Method::GET, "/p", &HeaderMap::new(), b"", now)
            .is_err());
    }

    /// Spends `n` fresh nonces signed at `timestamp`, arriving at `arrived`.
    fn spend_fresh(verifier: &Verifier, k: &S2sKey, n: usize, timestamp: i64, arrived: Instant) {
        for _ in 0..n {
            let h = headers(sign(k, &Method::POST, "/p", b"", timestamp));
            verifier
                .verify_at(&Method::POST, "/p", &h, b"", timestamp, arrived)
                .expect("a fresh nonce");
        }
    }

    fn cached_nonces(verifier: &Verifier) -> usize {
        verifier.nonces.lock().unwrap().len()
    }

    #[test]
    fn replays_are_refused_for_as_long_as_the_timestamp_check_would_pass_them() {
        let window = Duration::from_secs(300);
        let k = key("k1", "party-a", 1);
        let verifier = Verifier::with_window(Keyring::new(vec![k.clone()]), window);
        let start = Instant::now();
        let t0 = chrono::Utc::now().timestamp();
        // Signed as far in the future as the window allows, so its replays pass the timestamp
        // check for the longest possible time: until t0 + 2 × window by the receiver's clock.
        let signed_at = t0 + 300;
        let target = headers(sign(&k, &Method::POST, "/p", b"", signed_at));
        verifier
            .verify_at(&Method::POST, "/p", &target, b"", signed_at, start)
            .expect("first use");
        // Whole seconds: if the first use came at the very start of second t0, the wall clock
        // still reads t0 + 600 up to 600.999 s later, and a replay then still passes.
        let mut last = 0;
        for (elapsed_ms, now) in [
            (1_000, t0 + 1),
            (299_000, t0 + 299),
            (599_000, t0 + 599),
            (600_000, t0 + 600),
            (600_999, t0 + 600),
        ] {
            let arrived = start + Duration::from_millis(elapsed_ms);
            // Well over 10,000 other nonces arrive meanwhile, and every call prunes.
            spend_fresh(&verifier, &k, 2_000, now, arrived);
            last = elapsed_ms;
            assert_eq!(
                verifier.verify_at(&Method::POST, "/p", &target, b"", now, arrived),
                Err(VerifyError::Replayed),
                "replay {elapsed_ms} ms after the first use, at now = t0 + {}",
                now - t0
            );
        }
        assert_eq!(last, 600_999);
        // One second later the timestamp check refuses it on its own.
        let arrived = start + Duration::from_millis(601_000);
        assert_eq!(
            verifier.verify_at(&Method::POST, "/p", &target, b"", t0 + 601, arrived),
            Err(VerifyError::Skewed)
        );
    }

    #[test]
    fn a_lagging_wall_clock_keeps_nonces_its_window_still_accepts() {
        let k = key("k1", "party-a", 1);
        let verifier = Verifier::new(Keyring::new(vec![k.clone()]));
        let start = Instant::now();
        let t0 = chrono::Utc::now().timestamp();
        let target = headers(sign(&k, &Method::POST, "/p", b"", t0));
        verifier
            .verify_at(&Method::POST, "/p", &target, b"", t0, start)
            .expect("first use");
        // An hour passes on the monotonic clock, but the wall clock was stepped back: by the
        // timestamp check the request is still fresh, so its nonce must still be spent.
        let later = start + Duration::from_secs(3_600);
        spend_fresh(&verifier, &k, 10, t0 + 10, later);
        assert_eq!(
            verifier.verify_at(&Method::POST, "/p", &target, b"", t0 + 10, later),
            Err(VerifyError::Replayed)
        );
    }

    #[test]
    fn a_wall_clock_briefly_ahead_does_not_forget_nonces_still_in_reach() {
        let k = key("k1", "party-a", 1);
        let verifier = Verifier::new(Keyring::new(vec![k.clone()]));
        let start = Instant::now();
        let t0 = chrono::Utc::now().timestamp();
        let target = headers(sign(&k, &Method::POST, "/p", b"", t0));
        verifier
            .verify_at(&Method::POST, "/p", &target, b"", t0, start)
            .expect("first use");
        // The wall clock jumps an hour ahead while calls keep coming (they prune)...
        spend_fresh(
            &verifier,
            &k,
            10,
            t0 + 3_600,
            start + Duration::from_secs(5),
        );
        // ...and is set right again: the request is fresh by the timestamp check once more.
        let back = start + Duration::from_secs(10);
        spend_fresh(&verifier, &k, 10, t0 + 10, back);
        assert_eq!(
            verifier.verify_at(&Method::POST, "/p", &target, b"", t0 + 10, back),
            Err(VerifyError::Replayed)
        );
    }

    #[test]
    fn nonces_out_of_reach_are_forgotten_so_the_cache_stays_bounded() {
        let window = Duration::from_secs(300);
        let k = key("k1", "party-a", 1);
        let verifier = Verifier::with_window(Keyring::new(vec![k.clone()]), window);
        let start = Instant::now();
        let t0 = chrono::Utc::now().timestamp();
        spend_fresh(&verifier, &k, 15_000, t0, start);
        assert_eq!(cached_nonces(&verifier), 15_000);
        // Still within reach (2 × window + 1 s from arrival): nothing is forgotten.
        spend_fresh(&verifier, &k, 1, t0 + 601, start + Duration::from_secs(601));
        assert_eq!(cached_nonces(&verifier), 15_001);
        // Out of reach of both clocks: the next call forgets the old ones.
        spend_fresh(
            &verifier,
            &k,
            1,
            t0 + 602,
            start + Duration::from_millis(601_001),
        );
        assert_eq!(cached_nonces(&verifier), 2);
        // A steady stream keeps the cache at what arrives within the retention, however long
        // it runs: one call per 100 ms for 30 minutes.
        for step in 1..=18_000u64 {
            let arrived = start + Duration::from_millis(601_001 + step * 100);
            let now = t0 + 602 + i64::try_from(step / 10).unwrap();
            spend_fresh(&verifier, &k, 1, now, arrived);
        }
        let cached = cached_nonces(&verifier);
        assert!(
            (6_000..=6_030).contains(&cached),
            "{cached} nonces cached; 601 s at 10 calls/s is about 6,010"
        );
    }

    fn pending(stored_at: Instant) -> IdempotentEntry {
        IdempotentEntry {
            fingerprint: [0; 32],
            stored_at,
            answer: None,
        }
    }

    fn answer_key(i: usize) -> (String, String) {
        ("party-a".into(), format!("token-{i}"))
    }

    #[test]
    fn answers_are_kept_for_the_retention_and_then_forgotten() {
        let retention = Duration::from_secs(600);
        let start = Instant::now();
        let mut cache = AnswerCache::default();
        for i in 0..15_000 {
            cache.insert(answer_key(i), pending(start));
        }
        cache.insert(answer_key(15_000), pending(start + Duration::from_secs(1)));
        cache.prune(start + Duration::from_millis(599_999), retention);
        assert_eq!(cache.entries.len(), 15_001, "nothing is forgotten early");
        cache.prune(start + retention, retention);
        assert_eq!(cache.entries.len(), 1);
        assert!(cache.entries.contains_key(&answer_key(15_000)));
        assert_eq!(cache.order.len(), 1);
        // A steady stream keeps the cache at what arrives within the retention: one request
        // per 100 ms for 30 minutes.
        for step in 1..=18_000u32 {
            let now = start + retention + Duration::from_millis(u64::from(step) * 100);
            cache.prune(now, retention);
            cache.insert(answer_key(20_000 + step as usize), pending(now));
        }
        assert_eq!(cache.entries.len(), 6_000);
        assert_eq!(cache.order.len(), 6_000);
    }

    #[test]
    fn an_answer_stored_again_after_a_failed_attempt_lives_its_full_retention() {
        let retention = Duration::from_secs(600);
        let start = Instant::now();
        let mut cache = AnswerCache::default();
        // The first attempt failed (its entry was removed); the retry stored it again later.
        cache.insert(answer_key(1), pending(start));
        cache.entries.remove(&answer_key(1));
        let retried = start + Duration::from_secs(30);
        cache.insert(answer_key(1), pending(retried));
        // The first attempt's record expires: the retry's answer stays.
        cache.prune(start + retention, retention);
        assert_eq!(
            cache.entries.get(&answer_key(1)).map(|e| e.stored_at),
            Some(retried)
        );
        cache.prune(retried + retention, retention);
        assert!(cache.entries.is_empty());
        assert!(cache.order.is_empty());
    }

    #[test]
    fn breaker_opens_after_repeated_failures() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(breaker.allow());
            breaker.record(false);
        }
        assert!(!breaker.allow());
        assert!(breaker.is_open());
    }
}
