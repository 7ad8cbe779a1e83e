//! What this machine's PostgreSQL can do with the same rows, measured in the same run as the
//! figures it is compared with: the best batched INSERT/UPDATE (the ceiling of the worker's
//! batch writer) and the best single-vote transaction (the ceiling of direct mode).
//!
//! Every measurement runs on a database cloned from the migrated template (never the dev
//! database), as the service's own role (`worker_dev` or `ingest_dev`) with row-level security
//! in force (`app.org_id` set per transaction), against the same tables and indexes the
//! services use. Before each one the tables are truncated and the same token hashes are
//! registered again and analysed, so every run starts from the same state.
//!
//! The batched methods live in `batched`, the single-vote transactions in `single`.

use std::time::Duration;

use anyhow::Context;
use shared::domain::TenantId;
use shared::vote::VoteMessage;
use sqlx::{Executor, PgPool};
use testkit::{Role, TestDb};
use uuid::Uuid;

mod batched;
mod single;

pub use batched::{batched, worker_batches, Batched, Progress};
pub use single::{single, single_ceiling, Single, SingleCeiling, SingleRun};

/// The election and its registered tokens, as a fresh database holds them before a vote.
pub async fn register(
    db: &TestDb,
    tenant: &TenantId,
    election: Uuid,
    hashes: &[Vec<u8>],
) -> anyhow::Result<()> {
    let options: Vec<serde_json::Value> = crate::OPTIONS
        .iter()
        .map(|o| serde_json::json!({"id": o, "label": o}))
        .collect();
    sqlx::query(
        "INSERT INTO elections.elections (org_id, id, kind, options, max_choices, status) \
         VALUES ($1, $2, 'single', $3, 1, 'open') ON CONFLICT (id) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(election)
    .bind(serde_json::Value::Array(options))
    .execute(&db.owner)
    .await?;
    for chunk in hashes.chunks(20_000) {
        sqlx::query(
            "INSERT INTO elections.voting_tokens (org_id, election_id, token_hash) \
             SELECT $1, $2, h FROM unnest($3::bytea[]) AS h",
        )
        .bind(tenant.as_str())
        .bind(election)
        .bind(chunk)
        .execute(&db.owner)
        .await?;
    }
    db.owner.execute("ANALYZE elections.voting_tokens").await?;
    Ok(())
}

/// Empties ballots, receipts and tokens and registers `hashes` again.
pub async fn reset(
    db: &TestDb,
    tenant: &TenantId,
    election: Uuid,
    hashes: &[Vec<u8>],
) -> anyhow::Result<()> {
    db.owner
        .execute("TRUNCATE elections.ballots, elections.ballot_box, elections.receipts, elections.voting_tokens")
        .await?;
    register(db, tenant, election, hashes).await?;
    db.owner
        .execute("ANALYZE elections.ballot_box, elections.receipts")
        .await?;
    Ok(())
}

/// A pool of `connections` for `role`, every connection opened before timing starts.
pub async fn warm_pool(db: &TestDb, role: Role, connections: u32) -> anyhow::Result<PgPool> {
    let pool = shared::db::pool(&db.settings(role, connections))?;
    let mut held = Vec::new();
    for _ in 0..connections {
        held.push(pool.acquire().await?);
    }
    drop(held);
    Ok(pool)
}

pub async fn count(db: &TestDb, sql: &str, election: Uuid) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql)
        .bind(election)
        .fetch_one(&db.owner)
        .await?)
}

/// Ballots recorded (they stay encrypted in the ballot box until the election is sealed).
pub const COUNT_BALLOTS: &str = "SELECT count(*) FROM elections.ballot_box WHERE election_id = $1";

/// The vote keys of this run (`VOTE_KEYS` of the in-process worker): generated once, so what the
/// harness publishes and what the worker decodes match, and nothing outlives the process.
pub fn run_vote_keys() -> &'static (String, shared::vote_keys::VoteKeys) {
    static KEYS: std::sync::OnceLock<(String, shared::vote_keys::VoteKeys)> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let config = shared::vote_keys::VoteKeys::generate_config("loadtest");
        let keys =
            shared::vote_keys::VoteKeys::from_config(&config).expect("a generated vote key parses");
        (config, keys)
    })
}

/// Synthetic votes for one election: random 256-bit token ids, their hashes, receipts derived
/// with a throw-away key, choices in the harness's fixed mix — what ingest would publish.
pub fn synthetic_votes(tenant: &TenantId, election: Uuid, n: usize) -> Vec<VoteMessage> {
    let key = shared::receipt::ReceiptKey::new(rand::random::<[u8; 32]>().to_vec())
        .expect("a 32-byte receipt key is valid");
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let token_id: [u8; 32] = rand::random();
            let choices = vec![crate::OPTIONS[crate::choice_of(i)].to_owned()];
            let submission = shared::receipt::submission_digest(&choices, None);
            VoteMessage {
                tenant: tenant.clone(),
                election_id: election,
                token_hash: shared::domain::TokenHash::of_token_id(&token_id),
                receipt: key.derive(election, &token_id, &submission),
                choices,
                accepted_at: now,
            }
        })
        .collect()
}

/// A fresh database for measurements (cloned from the migrated template), with a check that
/// the environment points at a loopback PostgreSQL first (the test kit panics otherwise).
pub async fn fresh_database() -> anyhow::Result<TestDb> {
    let url = std::env::var("EKKLESIA_ADMIN_DATABASE_URL").context(
        "EKKLESIA_ADMIN_DATABASE_URL is not set (source infra/local/env.sh, or use infra/local/loadtest.sh)",
    )?;
    let host = url
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or_default()
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(
        matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]"),
        "EKKLESIA_ADMIN_DATABASE_URL must point at a loopback PostgreSQL"
    );
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach PostgreSQL: {}", shared::db::redact(&e)))?
        .close()
        .await;
    Ok(TestDb::create().await)
}

/// Drops a database made by [`fresh_database`].
pub async fn drop_database(db: TestDb) -> anyhow::Result<()> {
    db.owner.close().await;
    let url = std::env::var("EKKLESIA_ADMIN_DATABASE_URL")?;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", db.name).as_str())
        .await?;
    admin.close().await;
    Ok(())
}
