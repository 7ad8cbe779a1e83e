//! Who may do what: tenants cannot see or vote in each other's elections, admin actions need
//! the admin role, sessions must be genuine, the queue flag needs the ops role and is audited,
//! an outage of the elections side gives a clear 503 rather than a token that cannot vote, a
//! member removed from the registry and imported again is the same member (no second token), a
//! member removed after logging in gets no token, a session key members-fn stops publishing is
//! refused once the key TTL has passed, and a close whose S2S attempts were cancelled behind a
//! row lock still goes through.

mod support;

use std::time::Duration;

use members_fn::national_id::NationalId;
use members_fn::registry::{self, ImportReport, MemberRecord};
use reqwest::Method;
use serde_json::json;
use shared::domain::TenantId;
use shared::session::{Role, SessionClaims, SessionSigner};
use shared::testkit::Role as DbRole;
use support::{World, OTHER_TENANT, TENANT};

#[tokio::test]
async fn a_member_of_tenant_b_can_neither_see_nor_vote_in_tenant_a() {
    let world = World::start(true).await;
    let admin_a = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election = world.open_election(&admin_a).await;
    let member_b = world
        .dev_login(&world.person(OTHER_TENANT, &["member", "admin"]).await)
        .await;

    let listed = world
        .events(Method::GET, "/v1/elections?status=all", &member_b, None)
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body, json!([]));
    for (method, path) in [
        (Method::GET, format!("/v1/elections/{election}")),
        (Method::POST, format!("/v1/elections/{election}/token")),
        (Method::GET, format!("/v1/elections/{election}/results")),
        (Method::POST, format!("/v1/elections/{election}/close")),
    ] {
        let answer = world.events(method, &path, &member_b, None).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
    }
    // Tenant B's own token (from B's election) does not vote in A's election.
    let election_b = world.open_election(&member_b).await;
    let token_b = world.token(&member_b, election_b).await;
    assert_eq!(token_b.status, 201);
    let vote = world
        .vote(token_b.body["token"].as_str().unwrap(), election, &["yes"])
        .await;
    assert_eq!(vote.status, 403, "{}", vote.body);
    // And A's election is still open and untouched.
    let still = world
        .events(
            Method::GET,
            &format!("/v1/elections/{election}"),
            &admin_a,
            None,
        )
        .await;
    assert_eq!(still.body["status"], "open");
}

#[tokio::test]
async fn admin_actions_by_a_non_admin_are_refused() {
    let world = World::start(true).await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let member = world
        .dev_login(&world.person(TENANT, &["member"]).await)
        .await;
    let election = world.open_election(&admin).await;
    let create = world
        .events(
            Method::POST,
            "/v1/elections",
            &member,
            Some(json!({
            "title": "t", "question": "q", "kind": "single",
            "options": [{"id": "a", "label": "A"}], "max_choices": 1})),
        )
        .await;
    assert_eq!(
        (create.status, create.slug()),
        (403, "forbidden"),
        "{}",
        create.body
    );
    for action in ["open", "close"] {
        let answer = world
            .events(
                Method::POST,
                &format!("/v1/elections/{election}/{action}"),
                &member,
                None,
            )
            .await;
        assert_eq!(answer.status, 403, "{action}");
    }
    let drafts = world
        .events(Method::GET, "/v1/elections?status=draft", &member, None)
        .await;
    assert_eq!(drafts.status, 403);
    let results = world
        .events(
            Method::GET,
            &format!("/v1/elections/{election}/results"),
            &member,
            None,
        )
        .await;
    assert_eq!(results.status, 403);
    // Invalid definitions are named 4xx.
    for (body, status, slug) in [
        (
            json!({"title": "t", "question": "q", "kind": "single", "options": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}], "max_choices": 2}),
            422,
            "invalid-election",
        ),
        (
            json!({"title": "t", "question": "q", "kind": "multiple", "options": [{"id": "a", "label": "A"}, {"id": "a", "label": "B"}], "max_choices": 1}),
            422,
            "invalid-election",
        ),
        (
            json!({"title": "", "question": "q", "kind": "single", "options": [{"id": "a", "label": "A"}], "max_choices": 1}),
            422,
            "invalid-election",
        ),
        (
            json!({"title": "t", "question": "q", "kind": "approval", "options": [{"id": "a", "label": "A"}], "max_choices": 1}),
            400,
            "invalid-body",
        ),
    ] {
        let answer = world
            .events(Method::POST, "/v1/elections", &admin, Some(body.clone()))
            .await;
        assert_eq!(
            (answer.status, answer.slug()),
            (status, slug),
            "{body}: {}",
            answer.body
        );
    }
    // A closed election stays closed.
    world
        .events(
            Method::POST,
            &format!("/v1/elections/{election}/close"),
            &admin,
            None,
        )
        .await;
    let reopen = world
        .events(
            Method::POST,
            &format!("/v1/elections/{election}/open"),
            &admin,
            None,
        )
        .await;
    assert_eq!(reopen.status, 409);
}

