//! Batched writes: the worker's own batch writer, and the best raw-SQL batch for the same rows
//! (the ceiling the writer is compared with).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use shared::domain::TenantId;
use shared::vote::VoteMessage;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::run_vote_keys;

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

/// A batch as the statements bind it: one array per column.
struct Columns {
    elections: Vec<Uuid>,
    hashes: Vec<Vec<u8>>,
    sealed: Vec<Vec<u8>>,
    receipts: Vec<String>,
}

impl Columns {
    fn of(tenant: &TenantId, votes: &[VoteMessage]) -> Self {
        Self {
            elections: votes.iter().map(|v| v.election_id).collect(),
            hashes: votes.iter().map(|v| v.token_hash.0.to_vec()).collect(),
            sealed: sealed_ballots(tenant, votes),
            receipts: votes.iter().map(|v| v.receipt.to_string()).collect(),
        }
    }
}

async fn batch_transaction(
    pool: &PgPool,
    method: Batched,
    tenant: &TenantId,
    votes: &[VoteMessage],
) -> anyhow::Result<()> {
    let columns = Columns::of(tenant, votes);
    let mut tx = shared::db::begin_for_tenant(pool, tenant).await?;
    match method {
        Batched::Unnest => unnest(&mut tx, tenant, &columns).await?,
        Batched::Cte => cte(&mut tx, tenant, &columns).await?,
    }
    tx.commit().await?;
    Ok(())
}

/// Claim the tokens, insert the ballots, insert the receipts: three statements.
async fn unnest(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &TenantId,
    c: &Columns,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE elections.voting_tokens t SET used = true \
         FROM unnest($1::uuid[], $2::bytea[]) AS m(election_id, token_hash) \
         WHERE t.election_id = m.election_id AND t.token_hash = m.token_hash AND NOT t.used",
    )
    .bind(&c.elections)
    .bind(&c.hashes)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO elections.ballot_box (org_id, election_id, sealed) \
         SELECT $1, m.election_id, m.sealed \
         FROM unnest($2::uuid[], $3::bytea[]) AS m(election_id, sealed)",
    )
    .bind(tenant.as_str())
    .bind(&c.elections)
    .bind(&c.sealed)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO elections.receipts (receipt, org_id, election_id, status) \
         SELECT m.receipt, $1, m.election_id, 'recorded' \
         FROM unnest($2::text[], $3::uuid[]) AS m(receipt, election_id)",
    )
    .bind(tenant.as_str())
    .bind(&c.receipts)
    .bind(&c.elections)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The same writes as one statement of data-modifying CTEs.
async fn cte(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &TenantId,
    c: &Columns,
) -> sqlx::Result<()> {
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
    .bind(&c.elections)
    .bind(&c.hashes)
    .bind(&c.sealed)
    .bind(&c.receipts)
    .execute(&mut **tx)
    .await?;
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
