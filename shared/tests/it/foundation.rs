//! The foundation against the real PostgreSQL and the real Pub/Sub emulator: row-level
//! security, service-role privileges, the official Pub/Sub client's ack/nack/dead-letter
//! behaviour, and the S2S layer over real HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use shared::domain::TenantId;
use shared::s2s::{self, CallError, Client, Keyring, RetrySettings, S2sCaller, S2sKey, Verifier};
use shared::telemetry::CorrelationId;
use sqlx::{Executor, PgPool};
use testkit::{Role, TestDb, TestPubSub};
use uuid::Uuid;

// ------------------------------------------------------------------------------------------
// Row-level security and roles
// ------------------------------------------------------------------------------------------

/// Inserts one row for `org` into every tenant-owned table (as the owner, who bypasses RLS).
async fn seed(db: &TestDb, org: &str) -> Uuid {
    let election = Uuid::new_v4();
    let member = Uuid::new_v4();
    let owner = &db.owner;
    sqlx::query("INSERT INTO members.members (org_id, id, national_id) VALUES ($1, $2, $3)")
        .bind(org)
        .bind(member)
        .bind(format!("{}", rand::random::<u32>()))
        .execute(owner)
        .await
        .unwrap();
    sqlx::query("INSERT INTO events.elections (org_id, id, title, question, kind, options, max_choices) VALUES ($1, $2, 't', 'q', 'single', '[]', 1)")
        .bind(org).bind(election).execute(owner).await.unwrap();
    sqlx::query(
        "INSERT INTO events.token_issuance (org_id, election_id, member_id) VALUES ($1, $2, $3)",
    )
    .bind(org)
    .bind(election)
    .bind(member)
    .execute(owner)
    .await
    .unwrap();
    sqlx::query("INSERT INTO elections.elections (org_id, id, kind, options, max_choices, status) VALUES ($1, $2, 'single', '[]', 1, 'open')")
        .bind(org).bind(election).execute(owner).await.unwrap();
    sqlx::query(
        "INSERT INTO elections.voting_tokens (org_id, election_id, token_hash) VALUES ($1, $2, $3)",
    )
    .bind(org)
    .bind(election)
    .bind(vec![rand::random::<u8>(); 32])
    .execute(owner)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO elections.ballots (org_id, election_id, choices) VALUES ($1, $2, ARRAY['a'])",
    )
    .bind(org)
    .bind(election)
    .execute(owner)
    .await
    .unwrap();
    sqlx::query("INSERT INTO elections.receipts (receipt, org_id, election_id, status) VALUES ($1, $2, $3, 'recorded')")
        .bind(format!("r-{election}")).bind(org).bind(election).execute(owner).await.unwrap();
    election
}

/// Each tenant-owned table, the role that may use it, and an insert for a given org.
const TABLES: &[(&str, Role)] = &[
    ("members.members", Role::Members),
    ("events.elections", Role::Events),
    ("events.token_issuance", Role::Events),
    ("elections.elections", Role::Ingest),
    ("elections.voting_tokens", Role::Ingest),
    ("elections.ballots", Role::Ingest),
    ("elections.receipts", Role::Ingest),
];

async fn count_as(pool: &PgPool, tenant: &str, table: &str) -> i64 {
    let mut tx = pool.begin().await.unwrap();
    tx.execute(sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(tenant))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    n
}

