//! The voting token (`shared::token::TokenVerifier::verify`), as ingest receives it in
//! `Authorization: Bearer`.
//!
//! First byte even: the rest is the token as sent. Odd: the rest is `header JSON \n claims JSON`,
//! signed with the tenant's real key, so the fuzzer reaches what is checked after the signature
//! (a forger never gets there, but events-svc's claims do).
//!
//! Properties: never panics; an error never shows the token; a token that verifies is bound to
//! the key's tenant, the election and the clock, has one spelling only (no re-encoding or
//! second signature passes), and its claims re-signed after a serialisation round trip verify
//! to the same token. Checked in a batch beside a genuine token (`verify_many`), every token
//! gets the answer it gets alone.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::Duration;
use ekklesia_fuzz as fx;
use libfuzzer_sys::fuzz_target;
use shared::domain::TokenHash;
use shared::token::{Claims, TokenError, VerifiedToken, CLOCK_LEEWAY_SECONDS};
use uuid::Uuid;

/// The group order of Ed25519, little-endian: S + L is the other spelling of a signature scalar.
const ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

fn verify(token: &str) -> Result<VerifiedToken, TokenError> {
    fx::token_verifier().verify(token, fx::election(), fx::now())
}

fn check_error(token: &str, error: &TokenError) {
    let text = error.to_string();
    // From 64 characters up (every part of a real token is longer): shorter parts are what the
    // fuzzer copies out of the messages themselves.
    for part in token.split('.').filter(|p| p.len() >= 64) {
        assert!(!text.contains(part), "the error shows the token: {text}");
    }
}

/// What must hold of every token that verifies.
fn check_verified(token: &str, verified: &VerifiedToken) {
    let (header_b64, claims_b64, signature_b64) = {
        let mut parts = token.split('.');
        (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        )
    };
    let claims: Claims = serde_json::from_slice(
        &B64.decode(claims_b64)
            .expect("verified claims are base64url"),
    )
    .expect("verified claims are JSON");
    let header: serde_json::Value = serde_json::from_slice(
        &B64.decode(header_b64)
            .expect("a verified header is base64url"),
    )
    .expect("a verified header is JSON");
    let signer = match header["kid"].as_str() {
        Some(fx::TOKEN_KID) => fx::token_signer(),
        Some(fx::OTHER_TOKEN_KID) => fx::other_token_signer(),
        other => panic!("verified with a key id the verifier does not hold: {other:?}"),
    };
    assert_eq!(&verified.tenant, signer.tenant(), "another tenant's token");
    assert_eq!(claims.ten, verified.tenant);
    assert_eq!(verified.election_id, fx::election());
    assert!(claims.exp > fx::NOW - CLOCK_LEEWAY_SECONDS, "expired");
    assert!(
        claims.nbf <= fx::NOW + CLOCK_LEEWAY_SECONDS,
        "not valid yet"
    );
    assert!(verified.token_id().len() >= 16, "a short token id");
    assert_eq!(
        B64.decode(&claims.jti).ok().as_deref(),
        Some(verified.token_id())
    );
    assert_eq!(
        verified.token_hash(),
        TokenHash::of_token_id(verified.token_id())
    );
    assert!(
        !format!("{verified:?}").contains(&claims.jti),
        "Debug shows the token id"
    );

    // Bound to its election and its validity window.
    assert_eq!(
        fx::token_verifier()
            .verify(token, Uuid::from_u128(7), fx::now())
            .err(),
        Some(TokenError::WrongElection)
    );
    if let Some(after) = chrono::DateTime::from_timestamp(claims.exp, 0)
        .and_then(|t| t.checked_add_signed(Duration::seconds(CLOCK_LEEWAY_SECONDS)))
    {
        assert_eq!(
            fx::token_verifier()
                .verify(token, fx::election(), after)
                .err(),
            Some(TokenError::Expired)
        );
    }

    // One spelling: base64url is canonical, and S + L (the same signature, re-encoded) is refused.
    for part in [header_b64, claims_b64, signature_b64] {
        assert_eq!(B64.encode(B64.decode(part).expect("base64url")), part);
    }
    let mut signature = B64.decode(signature_b64).expect("base64url");
    let mut carry = 0u16;
    for (byte, order) in signature[32..].iter_mut().zip(ORDER) {
        let sum = u16::from(*byte) + u16::from(order) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    let malleated = format!("{header_b64}.{claims_b64}.{}", B64.encode(&signature));
    assert!(
        verify(&malleated).is_err(),
        "a second spelling of the signature verified"
    );
    assert!(
        verify_together(&malleated).is_err(),
        "a second spelling of the signature verified in a batch"
    );

    // Round trip: the parsed claims, serialised and signed again, verify to the same token.
    let again = signer.sign_claims(&claims);
    let reverified = verify(&again).expect("re-signed claims verify");
    assert_eq!(reverified.token_id(), verified.token_id());
    assert_eq!(reverified.tenant, verified.tenant);
    assert_eq!(reverified.expires_at, verified.expires_at);
}

/// `token` checked in a batch beside a genuine token (`verify_many`, as ingest does in a burst):
/// its answer, after checking the genuine one still verifies.
fn verify_together(token: &str) -> Result<VerifiedToken, TokenError> {
    static GENUINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let genuine = GENUINE.get_or_init(|| {
        let id = [0x42; shared::token::TOKEN_ID_BYTES];
        let not_before = fx::now() - Duration::minutes(1);
        let expires = fx::now() + Duration::hours(1);
        fx::token_signer()
            .issue_with_id(fx::election(), &id, not_before, expires)
            .0
    });
    let mut answers = fx::token_verifier()
        .verify_many(
            &[(token, fx::election()), (genuine.as_str(), fx::election())],
            fx::now(),
        )
        .into_iter();
    let answer = answers.next().expect("one answer per token");
    assert!(
        answers.next().is_some_and(|a| a.is_ok()),
        "a genuine token refused in a batch"
    );
    answer
}

fn run(token: &str) {
    let alone = verify(token);
    // Checked in a batch, the same answer as alone (property of `verify_many`). Not for what
    // is refused before any signature is checked (most inputs): the batch shares that code, and
    // the genuine token's check would cost every such input a signature verification.
    if !matches!(alone, Err(TokenError::Malformed | TokenError::UnknownKey)) {
        let together = verify_together(token);
        assert_eq!(
            together.as_ref().map(VerifiedToken::token_hash).err(),
            alone.as_ref().map(VerifiedToken::token_hash).err(),
            "a batch answered otherwise than one by one"
        );
        assert_eq!(
            together.map(|t| t.token_hash()).ok(),
            alone.as_ref().map(VerifiedToken::token_hash).ok()
        );
    }
    match alone {
        Ok(verified) => check_verified(token, &verified),
        Err(error) => check_error(token, &error),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(token) = std::str::from_utf8(rest) {
            run(token);
        }
        return;
    }
    // Honestly signed header and claims, whatever they hold.
    let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    use ed25519_dalek::Signer;
    let key = fx::token_signing_key();
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let signature = key.sign(input.as_bytes());
    run(&format!("{input}.{}", B64.encode(signature.to_bytes())));
});
