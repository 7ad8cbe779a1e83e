//! The audit log on the real database: concurrent writers of one chain do not fork it, the
//! service roles can only append to their own tenant's chain (never read, change or delete an
//! entry), and the `audit` CLI passes an intact chain and names a tampered entry (exit 1).
//! The realistic run (elections pushed, tokens registered, results read, the flag changed
//! through events-svc) and each way of tampering with it are in events-svc's `audit_usage`
//! tests; the S2S handlers' entries in worker's `internal_api` tests.

use std::process::Command;

use serde_json::json;
use shared::audit::{AuditKey, Event, NewEntry};
use shared::domain::TenantId;
use sqlx::PgPool;
use testkit::{Role, TestDb, TestKeys};
use uuid::Uuid;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

/// Appends one `tokens_registered` entry to `chain`, as ingest does (in its own transaction).
async fn append(pool: &PgPool, key: &AuditKey, chain: &str, received: usize) -> i64 {
    let chain = tenant(chain);
    let mut tx = shared::db::begin_for_tenant(pool, &chain).await.unwrap();
    let entry = shared::audit::append(
        &mut tx,
        key,
        &chain,
        NewEntry {
            event: Event::TokensRegistered,
            election_id: Some(Uuid::new_v4()),
            actor: "party-a-s2s",
            summary: json!({"received": received, "registered": received}),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    entry.seq
}

#[tokio::test]
async fn concurrent_writers_of_one_chain_take_turns_and_never_fork_it() {
    let db = TestDb::create().await;
    let key = TestKeys::new(&[]).audit_key();
    // As many connections as writers, so they really run at once.
    let ingest = sqlx::postgres::PgPoolOptions::new()
        .max_connections(12)
        .connect(&db.url(Role::Ingest))
        .await
        .unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..24 {
        let (pool, key) = (ingest.clone(), key.clone());
        let chain = if n % 3 == 0 { "party-b" } else { "party-a" };
        writers.spawn(async move { append(&pool, &key, chain, n).await });
    }
    let mut appended = 0;
    while let Some(written) = writers.join_next().await {
        written.expect("every append succeeds");
        appended += 1;
    }
    assert_eq!(appended, 24);
    let mut conn = db.owner.acquire().await.unwrap();
    for (chain, n) in [("party-a", 16), ("party-b", 8)] {
        let verdict = shared::audit::verify(&mut conn, &key, chain).await.unwrap();
        assert!(verdict.intact(), "{chain}: {:?}", verdict.finding);
        assert_eq!(verdict.entries, n, "{chain}");
        assert_eq!(verdict.last.unwrap().seq, n as i64, "{chain}");
    }
}

#[tokio::test]
async fn service_roles_append_to_their_own_chain_and_nothing_else() {
    let db = TestDb::create().await;
    let key = TestKeys::new(&[]).audit_key();
    let ingest = db.pool(Role::Ingest).await;
    assert_eq!(append(&ingest, &key, "party-a", 1).await, 1);
    let denied = |e: sqlx::Error| e.as_database_error().unwrap().code().unwrap().into_owned();
    for role in [Role::Ingest, Role::Events, Role::Worker, Role::Members] {
        let pool = db.pool(role).await;
        for statement in [
            "SELECT 1 FROM ops.audit_log",
            "UPDATE ops.audit_log SET actor = 'x'",
            "DELETE FROM ops.audit_log",
            "SELECT 1 FROM ops.usage_minutes",
            "UPDATE ops.usage_minutes SET requests = 0",
            "DELETE FROM ops.usage_vote_seconds",
        ] {
            let err = sqlx::query(statement).execute(&pool).await.unwrap_err();
            assert_eq!(denied(err), "42501", "{role:?}: {statement}");
        }
    }
    // Only the chain of the transaction's tenant, and only the writers.
    let mut tx = shared::db::begin_for_tenant(&ingest, &tenant("party-a"))
        .await
        .unwrap();
    let err = sqlx::query("SELECT * FROM ops.audit_tail('party-b')")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(denied(err), "42501");
    tx.rollback().await.unwrap();
    let mut tx = shared::db::begin_for_tenant(&ingest, &tenant("party-a"))
        .await
        .unwrap();
    let err = sqlx::query(
        "INSERT INTO ops.audit_log (chain, seq, at, event, actor, summary, prev_mac, mac) \
         VALUES ('party-b', 1, now(), 'results_read', 'x', '{}', $1, $1)",
    )
    .bind(vec![0u8; 32])
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert_eq!(denied(err), "42501", "row-level security");
    tx.rollback().await.unwrap();
    for role in [Role::Worker, Role::Members] {
        let pool = db.pool(role).await;
        let mut tx = shared::db::begin_for_tenant(&pool, &tenant("party-a"))
            .await
            .unwrap();
        let err = sqlx::query("SELECT * FROM ops.audit_tail('party-a')")
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert_eq!(denied(err), "42501", "{role:?}");
    }
    // Usage counts are added through ops.add_usage only, by the services that count.
    let worker = db.pool(Role::Worker).await;
    let err = sqlx::query("SELECT ops.add_usage('{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')")
        .execute(&worker)
        .await
        .unwrap_err();
    assert_eq!(denied(err), "42501");
    // The entry written first is still the only one, unchanged.
    let mut conn = db.owner.acquire().await.unwrap();
    let verdict = shared::audit::verify(&mut conn, &key, "party-a")
        .await
        .unwrap();
    assert!(verdict.intact() && verdict.entries == 1, "{verdict:?}");
}

/// Runs `audit verify --tenant CHAIN` as an operator would: (exit code, stdout).
fn audit_cli(db: &TestDb, key: &str, chain: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit"))
        .args(["verify", "--tenant", chain])
        .env("DATABASE_URL", db.admin_url())
        .env("AUDIT_KEY", key)
        .output()
        .expect("run audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_passes_an_intact_chain_and_names_the_tampered_entry() {
    let db = TestDb::create().await;
    let keys = TestKeys::new(&[]);
    let ingest = db.pool(Role::Ingest).await;
    for n in 1..=5 {
        append(&ingest, &keys.audit_key(), "party-a", n).await;
    }
    let (code, out) = audit_cli(&db, &keys.audit_key_b64, "party-a");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("chain party-a: intact, 5 entries; last #5 tokens_registered"),
        "{out}"
    );

    // The database owner changes a count.
    sqlx::query(
        "UPDATE ops.audit_log SET summary = '{\"received\":640,\"registered\":640}' \
         WHERE chain = 'party-a' AND seq = 3",
    )
    .execute(&db.owner)
    .await
    .unwrap();
    let (code, out) = audit_cli(&db, &keys.audit_key_b64, "party-a");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("chain party-a: entry #3 was edited\n  as stored: #3 tokens_registered"),
        "{out}"
    );
    assert!(
        out.contains("{\"received\":640,\"registered\":640}"),
        "{out}"
    );

    // Another key verifies nothing, and the CLI says so.
    let (code, out) = audit_cli(&db, &AuditKey::generate_base64(), "party-a");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no entry of the chain verifies"), "{out}");
    // A chain nobody wrote to is not an error; a malformed key is (exit 2), and is not echoed.
    assert_eq!(audit_cli(&db, &keys.audit_key_b64, "party-z").0, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_audit"))
        .args(["verify", "--tenant", "party-a"])
        .env("DATABASE_URL", db.admin_url())
        .env("AUDIT_KEY", "c2hvcnQ")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("c2hvcnQ"));
}
