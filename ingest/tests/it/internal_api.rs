//! The elections side's internal API (served by ingest behind the S2S layer): an election's
//! status only moves forward, whoever pushes what in which order, and a signed request is
//! spent once across every instance and restart; every S2S event is appended to the caller's
//! audit chain in the transaction of its effect.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use shared::s2s::CallError;
use shared::telemetry::CorrelationId;
use testkit::elections::{Stack, StackOptions, TENANT};
use testkit::eventually_every;
use testkit::services::Ingest;
use uuid::Uuid;

fn election(status: &str) -> Value {
    json!({
        "kind": "single",
        "options": [{"id": "o0", "label": "Yes"}, {"id": "o1", "label": "No"}],
        "max_choices": 1,
        "status": status,
        "opens_at": null,
        "closes_at": null,
    })
}

/// Pushes `status` for election `id`, freshly signed, with a fresh idempotency key (as another
/// instance, or this one after the answer expired, would see it); returns the status and slug.
async fn push(stack: &Stack, id: Uuid, status: &str) -> (StatusCode, String) {
    let outcome = stack
        .s2s
        .call(
            &stack.tenant(TENANT),
            Method::PUT,
            &format!("/internal/v1/elections/{id}"),
            Some(&election(status)),
            Some(&Uuid::new_v4().to_string()),
            &CorrelationId::new(),
        )
        .await;
    match outcome {
        Ok(reply) => (reply.status, String::new()),
        Err(e @ CallError::Status { status, .. }) => {
            let slug = e.problem().map(|p| p.slug().to_owned()).unwrap_or_default();
            (status, slug)
        }
        Err(e) => panic!("push {status}: {e}"),
    }
}