#[tokio::test]
async fn row_level_security_isolates_tenants_in_every_table() {
    let db = TestDb::create().await;
    seed(&db, "party-a").await;
    seed(&db, "party-b").await;
    for (table, role) in TABLES {
        let pool = db.pool(*role).await;
        assert_eq!(
            count_as(&pool, "party-a", table).await,
            1,
            "{table}: tenant A sees its own row"
        );
        assert_eq!(
            count_as(&pool, "party-b", table).await,
            1,
            "{table}: tenant B sees its own row"
        );
        // No tenant set: nothing at all.
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}: without app.org_id nothing is visible");

        // Tenant B can neither change nor delete A's rows...
        let mut tx = pool.begin().await.unwrap();
        tx.execute(sqlx::query(
            "SELECT set_config('app.org_id', 'party-b', true)",
        ))
        .await
        .unwrap();
        let updated = sqlx::query(&format!(
            "UPDATE {table} SET org_id = org_id WHERE org_id = 'party-a'"
        ))
        .execute(&mut *tx)
        .await;
        if let Ok(done) = updated {
            assert_eq!(done.rows_affected(), 0, "{table}: B updated A's rows");
        } // (roles without UPDATE are refused outright, which is fine too)
        tx.rollback().await.unwrap();
    }

    // Writing another tenant's org_id is refused by WITH CHECK.
    let ingest = db.pool(Role::Ingest).await;
    let mut tx = ingest.begin().await.unwrap();
    tx.execute(sqlx::query(
        "SELECT set_config('app.org_id', 'party-b', true)",
    ))
    .await
    .unwrap();
    let err = sqlx::query("INSERT INTO elections.elections (org_id, id, kind, options, max_choices, status) VALUES ('party-a', $1, 'single', '[]', 1, 'open')")
        .bind(Uuid::new_v4())
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().unwrap(),
        "42501",
        "{err}"
    );
    tx.rollback().await.unwrap();

    let members = db.pool(Role::Members).await;
    let mut tx = members.begin().await.unwrap();
    tx.execute(sqlx::query(
        "SELECT set_config('app.org_id', 'party-b', true)",
    ))
    .await
    .unwrap();
    let err = sqlx::query(
        "INSERT INTO members.members (org_id, national_id) VALUES ('party-a', '0101302989')",
    )
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert_eq!(err.as_database_error().unwrap().code().unwrap(), "42501");
    tx.rollback().await.unwrap();

    let events = db.pool(Role::Events).await;
    let mut tx = events.begin().await.unwrap();
    tx.execute(sqlx::query(
        "SELECT set_config('app.org_id', 'party-b', true)",
    ))
    .await
    .unwrap();
    let err = sqlx::query("INSERT INTO events.elections (org_id, id, title, question, kind, options, max_choices) VALUES ('party-a', $1, 't', 'q', 'single', '[]', 1)")
        .bind(Uuid::new_v4()).execute(&mut *tx).await.unwrap_err();
    assert_eq!(err.as_database_error().unwrap().code().unwrap(), "42501");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn service_roles_cannot_read_what_they_must_not() {
    let db = TestDb::create().await;
    let forbidden: &[(Role, &[&str])] = &[
        (
            Role::Ingest,
            &[
                "members.members",
                "members.login_attempts",
                "events.elections",
                "events.token_issuance",
            ],
        ),
        (
            Role::Worker,
            &[
                "members.members",
                "members.login_attempts",
                "events.elections",
                "events.token_issuance",
                "ops.s2s_nonces",
            ],
        ),
        (
            Role::Events,
            &[
                "elections.ballots",
                "elections.voting_tokens",
                "elections.receipts",
                "members.members",
                "members.login_attempts",
                "ops.s2s_nonces",
            ],
        ),
        (
            Role::Members,
            &[
                "events.elections",
                "elections.ballots",
                "elections.voting_tokens",
                "ops.s2s_nonces",
            ],
        ),
    ];
    for (role, tables) in forbidden {
        let pool = db.pool(*role).await;
        for table in *tables {
            let err = sqlx::query(&format!("SELECT 1 FROM {table} LIMIT 1"))
                .execute(&pool)
                .await
                .expect_err(&format!("{role:?} must not read {table}"));
            assert_eq!(
                err.as_database_error().unwrap().code().unwrap(),
                "42501",
                "{role:?} {table}: {err}"
            );
        }
    }
    // Whether a member is active is asked by events-svc only (token issuance).
    for role in [Role::Ingest, Role::Worker] {
        let pool = db.pool(role).await;
        let err = sqlx::query("SELECT members.is_active_member(gen_random_uuid())")
            .execute(&pool)
            .await
            .expect_err(&format!("{role:?} must not ask the registry"));
        assert_eq!(err.as_database_error().unwrap().code().unwrap(), "42501");
    }
    // The queue flag is changed only through the audited function, never written directly.
    let ingest = db.pool(Role::Ingest).await;
    let err = sqlx::query("INSERT INTO ops.queue_mode (enabled, changed_by) VALUES (false, 'x')")
        .execute(&ingest)
        .await
        .unwrap_err();
    assert_eq!(err.as_database_error().unwrap().code().unwrap(), "42501");
    let events = db.pool(Role::Events).await;
    // ... with its entry in the platform organisation's audit chain (migration 14), as
    // events-svc does.
    let platform = TenantId::parse(shared::domain::DEFAULT_PLATFORM_ORG).unwrap();
    let mut tx = shared::db::begin_for_tenant(&events, &platform)
        .await
        .unwrap();
    sqlx::query("SELECT * FROM ops.set_queue_mode(false, 'ops@example')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let key =
        shared::audit::AuditKey::from_base64(&shared::audit::AuditKey::generate_base64()).unwrap();
    shared::audit::append_queue_mode_changes(&mut tx, &key, &platform, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let audit: Vec<(String, Option<bool>, bool)> =
        sqlx::query_as("SELECT changed_by, old_enabled, new_enabled FROM ops.queue_mode_audit")
            .fetch_all(&events)
            .await
            .unwrap();
    assert_eq!(audit, vec![("ops@example".to_owned(), None, false)]);
}

#[tokio::test]
async fn spent_s2s_nonces_are_pruned_only_once_no_replay_can_reach_them() {
    let db = TestDb::create().await;
    // Ages in seconds by the database's clock; the window is 300 s, so a row is needed until
    // 601 s after it was seen, and while its signed timestamp is less than 300 s old.
    for (nonce, seen_ago, signed_ago) in [
        ("out-of-reach-0000", 602, 602),
        ("seen-recently-000", 600, 900),
        ("signed-recently-0", 900, 299),
        ("just-now-00000000", 0, 0),
    ] {
        sqlx::query(
            "INSERT INTO ops.s2s_nonces (key_id, nonce, signed_at, seen_at) \
             VALUES ('k1', $1, now() - make_interval(secs => $3), now() - make_interval(secs => $2))",
        )
        .bind(nonce)
        .bind(f64::from(seen_ago))
        .bind(f64::from(signed_ago))
        .execute(&db.owner)
        .await
        .unwrap();
    }
    // Pruned as ingest, the only role that may.
    let store = s2s::NonceStore::new(db.pool(Role::Ingest).await, s2s::DEFAULT_WINDOW);
    assert_eq!(store.prune().await.unwrap(), 1);
    let mut left: Vec<String> = sqlx::query_scalar("SELECT nonce FROM ops.s2s_nonces")
        .fetch_all(&db.owner)
        .await
        .unwrap();
    left.sort();
    assert_eq!(
        left,
        [
            "just-now-00000000",
            "seen-recently-000",
            "signed-recently-0"
        ]
    );
}

#[tokio::test]
async fn ballots_have_no_column_that_links_them_to_anyone() {
    // A deliberate tripwire: the exact column lists, so any new column on either table is a
    // decision about ballot secrecy that this test makes someone take.
    let db = TestDb::create().await;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'elections' AND table_name = 'ballots' ORDER BY 1",
    )
    .fetch_all(&db.owner)
    .await
    .unwrap();
    assert_eq!(columns, ["choices", "election_id", "org_id"]);
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'events' AND table_name = 'token_issuance' ORDER BY 1",
    )
    .fetch_all(&db.owner)
    .await
    .unwrap();
    assert_eq!(
        columns,
        ["election_id", "member_id", "org_id"],
        "events never stores a token or its hash"
    );
}

