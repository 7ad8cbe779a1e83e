//! What this machine's PostgreSQL can do with the same rows, measured in the same run as the
//! figures it is compared with: the best batched INSERT/UPDATE (the ceiling of the worker's
//! batch writer) and the best single-vote transaction (the ceiling of direct mode).
//!
//! Every measurement runs on a database cloned from the migrated template (never the dev
//! database), as the service's own role (`worker_dev` or `ingest_dev`) with row-level security
//! in force (`app.org_id` set per transaction), against the same tables and indexes the
//! services use. Before each one the tables are truncated and the same token hashes are
//! registered again and analysed, so every run starts from the same state.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;
use shared::domain::TenantId;
use shared::vote::VoteMessage;
use sqlx::{Executor, PgPool};
use testkit::{Role, TestDb};
use uuid::Uuid;

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

/// Each vote's choices encrypted for the ballot box, as the worker and direct mode store them.
fn sealed_ballots(tenant: &TenantId, votes: &[VoteMessage]) -> Vec<Vec<u8>> {
    let keys = &run_vote_keys().1;
    votes
        .iter()
        .map(|v| keys.encrypt_ballot(tenant, v.election_id, &v.choices))
        .collect()
}

/// A batched raw-SQL method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Batched {
    /// Three statements per batch transaction (claim tokens, insert ballots, insert
    /// receipts), each over `unnest` of arrays: the worker's writes without its reads.
    Unnest,
    /// One statement per batch: data-modifying CTEs, ballots and receipts only for claimed
    /// tokens. One round trip.
    Cte,
}

impl Batched {
    pub const ALL: [Batched; 2] = [Batched::Unnest, Batched::Cte];

    pub fn name(self) -> &'static str {
        match self {
            Self::Unnest => "unnest (3 statements)",
            Self::Cte => "one CTE statement",
        }
    }
}

