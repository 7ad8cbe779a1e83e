//! Login: the real OIDC flow against the local `oidc-provider` (started at members-fn, bound to
//! the browser by a cookie), every way a callback or an id_token can be wrong (through a
//! controllable issuer that does not enforce PKCE), dev login and its gate, the rate limit,
//! and the session tokens events-svc will verify.

use crate::support::fake_issuer::{FakeIssuer, RsaKey, REDIRECT_URI};
use crate::support::{kennitala, Members};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::config::Env;
use shared::session::{Role, SessionVerifier};
use testkit::oidc_provider as provider;

const ORG: &str = "party-a";

fn oidc_env() -> Vec<(&'static str, String)> {
    provider::Settings::from_env().members_env()
}

fn slug(problem: &Value) -> &str {
    problem["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or_default()
}

#[tokio::test]
async fn oidc_login_with_the_local_provider_gives_a_session_events_can_verify() {
    let members = Members::start(&oidc_env()).await;
    let person = kennitala(1);
    let member_id = members.add_member(ORG, &person, &["member", "admin"]).await;
    let oidc = provider::Settings::from_env();

    // Start: members-fn sends the browser to the provider with its own state, nonce and S256
    // challenge, for the registered redirect URI, and names the attempt in a cookie.
    let started = provider::start(&members.url, "return_to=/elections").await;
    let auth_url = &started.authorization_url;
    assert!(auth_url.as_str().starts_with(&oidc.issuer), "{auth_url}");
    for (name, value) in [
        ("response_type", "code"),
        ("client_id", oidc.client_id.as_str()),
        ("redirect_uri", oidc.redirect_uri.as_str()),
        ("code_challenge_method", "S256"),
    ] {
        assert_eq!(started.param(name).as_deref(), Some(value), "{name}");
    }
    for name in ["state", "nonce", "code_challenge"] {
        assert!(started.param(name).is_some_and(|v| v.len() >= 43), "{name}");
    }
    let set_cookie = started.set_cookie.to_ascii_lowercase();
    for attribute in ["httponly", "samesite=lax", "path=/", "max-age=600"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    assert!(
        !set_cookie.contains("secure"),
        "plain http locally: {set_cookie}"
    );

    // The provider, then the redirect back with the cookie.
    let redirect = provider::follow(&started.authorization_url, &person).await;
    let (status, session) = provider::finish(&members.url, Some(&started.cookie), &redirect).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["member"]["id"], member_id.to_string());
    assert_eq!(session["member"]["org"], ORG);
    assert_eq!(session["member"]["roles"], json!(["member", "admin"]));
    assert_eq!(session["return_to"], "/elections");
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

    // The attempt was used: the same redirect again, with the same cookie, is a replay.
    let (status, problem) = provider::finish(&members.url, Some(&started.cookie), &redirect).await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "login-replayed"),
        "{problem}"
    );

    // A person in two organisations names one at the start.
    members.add_member("party-b", &person, &["member"]).await;
    let (status, problem) = provider::login(&members.url, &person, "").await;
    assert_eq!(
        (status, slug(&problem)),
        (409, "choose-organisation"),
        "{problem}"
    );
    let (status, session) = provider::login(&members.url, &person, "org=party-b").await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["member"]["org"], "party-b");
    assert!(session.get("return_to").is_none(), "{session}");
}

#[tokio::test]
async fn oidc_refuses_a_non_member_and_the_old_callback_body() {
    let members = Members::start(&oidc_env()).await;
    let member = kennitala(2);
    members.add_member(ORG, &member, &["member"]).await;

    // A valid login of someone not in the registry.
    let (status, problem) = provider::login(&members.url, &kennitala(3), "").await;
    assert_eq!((status, slug(&problem)), (403, "not-a-member"), "{problem}");

    // The contract's first body, with a genuine code the client got by itself: members-fn no
    // longer redeems codes for logins it did not start.
    let oidc = provider::Settings::from_env();
    let auth =
        provider::authorize(&oidc.issuer, &oidc.client_id, &oidc.redirect_uri, &member).await;
    let (status, problem) = members
        .post(
            "/v1/auth/oidc/callback",
            json!({"code": auth.code, "code_verifier": auth.code_verifier,
                   "redirect_uri": auth.redirect_uri, "nonce": auth.nonce}),
        )
        .await;
    assert_eq!(
        (status, slug(&problem)),
        (400, "legacy-callback"),
        "{problem}"
    );
    // Reshaped to the new body, but without the login cookie.
    let (status, problem) = members
        .post(
            "/v1/auth/oidc/callback",
            json!({"code": auth.code, "state": "s"}),
        )
        .await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "login-not-started"),
        "{problem}"
    );
}

