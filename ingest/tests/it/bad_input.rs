//! Every kind of bad vote gets the right 4xx as problem+json naming the problem, and nothing
//! reaches the queue.

use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use serde_json::{json, Value};
use shared::token::{Claims, TokenSigner};
use testkit::elections::{drain_count, Stack, StackOptions, OTHER_TENANT, TENANT};
use uuid::Uuid;

/// The elections and tokens the bad votes are made of.
struct Fixtures {
    /// Vote path of an open single-choice election (options o0..o2), and a genuine token for it.
    single: String,
    token: String,
    /// Vote path of an open multiple-choice election (up to 2 of o0..o2), and a token for it.
    multiple: String,
    multi_token: String,
    /// A draft election and a closed one, each with a token of its own.
    draft: String,
    draft_token: String,
    closed: String,
    closed_token: String,
    /// An election ingest never heard of, with a well-signed token for it.
    unknown: String,
    unknown_token: String,
    tokens: BadTokens,
}

/// Tokens for the single-choice election that are wrong in one way each.
struct BadTokens {
    tampered: String,
    expired: String,
    early: String,
    /// Signed by a key ingest does not know.
    stranger: String,
    /// Signed by the other tenant's key.
    foreign: String,
    /// Genuine, but for the multiple-choice election.
    other_election: String,
}

impl Fixtures {
    async fn new(stack: &Stack) -> Self {
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

        let signer = stack.keys.signer(TENANT);
        let now = Utc::now();
        let hour = chrono::Duration::hours(1);
        let claims = |election: Uuid, nbf: i64, exp: i64| Claims {
            ten: stack.tenant(TENANT),
            elc: election,
            jti: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            nbf,
            exp,
        };
        let t = now.timestamp();
        let unknown = Uuid::new_v4();
        let tokens = BadTokens {
            tampered: {
                // Change one character in the middle of the signature.
                let at = token.len() - 20;
                let swapped = if &token[at..at + 1] == "A" { "B" } else { "A" };
                format!("{}{swapped}{}", &token[..at], &token[at + 1..])
            },
            expired: signer.sign_claims(&claims(single, t - 7200, t - 3600)),
            early: signer.sign_claims(&claims(single, t + 3600, t + 7200)),
            stranger: TokenSigner::generate("stranger", stack.tenant(TENANT))
                .issue(single, now, now + hour)
                .0,
            foreign: stack
                .keys
                .signer(OTHER_TENANT)
                .sign_claims(&claims(single, t, t + 3600)),
            other_election: signer.issue(multiple, now, now + hour).0,
        };
        Self {
            single: format!("/v1/elections/{single}/ballots"),
            token,
            multiple: format!("/v1/elections/{multiple}/ballots"),
            multi_token,
            draft: format!("/v1/elections/{draft}/ballots"),
            draft_token: signer.issue(draft, now, now + hour).0,
            closed: format!("/v1/elections/{closed}/ballots"),
            closed_token,
            unknown: format!("/v1/elections/{unknown}/ballots"),
            unknown_token: signer.issue(unknown, now, now + hour).0,
            tokens,
        }
    }
}

/// One bad request and the problem it must get.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    auth: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    slug: &'static str,
}

impl Case {
    /// A POST of a valid ballot (`{"choices":["o0"]}` as JSON) to `path`, without credentials.
    fn post(name: &'static str, path: &str) -> Self {
        Self {
            name,
            method: Method::POST,
            path: path.to_owned(),
            auth: None,
            content_type: Some("application/json"),
            body: br#"{"choices":["o0"]}"#.to_vec(),
            status: 0,
            slug: "",
        }
    }

    fn get(mut self) -> Self {
        self.method = Method::GET;
        self.body.clear();
        self
    }

    fn auth(mut self, authorization: &str) -> Self {
        self.auth = Some(authorization.to_owned());
        self
    }

    fn bearer(self, token: &str) -> Self {
        self.auth(&format!("Bearer {token}"))
    }

    fn body(mut self, body: &str) -> Self {
        self.body = body.as_bytes().to_vec();
        self
    }

    fn content_type(mut self, content_type: Option<&'static str>) -> Self {
        self.content_type = content_type;
        self
    }

    fn expect(mut self, status: u16, slug: &'static str) -> Self {
        self.status = status;
        self.slug = slug;
        self
    }
}