async fn batch_transaction(
    pool: &PgPool,
    method: Batched,
    tenant: &TenantId,
    votes: &[VoteMessage],
) -> anyhow::Result<()> {
    let elections: Vec<Uuid> = votes.iter().map(|v| v.election_id).collect();
    let hashes: Vec<Vec<u8>> = votes.iter().map(|v| v.token_hash.0.to_vec()).collect();
    let sealed = sealed_ballots(tenant, votes);
    let receipts: Vec<String> = votes.iter().map(|v| v.receipt.to_string()).collect();
    let mut tx = shared::db::begin_for_tenant(pool, tenant).await?;
    match method {
        Batched::Unnest => {
            sqlx::query(
                "UPDATE elections.voting_tokens t SET used = true \
                 FROM unnest($1::uuid[], $2::bytea[]) AS m(election_id, token_hash) \
                 WHERE t.election_id = m.election_id AND t.token_hash = m.token_hash AND NOT t.used",
            )
            .bind(&elections)
            .bind(&hashes)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO elections.ballot_box (org_id, election_id, sealed) \
                 SELECT $1, m.election_id, m.sealed \
                 FROM unnest($2::uuid[], $3::bytea[]) AS m(election_id, sealed)",
            )
            .bind(tenant.as_str())
            .bind(&elections)
            .bind(&sealed)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO elections.receipts (receipt, org_id, election_id, status) \
                 SELECT m.receipt, $1, m.election_id, 'recorded' \
                 FROM unnest($2::text[], $3::uuid[]) AS m(receipt, election_id)",
            )
            .bind(tenant.as_str())
            .bind(&receipts)
            .bind(&elections)
            .execute(&mut *tx)
            .await?;
        }
        Batched::Cte => {
            sqlx::query(
                "WITH m AS (SELECT * FROM unnest($2::uuid[], $3::bytea[], $4::bytea[], $5::text[]) \
                            AS m(election_id, token_hash, sealed, receipt)), \
                 claimed AS (UPDATE elections.voting_tokens t SET used = true FROM m \
                            WHERE t.election_id = m.election_id AND t.token_hash = m.token_hash \
                              AND NOT t.used RETURNING t.election_id, t.token_hash), \
                 b AS (INSERT INTO elections.ballot_box (org_id, election_id, sealed) \
                       SELECT $1, m.election_id, m.sealed FROM m JOIN claimed USING (election_id, token_hash)), \
                 r AS (INSERT INTO elections.receipts (receipt, org_id, election_id, status) \
                       SELECT m.receipt, $1, m.election_id, 'recorded' FROM m JOIN claimed USING (election_id, token_hash)) \
                 SELECT count(*) FROM claimed",
            )
            .bind(tenant.as_str())
            .bind(&elections)
            .bind(&hashes)
            .bind(&sealed)
            .bind(&receipts)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Cumulative rows over time (seconds, rows), one point per committed batch.
pub type Progress = Vec<(f64, u64)>;

/// Commits `votes` in batches of `batch`, `writers` transactions at once (one connection
/// each), with `method`. Returns the elapsed time and the progress.
pub async fn batched(
    pool: &PgPool,
    method: Batched,
    tenant: &TenantId,
    votes: &[VoteMessage],
    batch: usize,
    writers: usize,
) -> anyhow::Result<(Duration, Progress)> {
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let results: Vec<anyhow::Result<(f64, u64)>> =
        futures::stream::iter(votes.chunks(batch.max(1)).map(|chunk| {
            let done = done.clone();
            async move {
                batch_transaction(pool, method, tenant, chunk).await?;
                let total = done.fetch_add(chunk.len(), Ordering::SeqCst) + chunk.len();
                Ok((started.elapsed().as_secs_f64(), total as u64))
            }
        }))
        .buffer_unordered(writers.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut progress = Vec::with_capacity(results.len());
    for r in results {
        progress.push(r?);
    }
    progress.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok((elapsed, progress))
}

/// The worker's own batch writer (`worker::batch::commit`) on the same terms.
pub async fn worker_batches(
    pool: &PgPool,
    votes: &[VoteMessage],
    batch: usize,
    writers: usize,
) -> anyhow::Result<(Duration, Progress, usize)> {
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let results: Vec<anyhow::Result<(f64, u64, usize)>> =
        futures::stream::iter(votes.chunks(batch.max(1)).map(|chunk| {
            let done = done.clone();
            async move {
                let committed = worker::batch::commit(pool, &run_vote_keys().1, chunk)
                    .await
                    .map_err(|e| anyhow::anyhow!("batch commit: {}", shared::db::redact(&e)))?;
                let recorded = committed
                    .outcomes
                    .iter()
                    .filter(|o| **o == worker::batch::Outcome::Recorded)
                    .count();
                let total = done.fetch_add(chunk.len(), Ordering::SeqCst) + chunk.len();
                Ok((started.elapsed().as_secs_f64(), total as u64, recorded))
            }
        }))
        .buffer_unordered(writers.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut progress = Vec::with_capacity(results.len());
    let mut recorded = 0;
    for r in results {
        let (t, n, rec) = r?;
        progress.push((t, n));
        recorded += rec;
    }
    progress.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok((elapsed, progress, recorded))
}

/// A single-vote transaction variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Single {
    /// Exactly direct mode's statement (`ingest/src/ballot_box.rs`): the
    /// `elections.record_direct_vote` function in autocommit — token `FOR UPDATE NOWAIT`,
    /// election open?, encrypted ballot insert, token update, receipt upsert, in one round trip.
    DirectFunction,
    /// The same transaction in one round trip: `BEGIN; …; COMMIT` sent as one simple query,
    /// the claim, ballot and receipt as one statement of data-modifying CTEs (on the worker's
    /// login: ingest's has no write privilege of its own on the vote tables).
    OneRoundTrip,
}

impl Single {
    pub const ALL: [Single; 2] = [Single::DirectFunction, Single::OneRoundTrip];

    pub fn name(self) -> &'static str {
        match self {
            Self::DirectFunction => "direct mode's function",
            Self::OneRoundTrip => "one round trip",
        }
    }
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn single_vote(
    pool: &PgPool,
    variant: Single,
    tenant: &TenantId,
    vote: &VoteMessage,
) -> anyhow::Result<()> {
    let sealed = run_vote_keys()
        .1
        .encrypt_ballot(tenant, vote.election_id, &vote.choices);
    match variant {
        Single::DirectFunction => {
            let outcome: String = sqlx::query_scalar(
                "SELECT elections.record_direct_vote($1, $2, $3, $4, $5, false)",
            )
            .bind(tenant.as_str())
            .bind(vote.election_id)
            .bind(&vote.token_hash.0[..])
            .bind(vote.receipt.as_str())
            .bind(&sealed)
            .fetch_one(pool)
            .await?;
            anyhow::ensure!(outcome == "recorded", "vote not recorded: {outcome}");
        }
        Single::OneRoundTrip => {
            // Every value is generated by the harness (uuid, hex, base64url, option ids) and
            // quoted anyway.
            let tenant_lit = literal(tenant.as_str());
            let election = literal(&vote.election_id.to_string());
            let hash = literal(&format!("\\x{}", vote.token_hash.to_hex()));
            let sql = format!(
                "BEGIN; SELECT set_config('app.org_id', {tenant_lit}, true); \
                 WITH t AS (SELECT election_id FROM elections.voting_tokens \
                            WHERE election_id = {election} AND token_hash = {hash} AND NOT used FOR UPDATE NOWAIT), \
                 u AS (UPDATE elections.voting_tokens v SET used = true FROM t \
                       WHERE v.election_id = t.election_id AND v.token_hash = {hash} RETURNING v.election_id), \
                 b AS (INSERT INTO elections.ballot_box (org_id, election_id, sealed) \
                       SELECT {tenant_lit}, election_id, {sealed}::bytea FROM u), \
                 r AS (INSERT INTO elections.receipts (receipt, org_id, election_id, status) \
                       SELECT {receipt}, {tenant_lit}, election_id, 'recorded' FROM u) \
                 SELECT count(*) FROM u; COMMIT;",
                sealed = literal(&format!("\\x{}", hex::encode(&sealed))),
                receipt = literal(vote.receipt.as_str()),
            );
            let mut conn = pool.acquire().await?;
            sqlx::raw_sql(&sql).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// One single-vote measurement.
#[derive(Debug, Clone, Serialize)]
pub struct SingleRun {
    pub variant: Single,
    pub connections: u32,
    pub votes: usize,
    pub seconds: f64,
    pub per_second: f64,
}

/// The single-vote ceiling: every variant and connection count measured; `best_*` is the
/// highest rate with at most the direct-mode pool's connections.
#[derive(Debug, Clone, Serialize)]
pub struct SingleCeiling {
    pub runs: Vec<SingleRun>,
    pub best_per_second: f64,
    pub best: String,
    /// The connections direct mode may use (ingest's `DATABASE_MAX_CONNECTIONS`).
    pub direct_mode_connections: u32,
}

/// Single-vote transactions on `connections` connections until `votes` are done or `limit`
/// passed.
pub async fn single(
    pool: &PgPool,
    variant: Single,
    tenant: &TenantId,
    votes: &[VoteMessage],
    connections: u32,
    limit: Duration,
) -> anyhow::Result<(usize, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let next = next.clone();
        tasks.push(async move {
            let mut done = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= votes.len() || started.elapsed() > limit {
                    return anyhow::Ok(done);
                }
                single_vote(pool, variant, tenant, &votes[i])
                    .await
                    .with_context(|| format!("single-vote transaction ({})", variant.name()))?;
                done += 1;
            }
        });
    }
    let mut done = 0;
    for r in futures::future::join_all(tasks).await {
        done += r?;
    }
    Ok((done, started.elapsed()))
}

/// Measures every single-vote variant on each connection count, each from a reset database.
pub async fn single_ceiling(
    db: &TestDb,
    tenant: &TenantId,
    election: Uuid,
    votes: &[VoteMessage],
    connection_counts: &[u32],
    direct_mode_connections: u32,
    limit: Duration,
) -> anyhow::Result<SingleCeiling> {
    let hashes: Vec<Vec<u8>> = votes.iter().map(|v| v.token_hash.0.to_vec()).collect();
    let mut runs = Vec::new();
    for &connections in connection_counts {
        for variant in Single::ALL {
            reset(db, tenant, election, &hashes).await?;
            let role = match variant {
                Single::DirectFunction => Role::Ingest,
                Single::OneRoundTrip => Role::Worker,
            };
            let pool = warm_pool(db, role, connections).await?;
            let (done, elapsed) = single(&pool, variant, tenant, votes, connections, limit).await?;
            pool.close().await;
            let stored = count(db, COUNT_BALLOTS, election).await?;
            anyhow::ensure!(
                stored == done as i64,
                "single-vote ceiling: {done} transactions committed but {stored} ballots stored"
            );
            runs.push(SingleRun {
                variant,
                connections,
                votes: done,
                seconds: elapsed.as_secs_f64(),
                per_second: done as f64 / elapsed.as_secs_f64().max(1e-9),
            });
        }
    }
    let best = runs
        .iter()
        .filter(|r| r.connections <= direct_mode_connections)
        .max_by(|a, b| a.per_second.total_cmp(&b.per_second));
    Ok(SingleCeiling {
        best_per_second: best.map_or(0.0, |b| b.per_second),
        best: best.map_or_else(String::new, |b| {
            format!("{} on {} connection(s)", b.variant.name(), b.connections)
        }),
        runs,
        direct_mode_connections,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_literals() {
        assert_eq!(literal("o'k"), "'o''k'");
    }
}