/// GET {members}/v1/auth/oidc/redirect?code&state with the given cookie.
async fn redirect(
    members: &Members,
    cookie: Option<&str>,
    code: &str,
    state: &str,
) -> (u16, Value) {
    let mut back = reqwest::Url::parse(REDIRECT_URI).unwrap();
    back.query_pairs_mut()
        .append_pair("code", code)
        .append_pair("state", state);
    provider::finish(&members.url, cookie, &back).await
}

/// The code and state in a redirect back.
fn code_and_state(redirect: &reqwest::Url) -> (String, String) {
    let param = |name: &str| {
        redirect
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    (param("code"), param("state"))
}

#[tokio::test]
async fn a_login_is_bound_to_the_browser_that_started_it() {
    // A provider that does not enforce PKCE and lets a code be redeemed again: the review's
    // M10 scenario, where whoever holds a code used to be able to redeem it at members-fn.
    let fake = FakeIssuer::start().await;
    let members = Members::start(&fake.settings()).await;
    let victim = kennitala(10);
    let victim_id = members.add_member(ORG, &victim, &["member"]).await;
    members.add_member(ORG, &kennitala(11), &["member"]).await;

    let theirs = provider::start(&members.url, "").await;
    let back = provider::follow(&theirs.authorization_url, &victim).await;
    let (code, state) = code_and_state(&back);
    // The attacker got the victim's code and state (Referer, history, a proxy log) and starts
    // a login of their own, for a cookie and a state of their own.
    let mine = provider::start(&members.url, "").await;
    let my_state = mine.param("state").unwrap();
    assert_ne!(my_state, state);

    // Without any login cookie.
    let (status, problem) = redirect(&members, None, &code, &state).await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "login-not-started"),
        "{problem}"
    );
    let (status, problem) = members
        .post(
            "/v1/auth/oidc/callback",
            json!({"code": code, "state": state}),
        )
        .await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "login-not-started"),
        "{problem}"
    );
    // With a cookie members-fn never issued.
    let forged = format!("ekklesia-login={}", B64.encode([7u8; 32]));
    let (status, problem) = redirect(&members, Some(&forged), &code, &state).await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "login-not-started"),
        "{problem}"
    );
    // With the attacker's cookie and the victim's state (another attempt's state), or none.
    let (status, problem) = redirect(&members, Some(&mine.cookie), &code, &state).await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "state-mismatch"),
        "{problem}"
    );
    let (status, problem) = redirect(&members, Some(&mine.cookie), &code, "").await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "state-mismatch"),
        "{problem}"
    );
    // With the attacker's cookie and state: the code is exchanged with the attacker's verifier
    // (which this provider accepts), but the id_token carries the victim's nonce.
    let (status, problem) = redirect(&members, Some(&mine.cookie), &code, &my_state).await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "invalid-id-token"),
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("nonce"),
        "{problem}"
    );
    assert!(
        !problem.to_string().contains(&victim),
        "no national id echoed"
    );

    // The victim's own browser: its cookie, its state. members-fn redeemed the code with the
    // verifier whose S256 challenge it sent, for its configured redirect URI.
    let (status, session) = redirect(&members, Some(&theirs.cookie), &code, &state).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["member"]["id"], victim_id.to_string());
    let verifier = fake.last("code_verifier").unwrap();
    assert_eq!(
        B64.encode(Sha256::digest(verifier.as_bytes())),
        theirs.param("code_challenge").unwrap()
    );
    assert_eq!(fake.last("redirect_uri").as_deref(), Some(REDIRECT_URI));
    assert_eq!(fake.last("client_secret").as_deref(), Some("fake-secret"));
    // Replayed: by the redirect, and by the API callback.
    let (status, problem) = redirect(&members, Some(&theirs.cookie), &code, &state).await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "login-replayed"),
        "{problem}"
    );
    let response = members
        .http
        .post(format!("{}/v1/auth/oidc/callback", members.url))
        .header("cookie", &theirs.cookie)
        .json(&json!({"code": code, "state": state}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(slug(&problem), "login-replayed", "{problem}");

    // An attempt older than its 10 minutes.
    let late = provider::start(&members.url, "").await;
    let back = provider::follow(&late.authorization_url, &victim).await;
    let (code, state) = code_and_state(&back);
    sqlx::query("UPDATE members.login_attempts SET expires_at = now() - interval '1 second' WHERE state = $1")
        .bind(&state)
        .execute(&members.db.owner)
        .await
        .unwrap();
    let (status, problem) = redirect(&members, Some(&late.cookie), &code, &state).await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "login-expired"),
        "{problem}"
    );

    // An id_token without any nonce.
    let started = provider::start(&members.url, "").await;
    let mut claims = fake.claims(&victim, "unused");
    claims.as_object_mut().unwrap().remove("nonce");
    fake.answer_id_token(fake.key.sign("RS256", &claims));
    let (status, problem) = redirect(
        &members,
        Some(&started.cookie),
        "any-code",
        &started.param("state").unwrap(),
    )
    .await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "invalid-id-token"),
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("no nonce"),
        "{problem}"
    );

    // The API callback works the same way for a client that keeps the cookie.
    fake.redeem_codes();
    let api = provider::start(&members.url, "").await;
    let back = provider::follow(&api.authorization_url, &victim).await;
    let (code, state) = code_and_state(&back);
    let response = members
        .http
        .post(format!("{}/v1/auth/oidc/callback", members.url))
        .header("cookie", &api.cookie)
        .json(&json!({"code": code, "state": state}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let session: Value = response.json().await.unwrap();
    assert_eq!(session["member"]["id"], victim_id.to_string());
}

#[tokio::test]
async fn the_login_cookie_is_secure_outside_the_local_profile() {
    let fake = FakeIssuer::start().await;
    let mut env = fake.settings();
    env.push(("EKKLESIA_PROFILE", "production".into()));
    env.push(("DEV_LOGIN_ENABLED", "false".into()));
    let members = Members::start(&env).await;
    let started = provider::start(&members.url, "").await;
    assert!(
        started.set_cookie.starts_with("__Host-ekklesia-login="),
        "{}",
        started.set_cookie
    );
    assert!(
        started.set_cookie.contains("; Secure"),
        "{}",
        started.set_cookie
    );
    // The local profile's cookie name is not accepted in production.
    let person = kennitala(12);
    members.add_member(ORG, &person, &["member"]).await;
    let back = provider::follow(&started.authorization_url, &person).await;
    let local_name = started.cookie.replace("__Host-", "");
    let (status, problem) = provider::finish(&members.url, Some(&local_name), &back).await;
    assert_eq!(
        (status, slug(&problem)),
        (401, "login-not-started"),
        "{problem}"
    );
    let (status, session) = provider::finish(&members.url, Some(&started.cookie), &back).await;
    assert_eq!(status, 200, "{session}");
}

/// A login of its own whose code the fake issuer redeems for `make(nonce)`, `nonce` being the
/// one members-fn put into this login's authorization request. Returns the answer and the token.
async fn with_id_token(
    members: &Members,
    fake: &FakeIssuer,
    make: &dyn Fn(&str) -> String,
) -> (u16, Value, String) {
    let started = provider::start(&members.url, "").await;
    let token = make(&started.param("nonce").unwrap());
    fake.answer_id_token(token.clone());
    let state = started.param("state").unwrap();
    let (status, body) = redirect(members, Some(&started.cookie), "a-code", &state).await;
    (status, body, token)
}

#[tokio::test]
async fn forged_expired_foreign_and_malformed_id_tokens_are_refused() {
    let fake = FakeIssuer::start().await;
    let members = Members::start(&fake.settings()).await;
    let person = kennitala(4);
    members.add_member(ORG, &person, &["member"]).await;
    let claims = |nonce: &str| fake.claims(&person, nonce);
    let sign = |claims: &Value| fake.key.sign("RS256", claims);

    // The correct token logs in (so the refusals below are about what was changed).
    let (status, body, _) = with_id_token(&members, &fake, &|n| sign(&claims(n))).await;
    assert_eq!(status, 200, "{body}");
    // members-fn sent the code exchange as a confidential client with PKCE.
    for (name, value) in [
        ("grant_type", "authorization_code"),
        ("code", "a-code"),
        ("client_id", "members-test"),
        ("client_secret", "fake-secret"),
        ("redirect_uri", REDIRECT_URI),
    ] {
        assert_eq!(fake.last(name).as_deref(), Some(value), "{name}");
    }
    assert!(fake.last("code_verifier").is_some_and(|v| v.len() == 43));

    let now = chrono::Utc::now().timestamp();
    let other_key = RsaKey::generate("fake-1"); // same kid, other key: a forgery
    let unknown_key = RsaKey::generate("not-published");
    /// Makes the id_token of a login from its nonce.
    type MakeToken<'a> = Box<dyn Fn(&str) -> String + 'a>;
    // A correct token with one thing changed.
    fn changed<'a>(
        claims: &'a dyn Fn(&str) -> Value,
        sign: &'a dyn Fn(&Value) -> String,
        change: impl Fn(&mut Value) + 'a,
    ) -> MakeToken<'a> {
        Box::new(move |n| {
            let mut c = claims(n);
            change(&mut c);
            sign(&c)
        })
    }
    let changed = |change: fn(&mut Value, i64)| changed(&claims, &sign, move |c| change(c, now));
    let cases: Vec<(&str, MakeToken)> = vec![
        ("expired", changed(|c, now| c["exp"] = json!(now - 600))),
        (
            "another client",
            changed(|c, _| c["aud"] = json!("some-other-client")),
        ),
        (
            "another issuer",
            changed(|c, _| c["iss"] = json!("https://evil.example")),
        ),
        (
            "signature",
            Box::new(|n| other_key.sign("RS256", &claims(n))),
        ),
        (
            "does not publish",
            Box::new(|n| unknown_key.sign("RS256", &claims(n))),
        ),
        ("RS256", Box::new(|n| fake.key.sign("HS256", &claims(n)))),
        (
            "nonce does not match",
            changed(|c, _| c["nonce"] = json!("another-login")),
        ),
        (
            "no nonce",
            changed(|c, _| {
                c.as_object_mut().unwrap().remove("nonce");
            }),
        ),
        (
            "no national id",
            changed(|c, _| {
                c.as_object_mut().unwrap().remove("national_id");
            }),
        ),
        (
            "check digit",
            changed(|c, _| c["national_id"] = json!("0101302979")),
        ),
        ("malformed", Box::new(|_| "not.a.jwt".to_owned())),
        (
            // One character more in the payload: what was signed is not what arrived.
            "signature",
            Box::new(|n| {
                let mut tampered = sign(&claims(n));
                tampered.insert(tampered.find('.').unwrap() + 5, 'x');
                tampered
            }),
        ),
    ];
    for (expected, make) in &cases {
        let (status, problem, token) = with_id_token(&members, &fake, make.as_ref()).await;
        assert_eq!(status, 401, "{expected}: {problem}");
        assert_eq!(slug(&problem), "invalid-id-token", "{expected}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(expected), "{expected}: {detail}");
        assert!(!detail.contains(&token), "the token is never echoed");
        assert!(
            !problem.to_string().contains(&person),
            "the national id is never echoed"
        );
    }

    // The provider refusing the code, and the provider being down.
    for (status, body, expected) in [
        (
            400,
            json!({"error": "invalid_grant"}),
            (401, "login-failed"),
        ),
        (
            503,
            json!({"error": "temporarily_unavailable"}),
            (503, "identity-provider-unavailable"),
        ),
    ] {
        let started = provider::start(&members.url, "").await;
        fake.answer(status, body);
        let state = started.param("state").unwrap();
        let response = members
            .http
            .get(format!(
                "{}/v1/auth/oidc/redirect?code=a-code&state={state}",
                members.url
            ))
            .header("cookie", &started.cookie)
            .send()
            .await
            .unwrap();
        let got = response.status().as_u16();
        if got == 503 {
            assert!(response.headers().contains_key("retry-after"));
        }
        let problem: Value = response.json().await.unwrap();
        assert_eq!((got, slug(&problem)), expected, "{problem}");
    }
}

