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

/// One token of each kind: good ones of two tenants, then every way a token fails.
fn mixed_tokens(
    a: &TokenSigner,
    b: &TokenSigner,
    election: Uuid,
    now: DateTime<Utc>,
) -> Vec<(String, Uuid)> {
    let hour = now + Duration::hours(1);
    let mut tokens: Vec<(String, Uuid)> = (0..6)
        .map(|i| {
            let signer = if i % 2 == 0 { a } else { b };
            (signer.issue(election, now, hour).0, election)
        })
        .collect();
    let good = tokens[0].0.clone();
    let parts: Vec<&str> = good.split('.').collect();
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    tokens.push((
        format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig)),
        election,
    ));
    let other = a.issue(Uuid::new_v4(), now, hour).0;
    let other_claims = other.split('.').nth(1).unwrap();
    tokens.push((
        format!("{}.{other_claims}.{}", parts[0], parts[2]),
        election,
    ));
    tokens.push((
        a.issue(election, now - Duration::hours(2), now - Duration::hours(1))
            .0,
        election,
    ));
    tokens.push((good.clone(), Uuid::new_v4()));
    tokens.push(("a.b.c".into(), election));
    let stranger = TokenSigner::generate("x-1", tenant("party-a"));
    tokens.push((stranger.issue(election, now, hour).0, election));
    tokens.push((a.issue(election, now, hour).0, election));
    tokens
}

#[test]
fn tokens_verified_together_get_the_answers_they_get_one_by_one() {
    let (a, b, verifier) = setup();
    let election = Uuid::new_v4();
    let now = Utc::now();
    let tokens = mixed_tokens(&a, &b, election, now);
    let refs: Vec<(&str, Uuid)> = tokens.iter().map(|(t, e)| (t.as_str(), *e)).collect();
    let one_by_one: Vec<_> = refs
        .iter()
        .map(|(t, e)| verifier.verify(t, *e, now).map(|v| v.token_hash()))
        .collect();
    let together: Vec<_> = verifier
        .verify_many(&refs, now)
        .into_iter()
        .map(|r| r.map(|v| v.token_hash()))
        .collect();
    assert_eq!(together, one_by_one);
    // The oracle itself: seven good tokens, and each kind of failure once.
    assert_eq!(one_by_one.iter().filter(|r| r.is_ok()).count(), 7);
    let errors: Vec<_> = one_by_one.iter().filter_map(|r| r.clone().err()).collect();
    assert_eq!(
        errors,
        [
            TokenError::BadSignature,
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::WrongElection,
            TokenError::Malformed,
            TokenError::UnknownKey,
        ]
    );

    // All good (the batch passes), one forged among them (the batch fails and each is
    // checked again), a single token, none.
    let good: Vec<_> = refs
        .iter()
        .copied()
        .filter(|(t, e)| verifier.verify(t, *e, now).is_ok())
        .collect();
    assert!(verifier.verify_many(&good, now).iter().all(Result::is_ok));
    let mut one_forged = good.clone();
    one_forged.insert(3, refs[6]);
    let answers = verifier.verify_many(&one_forged, now);
    assert_eq!(answers.iter().filter(|r| r.is_ok()).count(), good.len());
    assert_eq!(answers[3].as_ref().err(), Some(&TokenError::BadSignature));
    assert!(verifier.verify_many(&good[..1], now)[0].is_ok());
    assert!(verifier.verify_many(&[], now).is_empty());
}

#[test]
fn a_weak_public_key_is_refused_at_start() {
    // The identity point: a valid encoding of a small-order point, which `verify_strict`
    // refuses at every token and a batch check would not.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let error = TokenVerifier::from_config(&format!("k1:party-a:{}", B64.encode(identity)))
        .err()
        .expect("a weak key accepted");
    assert!(error.contains("entry 1"), "{error}");
}
