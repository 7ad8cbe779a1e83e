//! Login: the real OIDC flow against the local `oidc-provider`, every way an id_token can be
//! wrong (through a controllable issuer), dev login and its gate, the rate limit, and the
//! session tokens events-svc will verify.

mod support;

use serde_json::{json, Value};
use shared::config::Env;
use shared::session::{Role, SessionVerifier};
use support::fake_issuer::{FakeIssuer, RsaKey};
use support::{kennitala, provider, Members};

const ORG: &str = "party-a";
const VERIFIER: &str = "a-pkce-verifier-that-is-long-enough-to-be-valid-0123456789";

fn oidc_env() -> Vec<(&'static str, String)> {
    let oidc = provider::Settings::from_env();
    vec![
        ("OIDC_ISSUER", oidc.issuer),
        ("OIDC_CLIENT_ID", oidc.client_id),
        ("OIDC_CLIENT_SECRET", oidc.client_secret),
    ]
}

#[tokio::test]
async fn oidc_login_with_the_local_provider_gives_a_session_events_can_verify() {
    let members = Members::start(&oidc_env()).await;
    let person = kennitala(1);
    let member_id = members.add_member(ORG, &person, &["member", "admin"]).await;
    let oidc = provider::Settings::from_env();
    let auth =
        provider::authorize(&oidc.issuer, &oidc.client_id, &oidc.redirect_uri, &person).await;
    let (status, session) = members
        .post(
            "/v1/auth/oidc/callback",
            json!({"code": auth.code, "code_verifier": auth.code_verifier,
                   "redirect_uri": auth.redirect_uri, "nonce": auth.nonce}),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["member"]["id"], member_id.to_string());
    assert_eq!(session["member"]["org"], ORG);
    assert_eq!(session["member"]["roles"], json!(["member", "admin"]));
    // The session verifies with the published keys, as events-svc does it.
    let verifier = SessionVerifier::new(
        format!("{}/.well-known/jwks.json", members.url),
        "ekklesia-members".into(),
        reqwest::Client::new(),
    );
    let claims = verifier
        .verify(session["session_token"].as_str().unwrap())
        .await
        .expect("session verifies");
    assert_eq!(claims.sub, member_id);
    assert!(claims.has(Role::Admin));
    // The code was used: a replay is refused by the provider, so by members-fn.
    let (status, problem) = members
        .post(
            "/v1/auth/oidc/callback",
            json!({"code": auth.code, "code_verifier": auth.code_verifier,
                   "redirect_uri": auth.redirect_uri, "nonce": auth.nonce}),
        )
        .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (401, Some("https://ekklesia.is/problems/login-failed")),
        "{problem}"
    );
}

#[tokio::test]
async fn oidc_refuses_a_wrong_verifier_a_wrong_nonce_and_a_non_member() {
    let members = Members::start(&oidc_env()).await;
    let member = kennitala(2);
    members.add_member(ORG, &member, &["member"]).await;
    let oidc = provider::Settings::from_env();
    let login = |who: String| {
        let oidc = oidc.clone();
        async move { provider::authorize(&oidc.issuer, &oidc.client_id, &oidc.redirect_uri, &who).await }
    };

    // PKCE: a verifier that does not match the challenge.
    let auth = login(member.clone()).await;
    let (status, problem) = members
        .post(
            "/v1/auth/oidc/callback",
            json!({"code": auth.code, "code_verifier": VERIFIER,
              "redirect_uri": auth.redirect_uri, "nonce": auth.nonce}),
        )
        .await;
    assert_eq!(status, 401, "{problem}");

    // A nonce other than the one of the authorization request (or none).
    for nonce in [json!("another-nonce"), Value::Null] {
        let auth = login(member.clone()).await;
        let (status, problem) = members
            .post(
                "/v1/auth/oidc/callback",
                json!({"code": auth.code, "code_verifier": auth.code_verifier,
                  "redirect_uri": auth.redirect_uri, "nonce": nonce}),
            )
            .await;
        assert_eq!(status, 401, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("nonce"),
            "{problem}"
        );
    }

    // A valid login of someone not in the registry.
    let stranger = kennitala(3);
    let auth = login(stranger).await;
    let (status, problem) = members
        .post(
            "/v1/auth/oidc/callback",
            json!({"code": auth.code, "code_verifier": auth.code_verifier,
              "redirect_uri": auth.redirect_uri, "nonce": auth.nonce}),
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["type"], "https://ekklesia.is/problems/not-a-member");
}