fn cases(f: &Fixtures) -> Vec<Case> {
    let bad = &f.tokens;
    let vote = |name| Case::post(name, &f.single).bearer(&f.token);
    let multi = |name| Case::post(name, &f.multiple).bearer(&f.multi_token);
    vec![
        // Credentials.
        Case::post("no authorization", &f.single).expect(401, "missing-token"),
        Case::post("basic auth", &f.single)
            .auth("Basic dXNlcjpwdw==")
            .expect(401, "missing-token"),
        Case::post("empty bearer", &f.single)
            .auth("Bearer ")
            .expect(401, "missing-token"),
        Case::post("garbage token", &f.single)
            .bearer("not.a.token")
            .expect(401, "token-malformed"),
        Case::post("one-part token", &f.single)
            .bearer("abc")
            .expect(401, "token-malformed"),
        Case::post("tampered signature", &f.single)
            .bearer(&bad.tampered)
            .expect(401, "token-bad-signature"),
        Case::post("expired token", &f.single)
            .bearer(&bad.expired)
            .expect(401, "token-expired"),
        Case::post("not yet valid", &f.single)
            .bearer(&bad.early)
            .expect(401, "token-not-yet-valid"),
        Case::post("unknown key id", &f.single)
            .bearer(&bad.stranger)
            .expect(401, "token-unknown-key"),
        Case::post("other tenant's key", &f.single)
            .bearer(&bad.foreign)
            .expect(401, "token-wrong-tenant"),
        Case::post("token for another election", &f.single)
            .bearer(&bad.other_election)
            .expect(403, "token-for-other-election"),
        Case::post("oversized token", &f.single)
            .bearer(&"a.".repeat(800))
            .expect(401, "token-malformed"),
        // The body.
        vote("truncated json")
            .body(r#"{"choices": ["#)
            .expect(400, "malformed-json"),
        vote("empty body").body("").expect(400, "malformed-json"),
        vote("not json at all")
            .body("choices=o0")
            .expect(400, "malformed-json"),
        vote("array body").body("[]").expect(400, "invalid-body"),
        vote("choices is a string")
            .body(r#"{"choices":"o0"}"#)
            .expect(400, "invalid-body"),
        vote("choices are numbers")
            .body(r#"{"choices":[1,2]}"#)
            .expect(400, "invalid-body"),
        vote("choices null")
            .body(r#"{"choices":null}"#)
            .expect(400, "invalid-body"),
        vote("choices missing")
            .body("{}")
            .expect(400, "invalid-body"),
        vote("nested choices")
            .body(r#"{"choices":[["o0"]]}"#)
            .expect(400, "invalid-body"),
        vote("unknown field")
            .body(r#"{"choices":["o0"],"voter":"me"}"#)
            .expect(400, "invalid-body"),
        vote("huge body")
            .body(&format!(r#"{{"choices":["{}"]}}"#, "o".repeat(100_000)))
            .expect(413, "body-too-large"),
        vote("no content type")
            .content_type(None)
            .expect(415, "unsupported-media-type"),
        vote("text/plain")
            .content_type(Some("text/plain"))
            .expect(415, "unsupported-media-type"),
        // The ballot.
        vote("no choice")
            .body(r#"{"choices":[]}"#)
            .expect(422, "invalid-ballot"),
        vote("unknown option")
            .body(r#"{"choices":["zz"]}"#)
            .expect(422, "invalid-ballot"),
        vote("two choices in a single election")
            .body(r#"{"choices":["o0","o1"]}"#)
            .expect(422, "invalid-ballot"),
        vote("very long option id")
            .body(&format!(r#"{{"choices":["{}"]}}"#, "x".repeat(5000)))
            .expect(422, "invalid-ballot"),
        multi("duplicate choice")
            .body(r#"{"choices":["o0","o0"]}"#)
            .expect(422, "invalid-ballot"),
        multi("too many choices")
            .body(r#"{"choices":["o0","o1","o2"]}"#)
            .expect(422, "invalid-ballot"),
        // The election and the route.
        Case::post("election id not a uuid", "/v1/elections/not-a-uuid/ballots")
            .bearer(&f.token)
            .expect(400, "invalid-path"),
        Case::post("unknown election", &f.unknown)
            .bearer(&f.unknown_token)
            .expect(404, "not-found"),
        Case::post("draft election", &f.draft)
            .bearer(&f.draft_token)
            .expect(403, "election-not-open"),
        Case::post("closed election", &f.closed)
            .bearer(&f.closed_token)
            .expect(403, "election-not-open"),
        Case::post("unknown route", "/v1/elections")
            .bearer(&f.token)
            .expect(404, "not-found"),
        vote("GET on the ballot route")
            .get()
            .expect(405, "method-not-allowed"),
        Case::post(
            "receipt never issued",
            "/v1/receipts/r1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .get()
        .expect(404, "not-found"),
    ]
}

/// What is wrong with the answer to `case`, if anything.
async fn check(stack: &Stack, case: &Case) -> Option<String> {
    let mut request = stack
        .http
        .request(
            case.method.clone(),
            format!("{}{}", stack.ingest_url, case.path),
        )
        .body(case.body.clone());
    if let Some(a) = &case.auth {
        request = request.header("authorization", a);
    }
    if let Some(ct) = case.content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").cloned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let slug = body["type"].as_str().unwrap_or("").rsplit('/').next();
    let detail = body["detail"].as_str().unwrap_or("");
    // A token never appears in an answer: the one this case sent (long enough to be one).
    let sent = case.auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
    let leaked = sent.is_some_and(|t| t.len() >= 40 && body.to_string().contains(t));
    let right = status == case.status
        && slug == Some(case.slug)
        && content_type.is_some_and(|ct| ct == "application/problem+json")
        && !detail.is_empty()
        && !leaked;
    (!right).then(|| {
        format!(
            "{}: got {status} {slug:?} (leaked: {leaked}) {body}",
            case.name
        )
    })
}

#[tokio::test]
async fn every_bad_vote_gets_its_problem_and_nothing_is_queued() {
    // The cases reuse a few genuine tokens far more often than one voter's budget allows.
    let stack = Stack::start(StackOptions {
        extra_env: vec![("RATE_LIMIT_PER_TOKEN", "1000".to_owned())],
        ..Default::default()
    })
    .await;
    let cases = cases(&Fixtures::new(&stack).await);
    let mut failures = Vec::new();
    for case in &cases {
        failures.extend(check(&stack, case).await);
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
