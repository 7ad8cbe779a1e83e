//! Checking one signed request: key, timestamp window, signature, and the nonce not spent yet.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::Mac;
use sqlx::PgPool;

use super::idempotency::{Answers, IN_PROGRESS_TTL};
use super::keys::Keyring;
use super::nonce_store::NonceStore;
use super::{canonical, DEFAULT_WINDOW, KEY_ID, NONCE, SIGNATURE, TIMESTAMP};
use crate::domain::TenantId;

/// The verified caller, put into the request's extensions by [`super::verify_layer`].
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
    /// The shared nonce store could not be asked: the request was neither accepted nor
    /// refused, and a retry (with a fresh nonce) may pass.
    #[error("S2S replay check unavailable")]
    Unavailable,
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
    /// This instance's spent nonces: refuses a replay to it without a database round trip.
    nonces: Mutex<NonceCache>,
    /// Every instance's spent nonces; `None` in tests that need no database.
    shared_nonces: Option<NonceStore>,
    pub(super) answers: Arc<Answers>,
}

/// The signature headers of a request, parsed, with the key they name.
struct SignedHeaders<'h, 'k> {
    key: &'k super::keys::S2sKey,
    timestamp: i64,
    nonce: &'h str,
    signature: &'h str,
}

/// A request whose signature holds and whose nonce this instance had not seen yet.
#[derive(Debug, PartialEq, Eq)]
struct Checked {
    caller: S2sCaller,
    nonce: String,
    timestamp: i64,
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
            shared_nonces: None,
            answers: Arc::new(Answers::new(window * 2, IN_PROGRESS_TTL)),
        }
    }

    /// Also spends nonces in `pool` (`ops.s2s_nonces`), shared with every other instance.
    pub fn with_nonce_store(mut self, pool: PgPool) -> Self {
        self.shared_nonces = Some(NonceStore::new(pool, self.window));
        self
    }

    /// The shared nonce store, to prune it now and then.
    pub fn nonce_store(&self) -> Option<&NonceStore> {
        self.shared_nonces.as_ref()
    }

    /// Checks one request; on success the nonce is spent, in this instance's memory and (with
    /// a nonce store) in the database.
    pub async fn verify(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<S2sCaller, VerifyError> {
        let checked = self.verify_at(method, path, headers, body, now, Instant::now())?;
        if let Some(store) = &self.shared_nonces {
            store
                .spend(&checked.caller.key_id, &checked.nonce, checked.timestamp)
                .await?;
        }
        Ok(checked.caller)
    }

    /// What can be checked before the body is read: the signature headers are there and well
    /// formed, the key is known and the timestamp is in the window. A request failing this is
    /// refused without reading (or waiting for) its body.
    pub fn precheck(&self, headers: &HeaderMap, now: i64) -> Result<(), VerifyError> {
        self.signed_headers(headers, now).map(|_| ())
    }

    fn signed_headers<'h>(
        &self,
        headers: &'h HeaderMap,
        now: i64,
    ) -> Result<SignedHeaders<'h, '_>, VerifyError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(key_id), Some(timestamp), Some(nonce), Some(signature)) = (
            header(KEY_ID),
            header(TIMESTAMP),
            header(NONCE),
            header(SIGNATURE),
        ) else {
            return Err(VerifyError::MissingHeaders);
        };
        // Letters, digits, `-` and `_` only (`sign` makes hex): a `|` would let the canonical
        // string be cut into another path, timestamp and nonce under the same signature.
        let nonce_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if nonce.len() < 16 || nonce.len() > 64 || !nonce.bytes().all(nonce_char) {
            return Err(VerifyError::MissingHeaders);
        }
        let timestamp: i64 = timestamp.parse().map_err(|_| VerifyError::MissingHeaders)?;
        let key = self.keyring.by_id(key_id).ok_or(VerifyError::UnknownKey)?;
        // abs_diff: no overflow whatever timestamp a stranger sends.
        if now.abs_diff(timestamp) > self.window.as_secs() {
            return Err(VerifyError::Skewed);
        }
        Ok(SignedHeaders {
            key,
            timestamp,
            nonce,
            signature,
        })
    }

    /// [`Self::verify`] up to the shared store, with the arrival instant given, so tests can
    /// move the monotonic clock.
    fn verify_at(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
        arrived: Instant,
    ) -> Result<Checked, VerifyError> {
        let SignedHeaders {
            key,
            timestamp,
            nonce,
            signature,
        } = self.signed_headers(headers, now)?;
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
        Ok(Checked {
            caller: S2sCaller {
                tenant: key.tenant.clone(),
                key_id: key.id.clone(),
            },
            nonce: nonce.to_owned(),
            timestamp,
        })
    }
}

#[cfg(test)]
mod tests;