#[tokio::test]
async fn sessions_must_be_genuine_and_current() {
    let world = World::start(true).await;
    let person = world.person(TENANT, &["member", "admin"]).await;
    let genuine = world.dev_login(&person).await;
    assert_eq!(
        world
            .events(Method::GET, "/v1/elections", &genuine, None)
            .await
            .status,
        200
    );

    let members_key = SessionSigner::from_config(
        &world.session_signer_config,
        "ekklesia-members".into(),
        Duration::from_secs(900),
    )
    .unwrap();
    let forger = SessionSigner::generate("s1", "ekklesia-members".into(), Duration::from_secs(900));
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, iss: &str| SessionClaims {
        iss: iss.into(),
        aud: "ekklesia".into(),
        sub: uuid::Uuid::new_v4(),
        org: shared::domain::TenantId::parse(TENANT).unwrap(),
        roles: vec![Role::Member, Role::Admin],
        iat: now,
        exp,
    };
    for (token, slug) in [
        (
            members_key.sign_claims(&claims(now - 120, "ekklesia-members")),
            "session-expired",
        ),
        (
            members_key.sign_claims(&claims(now + 600, "someone-else")),
            "invalid-session",
        ),
        (
            forger.sign_claims(&claims(now + 600, "ekklesia-members")),
            "invalid-session",
        ),
        ("not-a-token".to_owned(), "invalid-session"),
    ] {
        let answer = world
            .events(Method::GET, "/v1/elections", &token, None)
            .await;
        assert_eq!(
            (answer.status, answer.slug()),
            (401, slug),
            "{}",
            answer.body
        );
    }
    let anonymous = world
        .call(
            Method::GET,
            &format!("{}/v1/elections", world.events_url),
            None,
            None,
        )
        .await;
    assert_eq!(
        (anonymous.status, anonymous.slug()),
        (401, "missing-session")
    );
}

