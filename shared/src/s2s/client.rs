//! The signing HTTP client: one peer, retries with backoff, a circuit breaker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Method, StatusCode};

use super::breaker::CircuitBreaker;
use super::keys::Keyring;
use super::{sign, IDEMPOTENCY_KEY};
use crate::domain::TenantId;
use crate::problem::Problem;
use crate::telemetry::{CorrelationId, CORRELATION_HEADER};

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
    /// exponential backoff and jitter (honouring `Retry-After`) for at most `max_elapsed`. 4xx answers are returned as
    /// [`CallError::Status`] at once. The current trace continues at the peer (`traceparent`).
    #[tracing::instrument(name = "s2s call", skip_all, fields(tenant = %tenant, method = %method, route = tracing::field::Empty))]
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
        let attempt = Attempt {
            method: &method,
            url: format!("{}{}", self.base_url, path),
            path,
            json: body.is_some(),
            body: body
                .map(|b| serde_json::to_vec(b).unwrap_or_default())
                .unwrap_or_default(),
            idempotency_key,
            correlation,
            trace_headers: {
                let mut headers = axum::http::HeaderMap::new();
                crate::traces::inject_headers(&mut headers);
                headers
            },
            key,
            started: Instant::now(),
        };
        // The path without ids (no election or other identifier in span attributes' values
        // beyond what the route already says): its first three segments.
        let route: String = path.split('/').take(4).collect::<Vec<_>>().join("/");
        tracing::Span::current().record("route", route.as_str());
        let outcome = backoff::future::retry(self.backoff(), || self.attempt(&attempt)).await;
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

    fn backoff(&self) -> backoff::ExponentialBackoff {
        backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(self.retry.initial)
            .with_max_interval(self.retry.max_interval)
            .with_randomization_factor(0.5)
            .with_multiplier(2.0)
            .with_max_elapsed_time(Some(self.retry.max_elapsed))
            .build()
    }

    /// One try: signed afresh, sent, and its answer sorted into done, retry or give up.
    async fn attempt(&self, a: &Attempt<'_>) -> Result<Reply, backoff::Error<CallError>> {
        let mut request = self
            .http
            .request(a.method.clone(), &a.url)
            .header(CORRELATION_HEADER, &a.correlation.0)
            .headers(a.trace_headers.clone())
            .body(a.body.clone());
        if a.json {
            request = request.header(axum::http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(k) = a.idempotency_key {
            request = request.header(IDEMPOTENCY_KEY, k);
        }
        // A fresh nonce and timestamp per attempt: a retry is not a replay.
        let timestamp = chrono::Utc::now().timestamp();
        for (name, value) in sign(a.key, a.method, a.path, &a.body, timestamp) {
            request = request.header(name, value);
        }
        let transport =
            |e: reqwest::Error| backoff::Error::transient(CallError::Transport(without_url(&e)));
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(5)));
        let body = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return Ok(Reply { status, body });
        }
        let err = CallError::Status { status, body };
        if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
            return Err(backoff::Error::permanent(err));
        }
        Err(match retry_after {
            // backoff honours a Retry-After without looking at its budget: a peer that keeps
            // answering 503 would be retried for ever.
            Some(after) if a.started.elapsed() + after > self.retry.max_elapsed => {
                backoff::Error::permanent(err)
            }
            Some(after) => backoff::Error::retry_after(err, after),
            None => backoff::Error::transient(err),
        })
    }
}

/// What every try of one call sends.
struct Attempt<'a> {
    method: &'a Method,
    url: String,
    path: &'a str,
    json: bool,
    body: Vec<u8>,
    idempotency_key: Option<&'a str>,
    correlation: &'a CorrelationId,
    trace_headers: axum::http::HeaderMap,
    key: &'a super::keys::S2sKey,
    started: Instant,
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