// ------------------------------------------------------------------------------------------
// Pub/Sub with the official client against the emulator
// ------------------------------------------------------------------------------------------

async fn next_within(
    stream: &mut google_cloud_pubsub::subscriber::MessageStream,
    wait: Duration,
) -> Option<(
    google_cloud_pubsub::model::Message,
    google_cloud_pubsub::subscriber::handler::Handler,
)> {
    match tokio::time::timeout(wait, stream.next()).await {
        Ok(Some(Ok(pair))) => Some(pair),
        Ok(Some(Err(e))) => panic!("stream error: {e}"),
        Ok(None) | Err(_) => None,
    }
}

#[tokio::test]
async fn pubsub_ack_nack_and_dead_letter() {
    let ps = TestPubSub::create().await;
    let publisher = shared::pubsub::publisher(
        &ps.settings,
        Duration::from_secs(5),
        Duration::from_millis(1),
    )
    .await
    .unwrap();
    let subscriber = shared::pubsub::subscriber(&ps.settings).await.unwrap();
    let mut stream = subscriber
        .subscribe(ps.settings.subscription_path())
        .build();

    // Acked: received once, never again.
    let msg = google_cloud_pubsub::model::Message::new()
        .set_data("acked")
        .set_attributes([("correlation_id", "c-1")]);
    publisher.publish(msg).await.expect("publish acknowledged");
    let (m, h) = next_within(&mut stream, Duration::from_secs(20))
        .await
        .expect("delivered");
    assert_eq!(&m.data[..], b"acked");
    assert_eq!(m.attributes["correlation_id"], "c-1");
    h.ack();

    // Nacked: redelivered.
    publisher
        .publish(google_cloud_pubsub::model::Message::new().set_data("nacked"))
        .await
        .unwrap();
    let (m, h) = next_within(&mut stream, Duration::from_secs(20))
        .await
        .expect("delivered");
    assert_eq!(&m.data[..], b"nacked");
    h.nack();
    let (m, h) = next_within(&mut stream, Duration::from_secs(30))
        .await
        .expect("redelivered after nack");
    assert_eq!(&m.data[..], b"nacked");
    assert!(h.delivery_attempt().unwrap_or(2) >= 2);
    // Keep nacking: past max delivery attempts it goes to the dead-letter topic.
    h.nack();
    let mut attempts = 2;
    while let Some((m, h)) = next_within(&mut stream, Duration::from_secs(20)).await {
        assert_eq!(&m.data[..], b"nacked", "the acked message came back");
        attempts += 1;
        h.nack();
        assert!(attempts <= 10, "never dead-lettered");
    }
    assert!(
        attempts >= ps.topology.max_delivery_attempts as usize,
        "dead-lettered too early ({attempts})"
    );

    let mut dead = subscriber
        .subscribe(ps.dead_letter_subscription_path())
        .build();
    let (m, h) = next_within(&mut dead, Duration::from_secs(30))
        .await
        .expect("on the dead-letter topic");
    assert_eq!(&m.data[..], b"nacked");
    assert!(
        m.attributes
            .keys()
            .any(|k| k.starts_with("CloudPubSubDeadLetterSource")),
        "{:?}",
        m.attributes
    );
    h.ack();
}