#[tokio::test]
async fn bad_login_requests_are_named_4xx() {
    let fake = FakeIssuer::start().await;
    let members = Members::start(&fake.settings()).await;
    // Starting: an organisation id that is none, a return path off this site, stray parameters.
    for (query, expected) in [
        ("org=Not%20An%20Org", "invalid-query"),
        ("return_to=https://evil.example/", "invalid-return-to"),
        ("return_to=//evil.example/x", "invalid-return-to"),
        ("return_to=/%5Cevil.example", "invalid-return-to"),
        ("redirect_uri=https://evil.example/", "invalid-query"),
    ] {
        let response = members
            .http
            .get(format!("{}/v1/auth/oidc/start?{query}", members.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert!(response.headers().get("set-cookie").is_none(), "{query}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(slug(&problem), expected, "{query}: {problem}");
    }

    // The API callback's body.
    for (body, status, expected) in [
        (
            json!({"code": "c", "code_verifier": "v", "redirect_uri": "http://x"}),
            400,
            "legacy-callback",
        ),
        (json!({"code": "c"}), 400, "invalid-body"),
        (
            json!({"code": "c", "state": "s", "extra": 1}),
            400,
            "invalid-body",
        ),
    ] {
        let (got, problem) = members.post("/v1/auth/oidc/callback", body.clone()).await;
        assert_eq!(
            (got, slug(&problem)),
            (status, expected),
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

    // Redirects back that are not a code for this login: the provider's error (after which
    // the attempt is used up), an issuer other than the configured one (RFC 9207), no code.
    for (extra, status, expected) in [
        ("error=access_denied", 401, "login-failed"),
        ("code=c&iss=https%3A%2F%2Fevil.example", 401, "login-failed"),
        ("code=", 400, "invalid-request"),
    ] {
        let started = provider::start(&members.url, "").await;
        let state = started.param("state").unwrap();
        let back = reqwest::Url::parse(&format!("{REDIRECT_URI}?state={state}&{extra}")).unwrap();
        let (got, problem) = provider::finish(&members.url, Some(&started.cookie), &back).await;
        assert_eq!(
            (got, slug(&problem)),
            (status, expected),
            "{extra}: {problem}"
        );
        let (got, problem) = provider::finish(&members.url, Some(&started.cookie), &back).await;
        assert_eq!(
            (got, slug(&problem)),
            (401, "login-replayed"),
            "{extra}: {problem}"
        );
    }

    // Without an identity provider configured there is nothing to start.
    let bare = Members::start(&[]).await;
    let response = bare
        .http
        .get(format!("{}/v1/auth/oidc/start", bare.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
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

#[test]
fn oidc_needs_a_redirect_uri_and_the_openid_scope() {
    let settings = |extra: &[(&str, &str)]| {
        let mut env = vec![
            ("DATABASE_URL", "postgres://x"),
            (
                "SESSION_SIGNING_KEYS",
                "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
            ("OIDC_ISSUER", "https://idp.example"),
            ("OIDC_CLIENT_ID", "ekklesia"),
        ];
        env.extend_from_slice(extra);
        members_fn::Settings::from(Env::from_map(env))
    };
    let err = settings(&[]).err().expect("refused");
    assert!(err.to_string().contains("OIDC_REDIRECT_URI"), "{err}");
    let err = settings(&[("OIDC_REDIRECT_URI", "/v1/auth/oidc/redirect")])
        .err()
        .expect("refused");
    assert!(err.to_string().contains("OIDC_REDIRECT_URI"), "{err}");
    let redirect = (
        "OIDC_REDIRECT_URI",
        "https://members.example/v1/auth/oidc/redirect",
    );
    let err = settings(&[redirect, ("OIDC_SCOPES", "profile")])
        .err()
        .expect("refused");
    assert!(err.to_string().contains("OIDC_SCOPES"), "{err}");
    let oidc = settings(&[redirect]).expect("valid").oidc.unwrap();
    assert_eq!(oidc.scopes, "openid profile");
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
        "/v1/auth/oidc/start",
        "/v1/auth/oidc/redirect",
        "/v1/auth/oidc/callback",
        "/v1/auth/dev-login",
        "/.well-known/jwks.json",
    ] {
        assert!(
            api["paths"].get(path).is_some(),
            "{path} in the OpenAPI document"
        );
    }
    // The login's query parameters are documented as query parameters, none required.
    for path in ["/v1/auth/oidc/start", "/v1/auth/oidc/redirect"] {
        let parameters = api["paths"][path]["get"]["parameters"].as_array().unwrap();
        assert!(
            parameters
                .iter()
                .all(|p| p["in"] == "query" && p["required"] != true),
            "{path}: {parameters:?}"
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