async fn stored_status(stack: &Stack, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM elections.elections WHERE id = $1")
        .bind(id)
        .fetch_one(&stack.db.owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_election_status_only_moves_forward() {
    let stack = Stack::start(StackOptions::default()).await;
    let id = Uuid::new_v4();
    assert_eq!(push(&stack, id, "draft").await.0, StatusCode::OK);
    assert_eq!(push(&stack, id, "open").await.0, StatusCode::OK);
    // The create push again (replayed, or a late retry that finally arrives): refused.
    assert_eq!(
        push(&stack, id, "draft").await,
        (StatusCode::CONFLICT, "status-regression".to_owned())
    );
    assert_eq!(stored_status(&stack, id).await, "open");
    // Repeating the current status is a no-op.
    assert_eq!(push(&stack, id, "open").await.0, StatusCode::OK);
    assert_eq!(push(&stack, id, "closed").await.0, StatusCode::OK);
    for earlier in ["open", "draft"] {
        assert_eq!(
            push(&stack, id, earlier).await,
            (StatusCode::CONFLICT, "status-regression".to_owned()),
            "closed -> {earlier}"
        );
    }
    assert_eq!(push(&stack, id, "closed").await.0, StatusCode::OK);
    assert_eq!(stored_status(&stack, id).await, "closed");

    // A draft may skip straight to closed (events-svc allows closing a draft).
    let skipped = Uuid::new_v4();
    assert_eq!(push(&stack, skipped, "draft").await.0, StatusCode::OK);
    assert_eq!(push(&stack, skipped, "closed").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_late_create_racing_the_first_open_cannot_set_it_back_to_draft() {
    let stack = Stack::start(StackOptions::default()).await;
    let id = Uuid::new_v4();
    // The open's insert is not committed yet when the create push arrives: the push finds no
    // row to check, and its own insert waits for the open's.
    let mut open = stack.db.owner.begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *open)
        .await
        .unwrap();
    let definition = election("open");
    sqlx::query(
        "INSERT INTO elections.elections (org_id, id, kind, options, max_choices, status) \
         VALUES ($1, $2, 'single', $3, 1, 'open')",
    )
    .bind(TENANT)
    .bind(id)
    .bind(&definition["options"])
    .execute(&mut *open)
    .await
    .unwrap();
    let late = push(&stack, id, "draft");
    tokio::pin!(late);
    let waiting = eventually_every(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { stack.db.lock_waiters_of(pid).await > 0 },
    );
    tokio::select! {
        answer = &mut late => panic!("the push did not wait for the open: {answer:?}"),
        waited = waiting => waited.expect("the push waits for the open"),
    }
    open.commit().await.unwrap();
    assert_eq!(
        late.await,
        (StatusCode::CONFLICT, "status-regression".to_owned())
    );
    assert_eq!(stored_status(&stack, id).await, "open");
}

/// One signed `PUT` of an election, sent as is (same headers, same body) wherever it is sent.
struct Captured {
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Captured {
    fn new(stack: &Stack, id: Uuid) -> Self {
        let path = format!("/internal/v1/elections/{id}");
        let body = serde_json::to_vec(&election("draft")).unwrap();
        let key = stack
            .keys
            .s2s
            .current_for(&stack.tenant(TENANT))
            .expect("a key for the tenant");
        let headers = shared::s2s::sign(
            key,
            &Method::PUT,
            &path,
            &body,
            chrono::Utc::now().timestamp(),
        );
        Self {
            path,
            headers,
            body,
        }
    }

    async fn send(&self, stack: &Stack, base: &str) -> (u16, Value) {
        let mut request = stack
            .http
            .put(format!("{base}{}", self.path))
            .header("content-type", "application/json")
            .body(self.body.clone());
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        let answer = request.send().await.expect("ingest answers");
        (
            answer.status().as_u16(),
            answer.json().await.unwrap_or(Value::Null),
        )
    }
}

/// A request an instance accepted, sent again within the window: signature, key and timestamp
/// still hold, so a 401 (one generic answer for every refusal) can only be its spent nonce.
fn refused_as_a_replay(status: u16, body: &Value) -> bool {
    status == 401
        && body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/s2s-unauthorized"))
}

#[tokio::test]
async fn a_request_replayed_to_another_instance_is_refused() {
    let stack = Stack::start(StackOptions::default()).await;
    let second: Ingest = stack.another_ingest().await;
    let captured = Captured::new(&stack, Uuid::new_v4());
    let (status, body) = captured.send(&stack, &stack.internal_url).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = captured.send(&stack, &second.internal_url).await;
    assert!(refused_as_a_replay(status, &body), "{status} {body}");
    // A fresh request passes there.
    let (status, body) = Captured::new(&stack, Uuid::new_v4())
        .send(&stack, &second.internal_url)
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_request_replayed_after_a_restart_is_refused() {
    let stack = Stack::start(StackOptions::default()).await;
    let captured = Captured::new(&stack, Uuid::new_v4());
    let (status, body) = captured.send(&stack, &stack.internal_url).await;
    assert_eq!(status, 200, "{body}");
    // A freshly built instance on the same database: nothing in its memory.
    let restarted = stack.another_ingest().await;
    let (status, body) = captured.send(&stack, &restarted.internal_url).await;
    assert!(refused_as_a_replay(status, &body), "{status} {body}");
}

#[tokio::test]
async fn the_internal_api_documents_its_refusals() {
    let stack = Stack::start(StackOptions::default()).await;
    let api: Value = stack
        .http
        .get(format!("{}/openapi.json", stack.internal_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put = &api["paths"]["/internal/v1/elections/{id}"]["put"]["responses"];
    let described = |status: &str| {
        put[status]["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(described("409").contains("status-regression"), "{put}");
    assert!(described("401").contains("nonce"), "{put}");
    assert!(described("503").contains("s2s-unavailable"), "{put}");
}

/// A signed request whose election id is not a UUID gets a problem+json 400 (`invalid-path`)
/// on every internal route, as the document says, not axum's plain-text rejection (found by
/// schemathesis, `infra/local/schemathesis.sh`).
#[tokio::test]
async fn a_malformed_election_id_is_a_problem_on_every_internal_route() {
    let stack = Stack::start(StackOptions::default()).await;
    let tokens = json!({"token_hashes": ["ab".repeat(32)]});
    let draft = election("draft");
    for (method, path, body) in [
        (
            Method::PUT,
            "/internal/v1/elections/null,null",
            Some(&draft),
        ),
        (
            Method::POST,
            "/internal/v1/elections/42/tokens",
            Some(&tokens),
        ),
        (
            Method::GET,
            "/internal/v1/elections/not-a-uuid/results",
            None,
        ),
    ] {
        let outcome = stack
            .s2s
            .call(
                &stack.tenant(TENANT),
                method.clone(),
                path,
                body,
                None,
                &CorrelationId::new(),
            )
            .await;
        match outcome {
            Err(e @ CallError::Status { status, .. }) => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
                assert_eq!(
                    e.problem().map(|p| p.slug().to_owned()).as_deref(),
                    Some("invalid-path"),
                    "{method} {path}: {e:?}"
                );
            }
            other => panic!("{method} {path}: {other:?}"),
        }
    }
}

/// The entries of `chain`, oldest first: (event, election, actor, summary).
async fn audit_entries(stack: &Stack, chain: &str) -> Vec<(String, Option<Uuid>, String, Value)> {
    let rows: Vec<(String, Option<Uuid>, String, String)> = sqlx::query_as(
        "SELECT event, election_id, actor, summary::text FROM ops.audit_log \
         WHERE chain = $1 ORDER BY seq",
    )
    .bind(chain)
    .fetch_all(&stack.db.owner)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(e, id, actor, s)| (e, id, actor, serde_json::from_str(&s).unwrap()))
        .collect()
}

#[tokio::test]
async fn every_s2s_event_is_audited_in_the_transaction_of_its_effect() {
    let stack = Stack::start(StackOptions::default()).await;
    let id = Uuid::new_v4();
    assert_eq!(push(&stack, id, "draft").await.0, StatusCode::OK);
    assert_eq!(push(&stack, id, "open").await.0, StatusCode::OK);
    let hashes: Vec<String> = (1..=4u128).map(|n| format!("{n:064x}")).collect();
    for batch in [&hashes[..3], &hashes[..]] {
        stack
            .s2s
            .call(
                &stack.tenant(TENANT),
                Method::POST,
                &format!("/internal/v1/elections/{id}/tokens"),
                Some(&json!({ "token_hashes": batch })),
                Some(&Uuid::new_v4().to_string()),
                &CorrelationId::new(),
            )
            .await
            .expect("tokens registered");
    }
    stack.results(TENANT, id).await;
    // Refused: nothing happened, nothing is audited.
    assert_eq!(push(&stack, id, "draft").await.1, "status-regression");

    let actor = format!("{TENANT}-s2s");
    let expected = [
        (
            "election_pushed",
            json!({"status": "draft", "previous": null}),
        ),
        (
            "election_pushed",
            json!({"status": "open", "previous": "draft"}),
        ),
        ("tokens_registered", json!({"received": 3, "registered": 3})),
        ("tokens_registered", json!({"received": 4, "registered": 1})),
        (
            "results_read",
            json!({"sealed": false, "total": 0, "used_tokens": 0}),
        ),
    ]
    .map(|(event, summary)| (event.to_owned(), Some(id), actor.clone(), summary));
    assert_eq!(audit_entries(&stack, TENANT).await, expected);
    let mut conn = stack.db.owner.acquire().await.unwrap();
    let verdict = shared::audit::verify(&mut conn, &stack.keys.audit_key(), TENANT)
        .await
        .unwrap();
    assert!(verdict.intact(), "{:?}", verdict.finding);

    // The effect commits only with its entry: when ingest cannot append, the close is not
    // stored (and the caller is told to retry).
    sqlx::query("REVOKE INSERT ON ops.audit_log FROM ekklesia_ingest")
        .execute(&stack.db.owner)
        .await
        .unwrap();
    let impatient = shared::s2s::Client::new(
        &stack.internal_url,
        stack.keys.s2s.clone(),
        shared::s2s::RetrySettings {
            max_elapsed: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let refused = impatient
        .call(
            &stack.tenant(TENANT),
            Method::PUT,
            &format!("/internal/v1/elections/{id}"),
            Some(&election("closed")),
            Some(&Uuid::new_v4().to_string()),
            &CorrelationId::new(),
        )
        .await;
    assert!(
        matches!(refused, Err(CallError::Status { status, .. }) if status.is_server_error()),
        "{refused:?}"
    );
    assert_eq!(stored_status(&stack, id).await, "open");
    assert_eq!(audit_entries(&stack, TENANT).await.len(), 5);
}
