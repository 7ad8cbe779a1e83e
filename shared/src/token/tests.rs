use super::*;
use chrono::Duration;

#[test]
fn key_lists_name_the_entry_never_a_secret_and_refuse_duplicate_ids() {
    let signer = TokenSigner::generate("k1", tenant("party-a"));
    let seed = signer.seed();
    // Fields in the wrong order: the seed comes first.
    for raw in [
        format!("{seed}:party-a:k1"),
        format!("k1:party-a:{seed},k1:party-a:{seed}"),
        format!("k1:Party A:{seed}"),
    ] {
        let Err(error) = signers_from_config(&raw) else {
            panic!("{raw} accepted");
        };
        assert!(!error.contains(&seed), "{error}");
        assert!(error.contains("entry"), "{error}");
    }
    let public = encode_public_key(&signer.verifying_key());
    let Err(error) =
        TokenVerifier::from_config(&format!("k1:party-a:{public},k1:party-b:{public}"))
    else {
        panic!("a duplicate key id accepted");
    };
    assert!(error.contains("entry 2"), "{error}");
    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA";
    for raw in [
        format!("{secret}:party-a:k1"),
        format!("k1:party-a:{secret},k1:party-b:{secret}"),
    ] {
        let error = crate::s2s::Keyring::from_config(&raw).unwrap_err();
        assert!(!error.contains(secret), "{error}");
    }
}

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn setup() -> (TokenSigner, TokenSigner, TokenVerifier) {
    let a = TokenSigner::generate("a-2026", tenant("party-a"));
    let b = TokenSigner::generate("b-2026", tenant("party-b"));
    let verifier = TokenVerifier::new()
        .with_key("a-2026", tenant("party-a"), a.verifying_key())
        .with_key("b-2026", tenant("party-b"), b.verifying_key());
    (a, b, verifier)
}

#[test]
fn a_fresh_token_verifies_for_its_election() {
    let (a, _, verifier) = setup();
    let election = Uuid::new_v4();
    let now = Utc::now();
    let (token, hash) = a.issue(election, now, now + Duration::hours(1));
    let verified = verifier.verify(&token, election, now).unwrap();
    assert_eq!(verified.tenant, tenant("party-a"));
    assert_eq!(verified.token_hash(), hash);
    assert!(verified.token_id().len() * 8 >= 128);
}

#[allow(clippy::too_many_lines, reason = "one case per kind of bad token")]
#[test]
fn every_kind_of_bad_token_is_refused() {
    let (a, b, verifier) = setup();
    let election = Uuid::new_v4();
    let now = Utc::now();
    let (token, _) = a.issue(election, now, now + Duration::hours(1));

    // Tampered claims: swap in claims for another election, keep the signature.
    let (other, _) = a.issue(Uuid::new_v4(), now, now + Duration::hours(1));
    let parts: Vec<&str> = token.split('.').collect();
    let other_parts: Vec<&str> = other.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert_eq!(
        verifier.verify(&tampered, election, now).unwrap_err(),
        TokenError::BadSignature
    );

    // Flipped signature byte.
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let bad_sig = format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig));
    assert_eq!(
        verifier.verify(&bad_sig, election, now).unwrap_err(),
        TokenError::BadSignature
    );

    // Expired and not yet valid.
    assert_eq!(
        verifier
            .verify(&token, election, now + Duration::hours(2))
            .unwrap_err(),
        TokenError::Expired
    );
    let (future, _) = a.issue(
        election,
        now + Duration::minutes(10),
        now + Duration::hours(1),
    );
    assert_eq!(
        verifier.verify(&future, election, now).unwrap_err(),
        TokenError::NotYetValid
    );

    // Other election.
    assert_eq!(
        verifier.verify(&token, Uuid::new_v4(), now).unwrap_err(),
        TokenError::WrongElection
    );

    // Unknown key id.
    let stranger = TokenSigner::generate("x-1", tenant("party-a"));
    let (unknown, _) = stranger.issue(election, now, now + Duration::hours(1));
    assert_eq!(
        verifier.verify(&unknown, election, now).unwrap_err(),
        TokenError::UnknownKey
    );

    // Tenant B's key signing a token that claims tenant A.
    let forged = b.sign_claims(&Claims {
        ten: tenant("party-a"),
        elc: election,
        jti: B64.encode([7u8; 32]),
        nbf: now.timestamp(),
        exp: (now + Duration::hours(1)).timestamp(),
    });
    assert_eq!(
        verifier.verify(&forged, election, now).unwrap_err(),
        TokenError::WrongTenant
    );

    // Garbage.
    for junk in ["", "a.b", "a.b.c.d", "....", &"x".repeat(5000)] {
        assert_eq!(
            verifier.verify(junk, election, now).unwrap_err(),
            TokenError::Malformed,
            "{junk:.20}"
        );
    }
}

#[test]
fn a_token_with_a_given_id_carries_it_and_verifies() {
    let (a, _, verifier) = setup();
    let election = Uuid::new_v4();
    let now = Utc::now();
    let id = [42u8; TOKEN_ID_BYTES];
    let (token, hash) = a.issue_with_id(election, &id, now, now + Duration::hours(1));
    let verified = verifier.verify(&token, election, now).unwrap();
    assert_eq!(verified.token_id(), id);
    assert_eq!(hash, TokenHash::of_token_id(&id));
    assert_eq!(verified.token_hash(), hash);
}

#[test]
fn public_keys_round_trip_through_config() {
    let a = TokenSigner::generate("k1", tenant("party-a"));
    let raw = format!("k1:party-a:{}", encode_public_key(&a.verifying_key()));
    let verifier = TokenVerifier::from_config(&raw).unwrap();
    let election = Uuid::new_v4();
    let now = Utc::now();
    let (token, _) = a.issue(election, now, now + Duration::hours(1));
    assert!(verifier.verify(&token, election, now).is_ok());
    assert!(TokenVerifier::from_config("k1:party-a").is_err());
}
