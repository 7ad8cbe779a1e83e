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
//! replay of it can pass the timestamp check, an answer for twice the timestamp window, a key
//! whose first request is still running until that request answers, fails, is dropped or
//! [`IN_PROGRESS_TTL`] passes; both caches forget their oldest entries first, a few at a time.
//! Answers need no more because every internal write is itself idempotent (upserts, inserts
//! that ignore duplicates, a status that only moves forward); the cache only saves the repeated
//! work and keeps answers identical. Nonces are also spent in a [`NonceStore`] shared by every
//! instance (ingest's), so a replay to another instance or after a restart is refused too; when
//! that store cannot answer the request gets a 503, never an unchecked pass.

mod breaker;
mod client;
mod idempotency;
mod keys;
mod layer;
mod nonce_store;
mod verifier;

use std::time::Duration;

use axum::http::Method;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub use breaker::CircuitBreaker;
pub use client::{CallError, Client, Reply, RetrySettings};
pub use idempotency::IN_PROGRESS_TTL;
pub use keys::{Keyring, S2sKey};
pub use layer::verify_layer;
pub use nonce_store::NonceStore;
pub use verifier::{S2sCaller, Verifier, VerifyError};

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
