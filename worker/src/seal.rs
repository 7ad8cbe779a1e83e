//! Progress reporting and sealing.
//!
//! Each worker reports a heartbeat and whether it is idle (caught up). Once an election has
//! been closed for `seal_delay` and every live worker is idle, nothing accepted before the close
//! can still be on its way, so the election is sealed: its ballots are deleted and re-inserted
//! in random order in one transaction, so no ballot keeps the transaction id (`xmin`) it shares
//! with its token update or its batch, and physical order says nothing about arrival. Results
//! are final only for sealed elections.

use std::time::Duration;

use shared::domain::TenantId;
use sqlx::PgPool;
use uuid::Uuid;

/// How recent a heartbeat must be for a worker to count as alive.
const ALIVE: &str = "15 seconds";

pub async fn report(pool: &PgPool, worker_id: &str, idle: bool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ops.worker_progress (worker_id, heartbeat_at, idle_since) \
         VALUES ($1, now(), CASE WHEN $2 THEN now() END) \
         ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now(), \
             idle_since = CASE WHEN $2 THEN COALESCE(ops.worker_progress.idle_since, now()) END",
    )
    .bind(worker_id)
    .bind(idle)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn forget(pool: &PgPool, worker_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM ops.worker_progress WHERE worker_id = $1")
        .bind(worker_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Seals every closed election whose close is older than `delay`, if all live workers are idle.
/// Returns the sealed elections.
pub async fn seal_ready(pool: &PgPool, delay: Duration) -> Result<Vec<Uuid>, sqlx::Error> {
    let all_idle: Option<bool> = sqlx::query_scalar(&format!(
        "SELECT bool_and(idle_since IS NOT NULL AND idle_since < now() - interval '1 second') \
         FROM ops.worker_progress WHERE heartbeat_at > now() - interval '{ALIVE}'"
    ))
    .fetch_one(pool)
    .await?;
    if all_idle != Some(true) {
        return Ok(Vec::new());
    }
    let waiting: Vec<(String, Uuid, bool)> = sqlx::query_as(
        "SELECT org_id, id, closed_at IS NULL OR closed_at < now() - make_interval(secs => $1) \
         FROM elections.awaiting_seal()",
    )
    .bind(delay.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let mut sealed = Vec::new();
    for (org, id, due) in waiting {
        let Ok(tenant) = TenantId::parse(&org) else {
            continue;
        };
        if due && seal(pool, &tenant, id).await? {
            sealed.push(id);
        }
    }
    Ok(sealed)
}

/// Rewrites the election's ballots in random order and marks it sealed. Idempotent.
pub async fn seal(
    pool: &PgPool,
    tenant: &TenantId,
    election_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let mut tx = shared::db::begin_for_tenant(pool, tenant).await?;
    let state: Option<(String, bool)> = sqlx::query_as(
        "SELECT status, sealed_at IS NOT NULL FROM elections.elections WHERE id = $1 FOR UPDATE",
    )
    .bind(election_id)
    .fetch_optional(&mut *tx)
    .await?;
    if !matches!(state, Some((ref status, false)) if status == "closed") {
        return Ok(false);
    }
    let moved = sqlx::query(
        "WITH gone AS (DELETE FROM elections.ballots WHERE election_id = $1 RETURNING org_id, election_id, choices) \
         INSERT INTO elections.ballots (org_id, election_id, choices) \
         SELECT org_id, election_id, choices FROM gone ORDER BY random()",
    )
    .bind(election_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("UPDATE elections.elections SET sealed_at = now() WHERE id = $1")
        .bind(election_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(election_id = %election_id, tenant = %tenant, ballots = moved, "election sealed");
    Ok(true)
}
