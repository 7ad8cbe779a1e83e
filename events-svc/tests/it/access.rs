//! Who may do what: tenants cannot see or vote in each other's elections, admin actions need
//! the admin role, sessions must be genuine, the queue flag needs a platform operator, is
//! audited (actor and database user) and changes at most once per interval, an outage of the
//! elections side gives a clear 503 rather than a token that cannot vote, a member removed from
//! the registry and imported again is the same member (no second token), a member removed after
//! logging in gets no token, a session key members-fn stops publishing is refused once the key
//! TTL has passed, a close whose S2S attempts were cancelled behind a row lock still goes
//! through, every bad election id is a problem, a tenant without keys gets 404 for others'
//! elections, results hold no tally before the seal, and a flooding member is held to their
//! budget while the chair can still close.

use std::time::Duration;

use crate::support::{World, OTHER_TENANT, PLATFORM, TENANT};
use members_fn::national_id::NationalId;
use members_fn::registry::{self, ImportReport, MemberRecord};
use reqwest::Method;
use serde_json::json;
use shared::domain::TenantId;
use shared::session::{Role, SessionClaims, SessionSigner};
use testkit::Role as DbRole;
use testkit::{eventually, eventually_every};

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
async fn the_queue_flag_needs_a_platform_operator_is_audited_rate_limited_and_ingest_follows_it() {
    let interval = Duration::from_secs(2);
    let world = World::start_with(
        true,
        &[(
            "QUEUE_MODE_CHANGE_INTERVAL_MS",
            interval.as_millis().to_string(),
        )],
    )
    .await;
    let platform_ops = world
        .dev_login_answer(&world.person(PLATFORM, &["member", "ops"]).await)
        .await;
    assert_eq!(platform_ops.status, 200, "{}", platform_ops.body);
    let ops_member = platform_ops.body["member"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ops = platform_ops.body["session_token"].as_str().unwrap();
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    // A party grants roles in its own export: its `ops` (a session from a registry loaded
    // before members-import refused the role) neither changes the platform-wide flag nor reads
    // who changed it.
    let tenant_ops = world
        .dev_login(
            &world
                .person(OTHER_TENANT, &["member", "ops", "admin"])
                .await,
        )
        .await;
    for session in [&tenant_ops, &admin] {
        let refused = world
            .events(
                Method::PUT,
                "/v1/ops/queue-mode",
                session,
                Some(json!({"enabled": false})),
            )
            .await;
        assert_eq!(
            (refused.status, refused.slug()),
            (403, "not-platform-ops"),
            "{}",
            refused.body
        );
        let read = world
            .events(Method::GET, "/v1/ops/queue-mode", session, None)
            .await;
        assert_eq!((read.status, read.slug()), (403, "not-platform-ops"));
    }
    let changes = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ops.queue_mode_audit")
            .fetch_one(&world.db.owner)
            .await
            .unwrap()
    };
    assert_eq!(changes().await, 0, "nothing changed");

    let switched = world
        .events(
            Method::PUT,
            "/v1/ops/queue-mode",
            ops,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(switched.status, 200, "{}", switched.body);
    assert_eq!(switched.body["enabled"], false);
    let change = &switched.body["recent_changes"][0];
    assert_eq!(change["new_enabled"], false);
    assert_eq!(
        change["changed_by"],
        format!("member:{ops_member}@{PLATFORM}"),
        "the operator: {change}"
    );
    assert_eq!(
        change["database_user"],
        DbRole::Events.login(),
        "and the database user: {change}"
    );

    // A second change within the interval is refused, platform-wide; nothing changes.
    let again = world
        .events(
            Method::PUT,
            "/v1/ops/queue-mode",
            ops,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(
        (again.status, again.slug()),
        (429, "queue-mode-changed-recently"),
        "{}",
        again.body
    );
    let retry_after: u64 = again.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=interval.as_secs()).contains(&retry_after),
        "{retry_after}"
    );
    assert_eq!(changes().await, 1);

    // Ingest follows within its poll interval: a vote is now recorded synchronously.
    let election = world.open_election(&admin).await;
    let voter = world
        .dev_login(&world.person(TENANT, &["member"]).await)
        .await;
    let token = world.token(&voter, election).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    world.until_ingest_mode(election, false).await;
    let vote = world.vote(&token, election, &["no"]).await;
    assert_eq!(vote.status, 201, "{}", vote.body);

    // Once the interval has passed since the last change, the flag changes again.
    let back = eventually_every(
        interval + Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            let answer = world
                .events(
                    Method::PUT,
                    "/v1/ops/queue-mode",
                    ops,
                    Some(json!({"enabled": true})),
                )
                .await;
            if answer.status != 429 {
                Ok(answer)
            } else {
                Err(answer.body)
            }
        },
    )
    .await
    .expect("the flag changes once the interval has passed");
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.body["enabled"], true);
    assert_eq!(back.body["recent_changes"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_queue_mode_cli_path_records_the_database_user_whatever_actor_it_is_given() {
    let world = World::start(true).await;
    // What `queue-mode set off --actor ...` does, with the database owner's credentials (the
    // emergency path, without a session and without the change interval).
    let (key, platform) = (world.keys.audit_key(), TenantId::parse(PLATFORM).unwrap());
    let (old, new) =
        ingest::queue_mode::set(&world.db.owner, false, "alice@example", &key, &platform)
            .await
            .unwrap();
    assert_eq!((old, new), (None, false));
    let (old, new) = ingest::queue_mode::set(&world.db.owner, true, "bob@example", &key, &platform)
        .await
        .unwrap();
    assert_eq!((old, new), (Some(false), true));
    let owner: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&world.db.owner)
        .await
        .unwrap();
    let audit: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT changed_by, database_user FROM ops.queue_mode_audit ORDER BY id")
            .fetch_all(&world.db.owner)
            .await
            .unwrap();
    assert_eq!(
        audit,
        vec![
            ("alice@example".to_owned(), Some(owner.clone())),
            ("bob@example".to_owned(), Some(owner)),
        ]
    );
    // A change by the CLI counts for the interval of the API's changes too.
    let platform_ops = world
        .dev_login(&world.person(PLATFORM, &["member", "ops"]).await)
        .await;
    let refused = world
        .events(
            Method::PUT,
            "/v1/ops/queue-mode",
            &platform_ops,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(
        (refused.status, refused.slug()),
        (429, "queue-mode-changed-recently"),
        "{}",
        refused.body
    );
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
    let token = eventually_every(
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let answer = world.token(&voter, election).await;
            if answer.status == 201 {
                return Ok(answer.body["token"].as_str().unwrap().to_owned());
            }
            assert_eq!(answer.status, 503, "{}", answer.body);
            Err(answer.body)
        },
    )
    .await
    .expect("the elections side came back");
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
    eventually(Duration::from_secs(10), || async {
        let answer = world
            .events(Method::GET, "/v1/elections", &old_session, None)
            .await;
        if answer.status == 401 {
            assert_eq!(answer.slug(), "invalid-session", "{}", answer.body);
            return true;
        }
        assert_eq!(answer.status, 200, "{}", answer.body);
        false
    })
    .await
    .expect("a session signed with a key members-fn no longer publishes is refused");
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
    // The row stays locked for 3 s, across several of the close's 500 ms attempts: the hold is
    // the behaviour under test. Meanwhile an attempt must be seen waiting for the row.
    let hold = async {
        let (waited, ()) = tokio::join!(
            eventually(Duration::from_secs(3), || async {
                world.db.lock_waiters_of(batch_pid).await > 0
            }),
            tokio::time::sleep(Duration::from_secs(3)),
        );
        waited.is_ok()
    };
    let waited_for_the_row = tokio::select! {
        answer = &mut close => panic!(
            "the close ended while the row was locked: {} {}", answer.status, answer.body
        ),
        waited = hold => waited,
    };
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
    // The election id stays a documented path parameter although the handlers map its
    // rejection themselves.
    for (path, method) in [
        ("/v1/elections/{id}", "get"),
        ("/v1/elections/{id}/open", "post"),
        ("/v1/elections/{id}/close", "post"),
        ("/v1/elections/{id}/token", "post"),
        ("/v1/elections/{id}/results", "get"),
    ] {
        let operation = &api.body["paths"][path][method];
        assert_eq!(
            operation["parameters"][0]["name"], "id",
            "{method} {path}: {operation}"
        );
        assert!(operation["responses"].get("400").is_some(), "{path}");
    }
    // Every route checks the session: the document says so (schemathesis holds each answer
    // to it, `infra/local/schemathesis.sh`), and problems under the media type they are sent with.
    let paths = api.body["paths"].as_object().unwrap();
    for (path, item) in paths.iter().filter(|(path, _)| path.starts_with("/v1/")) {
        for (method, operation) in item.as_object().unwrap() {
            let unauthorized = &operation["responses"]["401"]["content"];
            assert!(
                unauthorized["application/problem+json"].is_object(),
                "{method} {path}: {operation}"
            );
            assert!(
                operation["security"][0].get("session").is_some(),
                "{method} {path}"
            );
        }
    }
    assert!(api.body["components"]["securitySchemes"]["session"].is_object());
    let filter = &paths["/v1/elections"]["get"]["parameters"][0];
    assert_eq!(
        (filter["name"].as_str(), filter["in"].as_str()),
        (Some("status"), Some("query")),
        "{filter}"
    );
    // The shared router's own routes are in the document too.
    for path in ["/openapi.json", "/healthz", "/readyz", "/metrics"] {
        assert!(
            paths[path]["get"].is_object(),
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

#[tokio::test]
async fn a_malformed_election_id_is_a_problem_on_every_route() {
    let world = World::start(true).await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    for (method, path) in [
        (Method::GET, "/v1/elections/not-a-uuid"),
        (Method::POST, "/v1/elections/not-a-uuid/open"),
        (Method::POST, "/v1/elections/not-a-uuid/close"),
        (Method::POST, "/v1/elections/not-a-uuid/token"),
        (Method::GET, "/v1/elections/not-a-uuid/results"),
        (Method::GET, "/v1/elections/%FF/results"),
    ] {
        let answer = world.events(method.clone(), path, &admin, None).await;
        assert_eq!(
            (answer.status, answer.slug()),
            (400, "invalid-path"),
            "{method} {path}: {}",
            answer.body
        );
        assert_eq!(
            answer.headers["content-type"],
            shared::problem::CONTENT_TYPE,
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn a_tenant_without_keys_gets_404_for_another_tenants_election_and_a_clear_503_for_its_own() {
    // Tenant B has neither a voting-token signing key nor a slot key yet.
    let signer_a = shared::token::TokenSigner::generate("a-only", TenantId::parse(TENANT).unwrap());
    let world = World::start_with(
        true,
        &[
            (
                "VOTING_TOKEN_SIGNING_KEYS",
                format!("a-only:{TENANT}:{}", signer_a.seed()),
            ),
            (
                "TOKEN_SLOT_KEYS",
                format!(
                    "a-slots:{TENANT}:{}",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        rand::random::<[u8; 32]>()
                    )
                ),
            ),
        ],
    )
    .await;
    let admin_a = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election_a = world.open_election(&admin_a).await;
    let member_b = world
        .dev_login(&world.person(OTHER_TENANT, &["member", "admin"]).await)
        .await;

    for election in [election_a, uuid::Uuid::new_v4()] {
        let answer = world.token(&member_b, election).await;
        assert_eq!(
            (answer.status, answer.slug()),
            (404, "not-found"),
            "{}",
            answer.body
        );
    }

    // B's own open election: the problem an operator must fix, with nothing recorded.
    let created = world
        .events(
            Method::POST,
            "/v1/elections",
            &member_b,
            Some(json!({
                "title": "t", "question": "q", "kind": "single",
                "options": [{"id": "yes", "label": "Yes"}], "max_choices": 1})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let election_b: uuid::Uuid = created.body["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("UPDATE events.elections SET status = 'open' WHERE id = $1")
        .bind(election_b)
        .execute(&world.db.owner)
        .await
        .unwrap();
    let refused = world.token(&member_b, election_b).await;
    assert_eq!(
        (refused.status, refused.slug()),
        (503, "tenant-not-configured"),
        "{}",
        refused.body
    );
    assert!(refused.headers.contains_key("retry-after"));
    let issued: i64 = sqlx::query_scalar("SELECT count(*) FROM events.token_issuance")
        .fetch_one(&world.db.owner)
        .await
        .unwrap();
    assert_eq!(issued, 0);
}

#[tokio::test]
async fn results_show_the_turnout_before_the_seal_and_the_tally_only_after() {
    // Direct mode: each vote is recorded before its answer, so the turnout is known at once.
    let world = World::start(false).await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election = world.open_election(&admin).await;
    let path = format!("/v1/elections/{election}/results");
    let mut voters = Vec::new();
    for choice in ["yes", "yes", "no"] {
        let voter = world
            .dev_login(&world.person(TENANT, &["member"]).await)
            .await;
        let token = world.token(&voter, election).await;
        assert_eq!(token.status, 201, "{}", token.body);
        let vote = world
            .vote(token.body["token"].as_str().unwrap(), election, &[choice])
            .await;
        assert_eq!(vote.status, 201, "{}", vote.body);
        voters.push(voter);
    }

    // The chair, watching the hall, learns how many voted and nothing about how.
    let live = world.events(Method::GET, &path, &admin, None).await;
    assert_eq!(live.status, 200, "{}", live.body);
    assert_eq!(live.body["total"], 3, "{}", live.body);
    assert_eq!(live.body["tally"], json!({}), "{}", live.body);
    assert_eq!(live.body["sealed"], false);
    assert_eq!(live.body["final"], false);
    for option in ["yes", "no", "abstain"] {
        assert!(
            !live.body.to_string().contains(&format!("\"{option}\"")),
            "no count per option: {}",
            live.body
        );
    }
    // Members read nothing before the close.
    let early = world.events(Method::GET, &path, &voters[0], None).await;
    assert_eq!(
        (early.status, early.slug()),
        (403, "results-not-published"),
        "{}",
        early.body
    );

    // After the close and the seal: the tally, for members too.
    let closed = world
        .events(
            Method::POST,
            &format!("/v1/elections/{election}/close"),
            &admin,
            None,
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    let sealed = world.final_results(&voters[0], election).await;
    assert_eq!(sealed["sealed"], true);
    assert_eq!(
        sealed["tally"],
        json!({"yes": 2, "no": 1, "abstain": 0}),
        "{sealed}"
    );
}

/// Sends `count` `GET /v1/elections` as `session` at once; returns how many got 429, checking
/// that each of those is a problem with Retry-After and every other one a 200.
async fn flood(world: &World, session: &str, count: usize) -> usize {
    let answers = futures::future::join_all(
        (0..count).map(|_| world.events(Method::GET, "/v1/elections", session, None)),
    )
    .await;
    let mut refused = 0;
    for answer in answers {
        match answer.status {
            200 => {}
            429 => {
                assert_eq!(answer.slug(), "rate-limited", "{}", answer.body);
                assert!(answer.headers.contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("{other}: {}", answer.body),
        }
    }
    refused
}

#[tokio::test]
async fn a_member_flooding_gets_429_and_neither_other_members_nor_the_chair_are_held_up() {
    let world = World::start_with(
        true,
        &[
            ("EVENTS_RATE_PER_MEMBER", "5".to_owned()),
            ("EVENTS_RATE_GLOBAL", "20".to_owned()),
        ],
    )
    .await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election = world.open_election(&admin).await;
    let flooder = world
        .dev_login(&world.person(TENANT, &["member"]).await)
        .await;
    let neighbour = world
        .dev_login(&world.person(TENANT, &["member"]).await)
        .await;

    // A burst of two seconds' worth (10) passes, the rest of 60 is refused...
    let refused = flood(&world, &flooder, 60).await;
    assert!(refused >= 45, "{refused} of 60 refused");
    // ...without spending the budget everyone shares (40): the neighbour is served.
    assert_eq!(flood(&world, &neighbour, 5).await, 0);

    // A crowd of members within their own budgets drains the shared one; the chair, held to
    // their own budget only, still closes the election.
    let mut crowd = Vec::new();
    for _ in 0..8 {
        crowd.push(
            world
                .dev_login(&world.person(TENANT, &["member"]).await)
                .await,
        );
    }
    let refused: usize =
        futures::future::join_all(crowd.iter().map(|session| flood(&world, session, 8)))
            .await
            .into_iter()
            .sum();
    assert!(refused > 0, "the shared budget ran out");
    let closed = world
        .events(
            Method::POST,
            &format!("/v1/elections/{election}/close"),
            &admin,
            None,
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert_eq!(closed.body["status"], "closed");
}

#[tokio::test]
async fn a_token_that_needs_more_slots_holds_no_lock_while_the_elections_side_answers() {
    let world = World::start(true).await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election = world.open_election(&admin).await;
    let voter = world
        .dev_login(&world.person(TENANT, &["member"]).await)
        .await;
    // The slots registered at opening are spent: this token needs a registration first, and
    // the elections side goes silent (each attempt waits for its timeout).
    sqlx::query("UPDATE events.elections SET slots_issued = slots_registered WHERE id = $1")
        .bind(election)
        .execute(&world.db.owner)
        .await
        .unwrap();
    world.elections_link.freeze();
    let request = world.token(&voter, election);
    tokio::pin!(request);
    let (mut looks, mut held) = (0, 0);
    let refused = loop {
        // A sample every 50 ms while the request is outstanding (not a wait for anything).
        tokio::select! {
            answer = &mut request => break answer,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        looks += 1;
        // Is the election's row held by a transaction, longer than any of issuance's own
        // statements takes? (pg_stat_activity hides other logins' transactions from the owner.)
        let mut probe = world.db.owner.begin().await.unwrap();
        sqlx::query("SET LOCAL lock_timeout = '20ms'")
            .execute(&mut *probe)
            .await
            .unwrap();
        let locked = sqlx::query("SELECT 1 FROM events.elections WHERE id = $1 FOR UPDATE")
            .bind(election)
            .execute(&mut *probe)
            .await;
        probe.rollback().await.unwrap();
        match locked {
            Ok(_) => {}
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("55P03") => {
                held += 1
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        (refused.status, refused.slug()),
        (503, "elections-side-unavailable"),
        "{}",
        refused.body
    );
    assert!(
        looks >= 5,
        "the elections side was waited for ({looks} looks)"
    );
    assert_eq!(
        held, 0,
        "the election's row was held in {held} of {looks} looks"
    );
    let issued: i64 = sqlx::query_scalar("SELECT count(*) FROM events.token_issuance")
        .fetch_one(&world.db.owner)
        .await
        .unwrap();
    assert_eq!(issued, 0, "nothing recorded");
}

#[tokio::test]
async fn of_concurrent_changes_of_the_queue_flag_one_goes_through() {
    // As many events-svc instances would, each on its own connection (routes/ops.rs: the
    // change and its audit entry in one transaction).
    let db = testkit::TestDb::create().await;
    let events = db.pool(DbRole::Events).await;
    let platform = TenantId::parse(PLATFORM).unwrap();
    let key = testkit::TestKeys::new(&[]).audit_key();
    let changes = futures::future::join_all((0..8).map(|n| {
        let (events, platform, key) = (events.clone(), platform.clone(), key.clone());
        async move {
            let mut tx = shared::db::begin_for_tenant(&events, &platform)
                .await
                .unwrap();
            let answer = sqlx::query_as::<_, (bool, i64)>(
                "SELECT * FROM ops.change_queue_mode($1, $2, interval '10 seconds')",
            )
            .bind(n % 2 == 0)
            .bind(format!("instance-{n}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            shared::audit::append_queue_mode_changes(&mut tx, &key, &platform, "events-svc")
                .await
                .unwrap();
            tx.commit().await.unwrap();
            answer
        }
    }))
    .await;
    let changed = changes.iter().filter(|(changed, _)| *changed).count();
    assert_eq!(changed, 1, "{changes:?}");
    assert!(changes
        .iter()
        .all(|&(changed, wait)| changed || (1..=10_000).contains(&wait)));
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM ops.queue_mode_audit")
        .fetch_one(&db.owner)
        .await
        .unwrap();
    assert_eq!(audited, 1);
}