#[tokio::test]
async fn the_queue_flag_needs_ops_is_audited_and_ingest_follows_it() {
    let world = World::start(true).await;
    let ops = world
        .dev_login(&world.person(TENANT, &["member", "ops"]).await)
        .await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let refused = world
        .events(
            Method::PUT,
            "/v1/ops/queue-mode",
            &admin,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        world
            .events(Method::GET, "/v1/ops/queue-mode", &admin, None)
            .await
            .status,
        403
    );

    let switched = world
        .events(
            Method::PUT,
            "/v1/ops/queue-mode",
            &ops,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(switched.status, 200, "{}", switched.body);
    assert_eq!(switched.body["enabled"], false);
    let change = &switched.body["recent_changes"][0];
    assert_eq!(change["new_enabled"], false);
    assert!(
        change["changed_by"]
            .as_str()
            .unwrap()
            .starts_with("member:"),
        "{change}"
    );
    assert!(
        change["changed_by"].as_str().unwrap().ends_with("@party-a"),
        "{change}"
    );

    // Ingest follows within its poll interval: a vote is now recorded synchronously.
    let election = world.open_election(&admin).await;
    let voter = world
        .dev_login(&world.person(TENANT, &["member"]).await)
        .await;
    let token = world.token(&voter, election).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let vote = world.vote(&token, election, &["no"]).await;
    assert_eq!(vote.status, 201, "{}", vote.body);

    let back = world
        .events(
            Method::PUT,
            "/v1/ops/queue-mode",
            &ops,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(back.body["enabled"], true);
    assert_eq!(back.body["recent_changes"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_elections_side_outage_gives_503_and_no_token_that_cannot_vote() {
    let world = World::start(true).await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election = world.open_election(&admin).await;
    let voter = world
        .dev_login(&world.person(TENANT, &["member"]).await)
        .await;
    // The slots registered at opening are spent: this token needs a registration first.
    sqlx::query("UPDATE events.elections SET slots_issued = slots_registered WHERE id = $1")
        .bind(election)
        .execute(&world.db.owner)
        .await
        .unwrap();

    world.elections_link.down();
    let started = std::time::Instant::now();
    let refused = world.token(&voter, election).await;
    assert_eq!(
        (refused.status, refused.slug()),
        (503, "elections-side-unavailable"),
        "{}",
        refused.body
    );
    assert!(refused.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the retry budget"
    );
    // Nothing was recorded: the member was not marked as having a token.
    let issued: i64 = sqlx::query_scalar("SELECT count(*) FROM events.token_issuance")
        .fetch_one(&world.db.owner)
        .await
        .unwrap();
    assert_eq!(issued, 0);
    // An admin change is refused the same way and leaves nothing half-done.
    let create = world
        .events(
            Method::POST,
            "/v1/elections",
            &admin,
            Some(json!({
            "title": "t", "question": "q", "kind": "single",
            "options": [{"id": "a", "label": "A"}], "max_choices": 1})),
        )
        .await;
    assert_eq!(create.status, 503);
    let close = world
        .events(
            Method::POST,
            &format!("/v1/elections/{election}/close"),
            &admin,
            None,
        )
        .await;
    assert_eq!(close.status, 503);
    let all = world
        .events(Method::GET, "/v1/elections?status=all", &admin, None)
        .await;
    assert_eq!(all.body.as_array().unwrap().len(), 1, "{}", all.body);
    assert_eq!(all.body[0]["status"], "open");

    // Once the elections side is back (and the breaker lets calls through) the member gets
    // a token that votes.
    world.elections_link.up();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let token = loop {
        let answer = world.token(&voter, election).await;
        if answer.status == 201 {
            break answer.body["token"].as_str().unwrap().to_owned();
        }
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert!(
            std::time::Instant::now() < deadline,
            "the elections side came back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let vote = world.vote(&token, election, &["yes"]).await;
    assert_eq!(vote.status, 202, "{}", vote.body);
}

/// Makes `TENANT`'s registry equal to `people` (national id, roles), as `members-import` does.
async fn import(world: &World, people: &[(&str, &[Role])]) -> ImportReport {
    let records: Vec<MemberRecord> = people
        .iter()
        .map(|(national_id, roles)| MemberRecord {
            national_id: NationalId::parse(national_id).unwrap(),
            name: "Test".into(),
            roles: roles.to_vec(),
        })
        .collect();
    let pool = world.db.pool(DbRole::Members).await;
    registry::sync(&pool, &TenantId::parse(TENANT).unwrap(), &records, false)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_member_removed_and_imported_again_keeps_their_id_and_gets_no_second_token() {
    let world = World::start(true).await;
    let admin_id = world.national_id();
    let voter = world.national_id();
    let both: [(&str, &[Role]); 2] = [
        (&admin_id, &[Role::Member, Role::Admin]),
        (&voter, &[Role::Member]),
    ];
    let report = import(&world, &both).await;
    assert_eq!((report.added, report.removed), (2, 0), "{report:?}");
    let admin = world.dev_login(&admin_id).await;
    let election = world.open_election(&admin).await;

    let first = world.dev_login_answer(&voter).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let member_id = first.body["member"]["id"].clone();
    let session = first.body["session_token"].as_str().unwrap();
    let issued = world.token(session, election).await;
    assert_eq!(issued.status, 201, "{}", issued.body);

    // The next export omits the voter: they cannot log in, like any stranger.
    let report = import(&world, &both[..1]).await;
    assert_eq!((report.added, report.removed), (0, 1), "{report:?}");
    let refused = world.dev_login_answer(&voter).await;
    assert_eq!(
        (refused.status, refused.slug()),
        (403, "not-a-member"),
        "{}",
        refused.body
    );

    // The one after lists them again: the same member, who already has this election's token.
    let report = import(&world, &both).await;
    assert_eq!((report.added, report.removed), (1, 0), "{report:?}");
    let back = world.dev_login_answer(&voter).await;
    assert_eq!(back.status, 200, "{}", back.body);
    let session = back.body["session_token"].as_str().unwrap();
    let again = world.token(session, election).await;
    assert_eq!(
        (again.status, again.slug()),
        (409, "token-already-issued"),
        "a second token for the same election: {}",
        again.body
    );
    assert_eq!(back.body["member"]["id"], member_id);
    let listed = world
        .events(Method::GET, "/v1/elections", session, None)
        .await;
    assert!(
        listed
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == election.to_string() && e["token_issued"] == true),
        "{}",
        listed.body
    );
    let issuances: i64 = sqlx::query_scalar("SELECT count(*) FROM events.token_issuance")
        .fetch_one(&world.db.owner)
        .await
        .unwrap();
    assert_eq!(issuances, 1);
}

#[tokio::test]
async fn a_member_removed_after_logging_in_gets_no_token() {
    let world = World::start(true).await;
    let admin_id = world.national_id();
    let staying = world.national_id();
    let leaving = world.national_id();
    let everyone: [(&str, &[Role]); 3] = [
        (&admin_id, &[Role::Member, Role::Admin]),
        (&staying, &[Role::Member]),
        (&leaving, &[Role::Member]),
    ];
    import(&world, &everyone).await;
    let admin = world.dev_login(&admin_id).await;
    let election = world.open_election(&admin).await;
    let staying = world.dev_login_answer(&staying).await;
    let leaving = world.dev_login(&leaving).await;

    // The next export omits them; their session (15 minutes) is still genuine.
    let report = import(&world, &everyone[..2]).await;
    assert_eq!(report.removed, 1, "{report:?}");
    let refused = world.token(&leaving, election).await;
    assert_eq!(
        (refused.status, refused.slug()),
        (403, "not-a-member"),
        "{}",
        refused.body
    );
    let session = staying.body["session_token"].as_str().unwrap();
    let issued = world.token(session, election).await;
    assert_eq!(issued.status, 201, "{}", issued.body);

    // The registry answers for the session's own tenant only: a (genuinely signed) session of
    // another tenant naming this tenant's member gets nothing.
    let members_key = SessionSigner::from_config(
        &world.session_signer_config,
        "ekklesia-members".into(),
        Duration::from_secs(900),
    )
    .unwrap();
    let (foreign, _) = members_key.sign(
        staying.body["member"]["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        TenantId::parse(OTHER_TENANT).unwrap(),
        vec![Role::Member],
        chrono::Utc::now(),
    );
    let refused = world.token(&foreign, election).await;
    assert_eq!(
        (refused.status, refused.slug()),
        (403, "not-a-member"),
        "{}",
        refused.body
    );
}

/// A JSON Web Key Set served on 127.0.0.1 whose keys the test changes.
struct KeySet {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<serde_json::Value>>,
}

impl KeySet {
    async fn serve() -> Self {
        let keys = std::sync::Arc::new(std::sync::Mutex::new(json!({ "keys": [] })));
        let served = keys.clone();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || async move { axum::Json(served.lock().unwrap().clone()) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, keys }
    }

    /// Publishes the public keys of `signers` (and only those).
    fn publish(&self, signers: &[&SessionSigner]) {
        let keys: Vec<serde_json::Value> = signers
            .iter()
            .flat_map(|s| s.jwks()["keys"].as_array().cloned().unwrap_or_default())
            .collect();
        *self.keys.lock().unwrap() = json!({ "keys": keys });
    }
}

#[tokio::test]
async fn a_session_key_no_longer_published_is_refused_once_the_key_ttl_has_passed() {
    let key_set = KeySet::serve().await;
    let world = World::start_with(
        true,
        &[
            ("SESSION_JWKS_URL", key_set.url.clone()),
            ("SESSION_JWKS_TTL_SECS", "1".into()),
        ],
    )
    .await;
    let key = |kid: &str| {
        SessionSigner::generate(kid, "ekklesia-members".into(), Duration::from_secs(900))
    };
    let (compromised, next) = (key("s-old"), key("s-new"));
    key_set.publish(&[&compromised, &next]);
    let session = |signer: &SessionSigner| {
        signer
            .sign(
                uuid::Uuid::new_v4(),
                TenantId::parse(TENANT).unwrap(),
                vec![Role::Member],
                chrono::Utc::now(),
            )
            .0
    };
    let (old_session, new_session) = (session(&compromised), session(&next));
    for s in [&old_session, &new_session] {
        let answer = world.events(Method::GET, "/v1/elections", s, None).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }

    // members-fn drops the compromised key from its JWKS. events-svc holds the key set it
    // fetched; within about a TTL (1 s here) it fetches again and refuses the dropped key.
    key_set.publish(&[&next]);
    let dropped = std::time::Instant::now();
    let deadline = dropped + Duration::from_secs(10);
    loop {
        let answer = world
            .events(Method::GET, "/v1/elections", &old_session, None)
            .await;
        if answer.status == 401 {
            assert_eq!(answer.slug(), "invalid-session", "{}", answer.body);
            break;
        }
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(
            std::time::Instant::now() < deadline,
            "a session signed with a key members-fn no longer publishes is still accepted \
             {:?} after the key was dropped",
            dropped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = world
        .events(Method::GET, "/v1/elections", &new_session, None)
        .await;
    assert_eq!(
        answer.status, 200,
        "the key still published works: {}",
        answer.body
    );
}

#[tokio::test]
async fn a_close_whose_attempts_are_cancelled_behind_a_row_lock_succeeds_once_it_is_released() {
    // Each S2S attempt gives up after 500 ms, before ingest's 1 s lock timeout can answer: the
    // client hangs up while ingest's handler waits for the election's row, and ingest drops the
    // handler. Such an attempt used to leave its idempotency key `in-progress` for 10 minutes.
    // Under the 10 s idle-in-transaction timeout: events-svc keeps its transaction open while
    // it pushes.
    let budget = Duration::from_secs(8);
    let world = World::start_with(
        true,
        &[
            ("S2S_ATTEMPT_TIMEOUT_MS", "500".to_owned()),
            ("S2S_RETRY_BUDGET_MS", "8000".to_owned()),
        ],
    )
    .await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election = world.open_election(&admin).await;

    // A long vote batch holds the election's row on the elections side (as the worker does)
    // for 3 s while the admin closes the election.
    let mut batch = world.db.owner.begin().await.unwrap();
    let batch_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *batch)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM elections.elections WHERE id = $1 FOR KEY SHARE")
        .bind(election)
        .execute(&mut *batch)
        .await
        .unwrap();
    let path = format!("/v1/elections/{election}/close");
    let close = world.events(Method::POST, &path, &admin, None);
    tokio::pin!(close);
    let hold_until = std::time::Instant::now() + Duration::from_secs(3);
    let mut waited_for_the_row = false;
    while std::time::Instant::now() < hold_until {
        tokio::select! {
            answer = &mut close => panic!(
                "the close ended while the row was locked: {} {}", answer.status, answer.body
            ),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        waited_for_the_row |= world.db.lock_waiters_of(batch_pid).await > 0;
    }
    batch.rollback().await.unwrap();
    let released = std::time::Instant::now();
    let closed = close.await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert_eq!(closed.body["status"], "closed");
    assert!(
        released.elapsed() < budget,
        "closed {:?} after the release",
        released.elapsed()
    );
    assert!(waited_for_the_row, "no attempt ever waited for the row");
    let elections_side: String =
        sqlx::query_scalar("SELECT status FROM elections.elections WHERE id = $1")
            .bind(election)
            .fetch_one(&world.db.owner)
            .await
            .unwrap();
    assert_eq!(elections_side, "closed");
}

#[tokio::test]
async fn publishes_its_contract_and_operational_routes() {
    let world = World::start(true).await;
    let api = world
        .call(
            Method::GET,
            &format!("{}/openapi.json", world.events_url),
            None,
            None,
        )
        .await;
    for path in [
        "/v1/elections",
        "/v1/elections/{id}",
        "/v1/elections/{id}/open",
        "/v1/elections/{id}/close",
        "/v1/elections/{id}/token",
        "/v1/elections/{id}/results",
        "/v1/ops/queue-mode",
    ] {
        assert!(
            api.body["paths"].get(path).is_some(),
            "{path} in the OpenAPI document"
        );
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let answer = world
            .http
            .get(format!("{}{path}", world.events_url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
    }
}
