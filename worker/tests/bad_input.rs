//! Every kind of bad vote gets the right 4xx as problem+json naming the problem, and nothing
//! reaches the queue.

mod support;

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use shared::token::{Claims, TokenSigner};
use support::{drain_count, Stack, StackOptions, OTHER_TENANT, TENANT};
use uuid::Uuid;

struct Case {
    name: &'static str,
    path: String,
    method: reqwest::Method,
    auth: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    slug: &'static str,
}

fn case(
    name: &'static str,
    path: &str,
    auth: Option<&str>,
    body: &str,
    status: u16,
    slug: &'static str,
) -> Case {
    Case {
        name,
        path: path.to_owned(),
        method: reqwest::Method::POST,
        auth: auth.map(str::to_owned),
        content_type: Some("application/json"),
        body: body.as_bytes().to_vec(),
        status,
        slug,
    }
}

#[tokio::test]
async fn thirty_plus_bad_inputs_get_the_right_problem_and_nothing_is_queued() {
    // The cases reuse a few genuine tokens far more often than one voter's budget allows.
    let stack = Stack::start(StackOptions {
        extra_env: vec![("RATE_LIMIT_PER_TOKEN", "1000".to_owned())],
        ..Default::default()
    })
    .await;
    let single = stack.open_election(TENANT, "single", 3, 1).await;
    let multiple = stack.open_election(TENANT, "multiple", 3, 2).await;
    let draft = Uuid::new_v4();
    stack
        .put_election(TENANT, draft, json!({"kind": "single", "options": [{"id": "o0", "label": "A"}], "max_choices": 1, "status": "draft", "opens_at": null, "closes_at": null}))
        .await;
    let closed = stack.open_election(TENANT, "single", 2, 1).await;
    let closed_token = stack.tokens(TENANT, closed, 1).await.remove(0);
    stack.close_election(TENANT, closed, "single", 2, 1).await;

    let token = stack.tokens(TENANT, single, 1).await.remove(0);
    let multi_token = stack.tokens(TENANT, multiple, 1).await.remove(0);
    let draft_token = stack
        .keys
        .signer(TENANT)
        .issue(draft, Utc::now(), Utc::now() + chrono::Duration::hours(1))
        .0;
    let signer = stack.keys.signer(TENANT);
    let now = Utc::now();
    let claims = |election: Uuid, nbf: i64, exp: i64| Claims {
        ten: stack.tenant(TENANT),
        elc: election,
        jti: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        nbf,
        exp,
    };
    let expired = signer.sign_claims(&claims(
        single,
        now.timestamp() - 7200,
        now.timestamp() - 3600,
    ));
    let early = signer.sign_claims(&claims(
        single,
        now.timestamp() + 3600,
        now.timestamp() + 7200,
    ));
    let other_election = stack
        .keys
        .signer(TENANT)
        .issue(multiple, now, now + chrono::Duration::hours(1))
        .0;
    let stranger = TokenSigner::generate("stranger", stack.tenant(TENANT))
        .issue(single, now, now + chrono::Duration::hours(1))
        .0;
    let foreign = stack.keys.signer(OTHER_TENANT).sign_claims(&claims(
        single,
        now.timestamp(),
        now.timestamp() + 3600,
    ));
    let tampered = {
        // Change one character in the middle of the signature.
        let at = token.len() - 20;
        let swapped = if &token[at..at + 1] == "A" { "B" } else { "A" };
        format!("{}{swapped}{}", &token[..at], &token[at + 1..])
    };
    let unknown_election = Uuid::new_v4();
    let unknown_election_token = signer
        .issue(unknown_election, now, now + chrono::Duration::hours(1))
        .0;

    let p = format!("/v1/elections/{single}/ballots");
    let pm = format!("/v1/elections/{multiple}/ballots");
    let bearer = format!("Bearer {token}");
    let t = Some(bearer.as_str());
    let ok = r#"{"choices":["o0"]}"#;
    let mut cases = vec![
        case("no authorization", &p, None, ok, 401, "missing-token"),
        case(
            "basic auth",
            &p,
            Some("Basic dXNlcjpwdw=="),
            ok,
            401,
            "missing-token",
        ),
        case(
            "empty bearer",
            &p,
            Some("Bearer "),
            ok,
            401,
            "missing-token",
        ),
        case(
            "garbage token",
            &p,
            Some("Bearer not.a.token"),
            ok,
            401,
            "token-malformed",
        ),
        case(
            "one-part token",
            &p,
            Some("Bearer abc"),
            ok,
            401,
            "token-malformed",
        ),
        case(
            "tampered signature",
            &p,
            Some(&format!("Bearer {tampered}")),
            ok,
            401,
            "token-bad-signature",
        ),
        case(
            "expired token",
            &p,
            Some(&format!("Bearer {expired}")),
            ok,
            401,
            "token-expired",
        ),
        case(
            "not yet valid",
            &p,
            Some(&format!("Bearer {early}")),
            ok,
            401,
            "token-not-yet-valid",
        ),
        case(
            "unknown key id",
            &p,
            Some(&format!("Bearer {stranger}")),
            ok,
            401,
            "token-unknown-key",
        ),
        case(
            "other tenant's key",
            &p,
            Some(&format!("Bearer {foreign}")),
            ok,
            401,
            "token-wrong-tenant",
        ),
        case(
            "token for another election",
            &p,
            Some(&format!("Bearer {other_election}")),
            ok,
            403,
            "token-for-other-election",
        ),
        case(
            "oversized token",
            &p,
            Some(&format!("Bearer {}", "a.".repeat(800))),
            ok,
            401,
            "token-malformed",
        ),
        case(
            "truncated json",
            &p,
            t,
            r#"{"choices": ["#,
            400,
            "malformed-json",
        ),
        case("empty body", &p, t, "", 400, "malformed-json"),
        case(
            "not json at all",
            &p,
            t,
            "choices=o0",
            400,
            "malformed-json",
        ),
        case("array body", &p, t, "[]", 400, "invalid-body"),
        case(
            "choices is a string",
            &p,
            t,
            r#"{"choices":"o0"}"#,
            400,
            "invalid-body",
        ),
        case(
            "choices are numbers",
            &p,
            t,
            r#"{"choices":[1,2]}"#,
            400,
            "invalid-body",
        ),
        case(
            "choices null",
            &p,
            t,
            r#"{"choices":null}"#,
            400,
            "invalid-body",
        ),
        case("choices missing", &p, t, "{}", 400, "invalid-body"),
        case(
            "nested choices",
            &p,
            t,
            r#"{"choices":[["o0"]]}"#,
            400,
            "invalid-body",
        ),
        case(
            "unknown field",
            &p,
            t,
            r#"{"choices":["o0"],"voter":"me"}"#,
            400,
            "invalid-body",
        ),
        case(
            "no choice",
            &p,
            t,
            r#"{"choices":[]}"#,
            422,
            "invalid-ballot",
        ),
        case(
            "unknown option",
            &p,
            t,
            r#"{"choices":["zz"]}"#,
            422,
            "invalid-ballot",
        ),
        case(
            "two choices in a single election",
            &p,
            t,
            r#"{"choices":["o0","o1"]}"#,
            422,
            "invalid-ballot",
        ),
        case(
            "very long option id",
            &p,
            t,
            &format!(r#"{{"choices":["{}"]}}"#, "x".repeat(5000)),
            422,
            "invalid-ballot",
        ),
        case(
            "duplicate choice",
            &pm,
            Some(&format!("Bearer {multi_token}")),
            r#"{"choices":["o0","o0"]}"#,
            422,
            "invalid-ballot",
        ),
        case(
            "too many choices",
            &pm,
            Some(&format!("Bearer {multi_token}")),
            r#"{"choices":["o0","o1","o2"]}"#,
            422,
            "invalid-ballot",
        ),
        case(
            "huge body",
            &p,
            t,
            &format!(r#"{{"choices":["{}"]}}"#, "o".repeat(100_000)),
            413,
            "body-too-large",
        ),
        case(
            "election id not a uuid",
            "/v1/elections/not-a-uuid/ballots",
            t,
            ok,
            400,
            "invalid-path",
        ),
        case(
            "unknown election",
            &format!("/v1/elections/{unknown_election}/ballots"),
            Some(&format!("Bearer {unknown_election_token}")),
            ok,
            404,
            "not-found",
        ),
        case(
            "draft election",
            &format!("/v1/elections/{draft}/ballots"),
            Some(&format!("Bearer {draft_token}")),
            ok,
            403,
            "election-not-open",
        ),
        case(
            "closed election",
            &format!("/v1/elections/{closed}/ballots"),
            Some(&format!("Bearer {closed_token}")),
            ok,
            403,
            "election-not-open",
        ),
        case("unknown route", "/v1/elections", t, ok, 404, "not-found"),
    ];
    let mut no_type = case("no content type", &p, t, ok, 415, "unsupported-media-type");
    no_type.content_type = None;
    cases.push(no_type);
    let mut text = case("text/plain", &p, t, ok, 415, "unsupported-media-type");
    text.content_type = Some("text/plain");
    cases.push(text);
    let mut get = case(
        "GET on the ballot route",
        &p,
        t,
        "",
        405,
        "method-not-allowed",
    );
    get.method = reqwest::Method::GET;
    cases.push(get);
    let mut receipt = case(
        "receipt never issued",
        "/v1/receipts/r1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        None,
        "",
        404,
        "not-found",
    );
    receipt.method = reqwest::Method::GET;
    cases.push(receipt);
    assert!(cases.len() >= 30);

    let mut failures = Vec::new();
    for c in &cases {
        let mut request = stack
            .http
            .request(c.method.clone(), format!("{}{}", stack.ingest_url, c.path))
            .body(c.body.clone());
        if let Some(a) = &c.auth {
            request = request.header("authorization", a);
        }
        if let Some(ct) = c.content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let slug = body["type"]
            .as_str()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let detail_ok = body["detail"].as_str().is_some_and(|d| !d.is_empty());
        if status != c.status
            || slug != c.slug
            || content_type.as_deref() != Some("application/problem+json")
            || !detail_ok
        {
            failures.push(format!(
                "{}: got {status} {slug} ({content_type:?}) {body}",
                c.name
            ));
        }
        // A token never appears in an answer.
        assert!(
            !body.to_string().contains(&token[20..60]),
            "{}: the token leaked",
            c.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(
        drain_count(&stack.pubsub.settings, Duration::from_secs(3)).await,
        0,
        "a bad vote was queued"
    );
}

#[tokio::test]
async fn rate_limited_votes_get_429_with_retry_after_and_are_not_queued() {
    let stack = Stack::start(StackOptions {
        extra_env: vec![("RATE_LIMIT_PER_CLIENT", "1".to_owned())],
        ..Default::default()
    })
    .await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 6).await;
    let mut statuses = Vec::new();
    for t in &tokens {
        let r = stack.vote(election, t, &["o0"]).await;
        let status = r.status().as_u16();
        if status == 429 {
            assert!(
                r.headers().get("retry-after").is_some(),
                "429 without Retry-After"
            );
            let body: Value = r.json().await.unwrap();
            assert!(body["type"].as_str().unwrap().ends_with("rate-limited"));
        }
        statuses.push(status);
    }
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(accepted >= 1, "{statuses:?}");
    assert_eq!(
        drain_count(&stack.pubsub.settings, Duration::from_secs(3)).await,
        accepted
    );
}

#[tokio::test]
async fn direct_mode_idempotency_key_replay_gets_the_first_answer() {
    let stack = Stack::start(StackOptions {
        queue_mode: false,
        ..Default::default()
    })
    .await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let token = stack.tokens(TENANT, election, 1).await.remove(0);
    let send = |key: Option<&'static str>| {
        let mut request = stack
            .http
            .post(format!(
                "{}/v1/elections/{election}/ballots",
                stack.ingest_url
            ))
            .bearer_auth(&token)
            .json(&json!({"choices": ["o1"]}));
        if let Some(k) = key {
            request = request.header("idempotency-key", k);
        }
        request.send()
    };
    let first = send(Some("k-1")).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let replay = send(Some("k-1")).await.unwrap();
    assert_eq!(
        replay.status(),
        201,
        "a replay with the same key gets the first answer"
    );
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay, first);
    assert_eq!(
        send(Some("k-2")).await.unwrap().status(),
        409,
        "another key is another vote"
    );
    assert_eq!(send(None).await.unwrap().status(), 409);
    assert_eq!(stack.ballot_count(election).await, 1);
}