#[tokio::test]
async fn forged_expired_foreign_and_malformed_id_tokens_are_refused() {
    let fake = FakeIssuer::start().await;
    let members = Members::start(&fake.settings()).await;
    let person = kennitala(4);
    members.add_member(ORG, &person, &["member"]).await;
    let callback = |nonce: &str| json!({"code": "a-code", "code_verifier": VERIFIER, "redirect_uri": "http://127.0.0.1/cb", "nonce": nonce});

    // The correct token logs in (so the refusals below are about what was changed).
    fake.answer_id_token(fake.key.sign("RS256", &fake.claims(&person, "n1")));
    let (status, body) = members.post("/v1/auth/oidc/callback", callback("n1")).await;
    assert_eq!(status, 200, "{body}");
    // members-fn sent the code exchange as a confidential client with PKCE.
    let form = fake.last_request.lock().unwrap().clone();
    for (name, value) in [
        ("grant_type", "authorization_code"),
        ("code", "a-code"),
        ("code_verifier", VERIFIER),
        ("client_id", "members-test"),
        ("client_secret", "fake-secret"),
    ] {
        assert!(
            form.contains(&(name.into(), value.into())),
            "{name} missing from {form:?}"
        );
    }

    let now = chrono::Utc::now().timestamp();
    let other_key = RsaKey::generate("fake-1"); // same kid, other key: a forgery
    let unknown_key = RsaKey::generate("not-published");
    let mut cases: Vec<(&str, String)> = Vec::new();
    let mut claims = fake.claims(&person, "n1");
    claims["exp"] = json!(now - 600);
    cases.push(("expired", fake.key.sign("RS256", &claims)));
    let mut claims = fake.claims(&person, "n1");
    claims["aud"] = json!("some-other-client");
    cases.push(("another client", fake.key.sign("RS256", &claims)));
    let mut claims = fake.claims(&person, "n1");
    claims["iss"] = json!("https://evil.example");
    cases.push(("another issuer", fake.key.sign("RS256", &claims)));
    cases.push((
        "signature",
        other_key.sign("RS256", &fake.claims(&person, "n1")),
    ));
    cases.push((
        "does not publish",
        unknown_key.sign("RS256", &fake.claims(&person, "n1")),
    ));
    cases.push(("RS256", fake.key.sign("HS256", &fake.claims(&person, "n1"))));
    cases.push(("nonce", fake.key.sign("RS256", &fake.claims(&person, "n2"))));
    let mut claims = fake.claims(&person, "n1");
    claims.as_object_mut().unwrap().remove("national_id");
    cases.push(("no national id", fake.key.sign("RS256", &claims)));
    let mut claims = fake.claims(&person, "n1");
    claims["national_id"] = json!("0101302979");
    cases.push(("check digit", fake.key.sign("RS256", &claims)));
    cases.push(("malformed", "not.a.jwt".into()));
    let mut tampered = fake.key.sign("RS256", &fake.claims(&person, "n1"));
    tampered.insert(tampered.find('.').unwrap() + 5, 'x');
    cases.push(("", tampered));
    for (expected, token) in cases {
        fake.answer_id_token(token.clone());
        let (status, problem) = members.post("/v1/auth/oidc/callback", callback("n1")).await;
        assert_eq!(status, 401, "{expected}: {problem}");
        assert_eq!(
            problem["type"], "https://ekklesia.is/problems/invalid-id-token",
            "{expected}: {problem}"
        );
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(expected), "{expected}: {detail}");
        assert!(!detail.contains(&token), "the token is never echoed");
        assert!(
            !problem.to_string().contains(&person),
            "the national id is never echoed"
        );
    }

    // The provider refusing the code, and the provider being down.
    fake.answer(400, json!({"error": "invalid_grant"}));
    let (status, problem) = members.post("/v1/auth/oidc/callback", callback("n1")).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (401, Some("https://ekklesia.is/problems/login-failed"))
    );
    fake.answer(503, json!({"error": "temporarily_unavailable"}));
    let response = members
        .http
        .post(format!("{}/v1/auth/oidc/callback", members.url))
        .json(&callback("n1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn bad_callback_requests_are_named_4xx() {
    let fake = FakeIssuer::start().await;
    let members = Members::start(&fake.settings()).await;
    for (body, status, slug) in [
        (
            json!({"code": "c", "code_verifier": "short", "redirect_uri": "http://x"}),
            400,
            "invalid-code-verifier",
        ),
        (
            json!({"code": "", "code_verifier": VERIFIER, "redirect_uri": "http://x"}),
            400,
            "invalid-request",
        ),
        (
            json!({"code": "c", "redirect_uri": "http://x"}),
            400,
            "invalid-body",
        ),
        (
            json!({"code": "c", "code_verifier": VERIFIER, "redirect_uri": "http://x", "extra": 1}),
            400,
            "invalid-body",
        ),
    ] {
        let (got, problem) = members.post("/v1/auth/oidc/callback", body.clone()).await;
        assert_eq!(got, status, "{body}: {problem}");
        assert_eq!(
            problem["type"],
            format!("https://ekklesia.is/problems/{slug}"),
            "{body}: {problem}"
        );
    }
    let response = members
        .http
        .post(format!("{}/v1/auth/oidc/callback", members.url))
        .body("code=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn dev_login_finds_members_refuses_others_and_asks_which_organisation() {
    let members = Members::start(&[]).await;
    let person = kennitala(5);
    let id_a = members.add_member(ORG, &person, &["member"]).await;
    let (status, session) = members
        .post("/v1/auth/dev-login", json!({"national_id": person}))
        .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["member"]["id"], id_a.to_string());
    // The same person in a second organisation must choose.
    let id_b = members
        .add_member("party-b", &person, &["member", "ops"])
        .await;
    let (status, problem) = members
        .post("/v1/auth/dev-login", json!({"national_id": person}))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        problem["type"],
        "https://ekklesia.is/problems/choose-organisation"
    );
    let (status, session) = members
        .post(
            "/v1/auth/dev-login",
            json!({"national_id": person, "org": "party-b"}),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["member"]["id"], id_b.to_string());
    assert_eq!(session["member"]["roles"], json!(["member", "ops"]));
    // Not a member of that organisation / of any.
    let (status, _) = members
        .post(
            "/v1/auth/dev-login",
            json!({"national_id": person, "org": "party-c"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, problem) = members
        .post("/v1/auth/dev-login", json!({"national_id": kennitala(6)}))
        .await;
    assert_eq!(status, 403, "{problem}");
    // Not a kennitala at all.
    let (status, problem) = members
        .post("/v1/auth/dev-login", json!({"national_id": "0101302979"}))
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(
        problem["type"],
        "https://ekklesia.is/problems/invalid-national-id"
    );
    assert!(!problem.to_string().contains("0101302979"));
}

#[tokio::test]
async fn dev_login_is_off_by_default_and_refused_in_production() {
    let members = Members::start(&[("DEV_LOGIN_ENABLED", "false".into())]).await;
    let (status, _) = members
        .post("/v1/auth/dev-login", json!({"national_id": kennitala(7)}))
        .await;
    assert_eq!(status, 404);

    let base = |profile: Option<&str>, dev: &str| {
        let mut env = vec![
            ("DATABASE_URL".to_owned(), "postgres://x".to_owned()),
            (
                "SESSION_SIGNING_KEYS".to_owned(),
                members.signer_config.clone(),
            ),
            ("DEV_LOGIN_ENABLED".to_owned(), dev.to_owned()),
        ];
        if let Some(p) = profile {
            env.push(("EKKLESIA_PROFILE".to_owned(), p.to_owned()));
        }
        members_fn::Settings::from(Env::from_map(env))
    };
    // Production is the default profile: dev login needs an explicit local profile.
    for profile in [None, Some("production")] {
        let err = base(profile, "true").err().expect("refused");
        assert!(err.to_string().contains("DEV_LOGIN_ENABLED"), "{err}");
    }
    assert!(base(Some("local"), "true").is_ok());
    assert!(base(None, "false").is_ok());
    // The signing key never appears in a configuration error.
    let err = members_fn::Settings::from(Env::from_map([
        ("SESSION_SIGNING_KEYS", "k1:not-a-seed"),
        ("DATABASE_URL", "postgres://x"),
    ]))
    .err()
    .unwrap();
    assert!(!err.to_string().contains("not-a-seed"), "{err}");
}

#[tokio::test]
async fn login_attempts_are_rate_limited_with_retry_after() {
    let members = Members::start(&[("LOGIN_RATE_PER_CLIENT", "1".into())]).await;
    let mut limited = None;
    for _ in 0..10 {
        let response = members
            .http
            .post(format!("{}/v1/auth/dev-login", members.url))
            .json(&json!({"national_id": kennitala(8)}))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 403);
    }
    let response = limited.expect("the limit applies within 10 attempts");
    let after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after >= 1);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "https://ekklesia.is/problems/rate-limited");
}

#[tokio::test]
async fn publishes_its_keys_and_its_contract() {
    let members = Members::start(&[]).await;
    let jwks: Value = members
        .http
        .get(format!("{}/.well-known/jwks.json", members.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["kid"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("s1"))
    );
    assert!(key.get("d").is_none(), "no private part");
    let api: Value = members
        .http
        .get(format!("{}/openapi.json", members.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/auth/oidc/callback",
        "/v1/auth/dev-login",
        "/.well-known/jwks.json",
    ] {
        assert!(
            api["paths"].get(path).is_some(),
            "{path} in the OpenAPI document"
        );
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = members
            .http
            .get(format!("{}{path}", members.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}
