//! Closing on time, sealing, and progress reports.
//!
//! An election is sealed once it is closed, `SEAL_DELAY_MS` has passed since the close, and the
//! queue has drained for it: every vote ingest accepted for it has a decided receipt and every
//! live ingest has written its accepted votes up to past the close (`elections.drained`, fed by
//! ingest's ledger). Whatever is still in the queue, redelivering after a failure, leased by a
//! worker that died, or dead-lettered, keeps it open. Sealing decrypts the ballot box and writes
//! every ballot of the election in random order in one transaction, so no ballot keeps the
//! transaction id (`xmin`) it shared with its token update or its batch, and physical order says
//! nothing about arrival. Results are final only for sealed elections. An election whose
//! `closes_at` has passed is closed here first, so it seals without anyone pressing close.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::domain::TenantId;
use shared::vote_keys::VoteKeys;
use sqlx::PgPool;
use uuid::Uuid;

pub async fn report(pool: &PgPool, worker_id: &str, idle: bool) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO ops.worker_progress (worker_id, heartbeat_at, idle_since) \
         VALUES ($1, now(), CASE WHEN $2 THEN now() END) \
         ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now(), \
             idle_since = CASE WHEN $2 THEN COALESCE(ops.worker_progress.idle_since, now()) END",
        worker_id,
        idle
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn forget(pool: &PgPool, worker_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM ops.worker_progress WHERE worker_id = $1",
        worker_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A ballot in the box does not decrypt with the keys this worker holds: it stays unsealed
    /// (and its results not final) until a worker with the right key seals it.
    #[error("a ballot of election {0} does not decrypt: {1}")]
    Undecryptable(Uuid, shared::vote_keys::OpenError),
}

/// Closes the elections whose `closes_at` has passed, then seals every closed election that is
/// ready. Returns the sealed elections.
pub async fn seal_ready(
    pool: &PgPool,
    keys: &VoteKeys,
    delay: Duration,
) -> Result<Vec<Uuid>, SealError> {
    let closed = sqlx::query!(r#"SELECT org_id AS "org!", id AS "id!" FROM elections.close_due()"#)
        .fetch_all(pool)
        .await?;
    for c in closed {
        tracing::info!(election_id = %c.id, tenant = %c.org, "election reached closes_at: closed");
    }
    let waiting: Vec<(String, Uuid, Option<DateTime<Utc>>)> = sqlx::query!(
        r#"SELECT org_id AS "org!", id AS "id!", closed_at FROM elections.awaiting_seal()"#
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|w| (w.org, w.id, w.closed_at))
    .collect();
    let delay_chrono = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    let mut sealed = Vec::new();
    for (org, id, closed_at) in waiting {
        // Cheap check first: begin_seal locks the election row, which waits for batches.
        if closed_at.is_some_and(|c| Utc::now() < c + delay_chrono) {
            continue;
        }
        let Ok(tenant) = TenantId::parse(&org) else {
            continue;
        };
        if seal(pool, keys, &tenant, id, delay).await? {
            sealed.push(id);
        }
    }
    Ok(sealed)
}

/// Seals one election if it is ready; `Ok(false)` if it is not (yet). Idempotent.
#[tracing::instrument(name = "seal", skip_all, fields(tenant = %tenant, election_id = %election_id))]
pub async fn seal(
    pool: &PgPool,
    keys: &VoteKeys,
    tenant: &TenantId,
    election_id: Uuid,
    delay: Duration,
) -> Result<bool, SealError> {
    let mut tx = shared::db::begin_for_tenant(pool, tenant).await?;
    // Locks the election row FOR UPDATE: no batch can add a ballot until this commits.
    let state = sqlx::query_scalar!(
        r#"SELECT elections.begin_seal($1, $2, make_interval(secs => $3)) AS "state!""#,
        tenant.as_str(),
        election_id,
        delay.as_secs_f64()
    )
    .fetch_one(&mut *tx)
    .await?;
    if state != "ready" {
        tracing::debug!(election_id = %election_id, state, "not sealed yet");
        return Ok(false);
    }
    let boxed = sqlx::query_scalar!(
        "SELECT sealed FROM elections.ballot_box WHERE election_id = $1",
        election_id
    )
    .fetch_all(&mut *tx)
    .await?;
    let ballots = boxed
        .iter()
        .map(|sealed| {
            keys.decrypt_ballot(tenant, election_id, sealed)
                .map(|choices| crate::batch::text_array_literal(&choices))
        })
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| SealError::Undecryptable(election_id, e))?;
    let total = sqlx::query_scalar!(
        r#"SELECT elections.finish_seal($1, $2, $3) AS "total!""#,
        tenant.as_str(),
        election_id,
        &ballots
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(election_id = %election_id, tenant = %tenant, ballots = total, "election sealed");
    Ok(true)
}
