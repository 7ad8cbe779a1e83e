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
mod tests {
    use super::*;
    use crate::s2s::{sign, S2sKey};

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

    #[tokio::test]
    async fn signatures_verify_and_are_bound_to_everything_signed() {
        let k = key("k1", "party-a", 1);
        let verifier = Verifier::new(Keyring::new(vec![k.clone()]));
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"a":1}"#;
        let signed = headers(sign(&k, &Method::PUT, "/internal/v1/x", body, now));
        assert!(verifier
            .verify(&Method::PUT, "/internal/v1/x", &signed, body, now)
            .await
            .is_ok());
        // The same headers again: the nonce is spent.
        assert_eq!(
            verifier
                .verify(&Method::PUT, "/internal/v1/x", &signed, body, now)
                .await,
            Err(VerifyError::Replayed)
        );
        let fresh = headers(sign(&k, &Method::PUT, "/internal/v1/x", body, now));
        assert_eq!(
            verifier
                .verify(&Method::PUT, "/internal/v1/x", &fresh, br#"{"a":2}"#, now)
                .await,
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verifier
                .verify(&Method::POST, "/internal/v1/x", &fresh, body, now)
                .await,
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verifier
                .verify(&Method::PUT, "/internal/v1/y", &fresh, body, now)
                .await,
            Err(VerifyError::BadSignature)
        );
    }

    #[tokio::test]
    async fn skew_unknown_and_wrong_keys_are_refused_and_rotation_works() {
        let old = key("k-old", "party-a", 1);
        let new = key("k-new", "party-a", 2);
        let verifier = Verifier::new(Keyring::new(vec![new.clone(), old.clone()]));
        let now = chrono::Utc::now().timestamp();
        let skewed = headers(sign(&old, &Method::GET, "/p", b"", now - 3600));
        assert_eq!(
            verifier.verify(&Method::GET, "/p", &skewed, b"", now).await,
            Err(VerifyError::Skewed)
        );
        let stranger = key("k-x", "party-a", 3);
        let unknown = headers(sign(&stranger, &Method::GET, "/p", b"", now));
        assert_eq!(
            verifier
                .verify(&Method::GET, "/p", &unknown, b"", now)
                .await,
            Err(VerifyError::UnknownKey)
        );
        // Right key id, wrong secret.
        let impostor = key("k-old", "party-a", 9);
        let forged = headers(sign(&impostor, &Method::GET, "/p", b"", now));
        assert_eq!(
            verifier.verify(&Method::GET, "/p", &forged, b"", now).await,
            Err(VerifyError::BadSignature)
        );
        // Both rotation keys are accepted.
        for k in [&old, &new] {
            let h = headers(sign(k, &Method::GET, "/p", b"", now));
            assert_eq!(
                verifier
                    .verify(&Method::GET, "/p", &h, b"", now)
                    .await
                    .unwrap()
                    .tenant
                    .as_str(),
                "party-a"
            );
        }
        assert!(verifier
            .verify(&Method::GET, "/p", &HeaderMap::new(), b"", now)
            .await
            .is_err());
    }

    /// Found with the `s2s` fuzz target: `now - timestamp` overflowed for a timestamp of
    /// i64::MIN, a panic wherever overflow checks are on (debug builds, tests, the fuzzer).
    #[tokio::test]
    async fn an_extreme_timestamp_is_skewed_not_an_overflow() {
        let k = key("k1", "party-a", 1);
        let verifier = Verifier::new(Keyring::new(vec![k.clone()]));
        let now = chrono::Utc::now().timestamp();
        for timestamp in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let signed = headers(sign(&k, &Method::GET, "/p", b"", timestamp));
            assert_eq!(
                verifier.verify(&Method::GET, "/p", &signed, b"", now).await,
                Err(VerifyError::Skewed),
                "{timestamp}"
            );
        }
    }

    /// Found by the `s2s` fuzz target: with `|` allowed in a nonce, the canonical string of a
    /// request signed for `/a|<now>|q` could be cut differently, into a request for `/a` with the
    /// nonce `q|<now>|<nonce>`, and the same signature verified it.
    #[tokio::test]
    async fn a_signature_verifies_only_the_request_it_was_made_for() {
        let k = key("k1", "party-a", 1);
        let verifier = Verifier::new(Keyring::new(vec![k.clone()]));
        let now = chrono::Utc::now().timestamp();
        let signed_path = format!("/a|{now}|q");
        let signed = sign(&k, &Method::PUT, &signed_path, b"", now);
        let value = |name: &str| {
            signed
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let cut = headers(vec![
            (KEY_ID, value(KEY_ID)),
            (TIMESTAMP, now.to_string()),
            (NONCE, format!("q|{now}|{}", value(NONCE))),
            (SIGNATURE, value(SIGNATURE)),
        ]);
        assert!(verifier
            .verify(&Method::PUT, "/a", &cut, b"", now)
            .await
            .is_err());
        // The request it was made for still verifies.
        assert!(verifier
            .verify(&Method::PUT, &signed_path, &headers(signed), b"", now)
            .await
            .is_ok());
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
}
