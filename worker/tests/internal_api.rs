//! The elections side's internal API (served by ingest behind the S2S layer): an election's
//! status only moves forward, whoever pushes what in which order.

mod support;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use shared::s2s::CallError;
use shared::telemetry::CorrelationId;
use support::{Stack, StackOptions, TENANT};
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
    let deadline = Instant::now() + Duration::from_secs(5);
    while stack.db.lock_waiters_of(pid).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the push never waited for the open"
        );
        tokio::select! {
            answer = &mut late => panic!("the push did not wait for the open: {answer:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    open.commit().await.unwrap();
    assert_eq!(
        late.await,
        (StatusCode::CONFLICT, "status-regression".to_owned())
    );
    assert_eq!(stored_status(&stack, id).await, "open");
}
