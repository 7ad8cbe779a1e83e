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