// ------------------------------------------------------------------------------------------
// S2S over real HTTP
// ------------------------------------------------------------------------------------------

fn key(id: &str, tenant: &str, byte: u8) -> S2sKey {
    S2sKey::new(id, TenantId::parse(tenant).unwrap(), vec![byte; 32]).unwrap()
}

struct Peer {
    base: String,
    effects: Arc<AtomicUsize>,
    /// Requests that reached `GET /bad` (a client error must not be retried).
    bad: Arc<AtomicUsize>,
}

/// A server with the verify layer: `POST /effect` counts an effect; `GET /flaky` fails with
/// 503 twice, then succeeds; `GET /busy` always answers 503 (Retry-After: 1); `GET /bad`
/// answers 400 and counts.
async fn peer(keys: Vec<S2sKey>) -> Peer {
    let effects = Arc::new(AtomicUsize::new(0));
    let flaky = Arc::new(AtomicUsize::new(0));
    let verifier = Arc::new(Verifier::new(Keyring::new(keys)));
    let e = effects.clone();
    let bad = Arc::new(AtomicUsize::new(0));
    let b = bad.clone();
    let app = Router::new()
        .route(
            "/effect",
            post(move |caller: S2sCaller, Json(body): Json<serde_json::Value>| {
                let e = e.clone();
                async move {
                    let n = e.fetch_add(1, Ordering::SeqCst) + 1;
                    Json(serde_json::json!({"tenant": caller.tenant.as_str(), "n": n, "echo": body}))
                }
            }),
        )
        .route(
            "/flaky",
            get(move || {
                let f = flaky.clone();
                async move {
                    if f.fetch_add(1, Ordering::SeqCst) < 2 {
                        shared::Problem::unavailable("flaky", "try again", 1).into_response_for_test()
                    } else {
                        (StatusCode::OK, "fine").into_response_for_test()
                    }
                }
            }),
        )
        .route(
            "/bad",
            get(move || {
                b.fetch_add(1, Ordering::SeqCst);
                async { shared::Problem::bad_request("bad", "no").into_response_for_test() }
            }),
        )
        .route("/busy", get(|| async { shared::Problem::unavailable("busy", "later", 1).into_response_for_test() }))
        .layer(middleware::from_fn_with_state(verifier, s2s::verify_layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Peer { base, effects, bad }
}

trait IntoResponseForTest {
    fn into_response_for_test(self) -> axum::response::Response;
}
impl<T: axum::response::IntoResponse> IntoResponseForTest for T {
    fn into_response_for_test(self) -> axum::response::Response {
        self.into_response()
    }
}

fn fast_retry() -> RetrySettings {
    RetrySettings {
        initial: Duration::from_millis(10),
        max_interval: Duration::from_millis(50),
        max_elapsed: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn s2s_idempotent_retry_returns_the_first_answer_without_a_second_effect() {
    let k = key("a-1", "party-a", 1);
    let peer = peer(vec![k.clone()]).await;
    let client = Client::new(&peer.base, Keyring::new(vec![k]), fast_retry());
    let tenant = TenantId::parse("party-a").unwrap();
    let body = serde_json::json!({"x": 1});
    let corr = CorrelationId::new();
    let first = client
        .call(
            &tenant,
            Method::POST,
            "/effect",
            Some(&body),
            Some("idem-1"),
            &corr,
        )
        .await
        .unwrap();
    let second = client
        .call(
            &tenant,
            Method::POST,
            "/effect",
            Some(&body),
            Some("idem-1"),
            &corr,
        )
        .await
        .unwrap();
    assert_eq!(first.body, second.body);
    assert_eq!(
        peer.effects.load(Ordering::SeqCst),
        1,
        "the retry had a second effect"
    );
    // Same key, different body: refused.
    let other = serde_json::json!({"x": 2});
    let err = client
        .call(
            &tenant,
            Method::POST,
            "/effect",
            Some(&other),
            Some("idem-1"),
            &corr,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Status { status, .. } if status == StatusCode::UNPROCESSABLE_ENTITY)
    );
    // A new key is a new request.
    client
        .call(
            &tenant,
            Method::POST,
            "/effect",
            Some(&body),
            Some("idem-2"),
            &corr,
        )
        .await
        .unwrap();
    assert_eq!(peer.effects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn s2s_over_http_refuses_forgeries_and_accepts_rotated_keys() {
    let old = key("a-old", "party-a", 1);
    let new = key("a-new", "party-a", 2);
    let peer = peer(vec![new.clone(), old.clone()]).await;
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let body = br#"{"x":1}"#.to_vec();

    let send = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut req = http
            .post(format!("{}/effect", peer.base))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    // Valid with either rotation key.
    for k in [&old, &new] {
        let r = send(
            s2s::sign(k, &Method::POST, "/effect", &body, now),
            body.clone(),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Tampered body.
    let r = send(
        s2s::sign(&old, &Method::POST, "/effect", &body, now),
        br#"{"x":2}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    // Replayed nonce.
    let headers = s2s::sign(&old, &Method::POST, "/effect", &body, now);
    assert_eq!(
        send(headers.clone(), body.clone()).await.unwrap().status(),
        200
    );
    // The same, validly signed, in-window request once more: only its spent nonce can refuse
    // it (the answer is the same generic 401 for every refusal; the reason is only logged).
    let r = send(headers, body.clone()).await.unwrap();
    assert_eq!(r.status(), 401);
    let problem: shared::Problem = r.json().await.unwrap();
    assert_eq!(problem.slug(), "s2s-unauthorized", "{problem:?}");
    // Skewed timestamp.
    let r = send(
        s2s::sign(&old, &Method::POST, "/effect", &body, now - 3600),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    // Wrong key (right id, wrong secret) and unknown key.
    let r = send(
        s2s::sign(
            &key("a-old", "party-a", 9),
            &Method::POST,
            "/effect",
            &body,
            now,
        ),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let r = send(
        s2s::sign(
            &key("zz", "party-a", 1),
            &Method::POST,
            "/effect",
            &body,
            now,
        ),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    // Unsigned.
    let r = http
        .post(format!("{}/effect", peer.base))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(peer.effects.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn s2s_client_gives_up_at_its_budget_even_when_the_peer_asks_to_retry_after() {
    let k = key("a-1", "party-a", 1);
    let peer = peer(vec![k.clone()]).await;
    let budget = Duration::from_millis(1500);
    let client = Client::new(
        &peer.base,
        Keyring::new(vec![k]),
        RetrySettings {
            max_elapsed: budget,
            ..fast_retry()
        },
    );
    let tenant = TenantId::parse("party-a").unwrap();
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        client.call(
            &tenant,
            Method::GET,
            "/busy",
            None,
            None,
            &CorrelationId::new(),
        ),
    )
    .await
    .expect("the call ended");
    assert!(
        matches!(outcome, Err(CallError::Status { status, .. }) if status == StatusCode::SERVICE_UNAVAILABLE),
        "{outcome:?}"
    );
    // One retry after the 1 s Retry-After fits the budget; a second would not.
    assert!(started.elapsed() < budget, "{:?}", started.elapsed());
}

#[tokio::test]
async fn s2s_client_retries_5xx_not_4xx_and_opens_its_breaker() {
    let k = key("a-1", "party-a", 1);
    let peer = peer(vec![k.clone()]).await;
    let tenant = TenantId::parse("party-a").unwrap();
    let corr = CorrelationId::new();
    let client = Client::new(&peer.base, Keyring::new(vec![k.clone()]), fast_retry());
    let reply = client
        .call(&tenant, Method::GET, "/flaky", None, None, &corr)
        .await
        .unwrap();
    assert_eq!(&reply.body[..], b"fine", "two 503s were retried");
    let err = client
        .call(&tenant, Method::GET, "/bad", None, None, &corr)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Status { status, .. } if status == StatusCode::BAD_REQUEST));
    assert_eq!(peer.bad.load(Ordering::SeqCst), 1, "a 400 is not retried");

    // A peer that is down: transport errors, retried, then the breaker opens. Its port was
    // just free (bound, then released), so nothing answers there.
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dead = Client::new(
        format!("http://{down}"),
        Keyring::new(vec![k]),
        RetrySettings {
            max_elapsed: Duration::from_millis(200),
            ..fast_retry()
        },
    )
    .with_breaker(s2s::CircuitBreaker::new(2, Duration::from_secs(60)));
    for _ in 0..2 {
        assert!(matches!(
            dead.call(&tenant, Method::GET, "/x", None, None, &corr)
                .await
                .unwrap_err(),
            CallError::Transport(_)
        ));
    }
    assert!(matches!(
        dead.call(&tenant, Method::GET, "/x", None, None, &corr)
            .await
            .unwrap_err(),
        CallError::CircuitOpen
    ));
}
