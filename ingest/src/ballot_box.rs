//! Direct mode: where a vote is committed synchronously, one short transaction per vote (the
//! design the queue replaces, kept as the fallback ops can switch to).

use sha2::{Digest, Sha256};
use shared::domain::{Ballot, TenantId, TokenHash};
use shared::receipt::Receipt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::IngestError;

pub struct DirectVote<'a> {
    pub tenant: &'a TenantId,
    pub election_id: Uuid,
    pub token_hash: TokenHash,
    pub receipt: &'a Receipt,
    pub ballot: &'a Ballot,
    pub idempotency_key: Option<&'a str>,
}

pub enum DirectOutcome {
    Recorded,
    /// The same `Idempotency-Key` already recorded this vote: answer as the first time.
    Replayed,
}

fn key_hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Locks the token (`FOR UPDATE NOWAIT`: a concurrent vote with the same token is told to retry
/// rather than queue behind the lock), inserts the ballot, marks the token used and records the
/// receipt, then commits. The election's state is re-read inside the transaction, so a close
/// is honoured at once in direct mode.
pub async fn record(pool: &PgPool, vote: DirectVote<'_>) -> Result<DirectOutcome, IngestError> {
    let mut tx = shared::db::begin_for_tenant(pool, vote.tenant).await?;
    let used: Option<bool> = sqlx::query_scalar(
        "SELECT used FROM elections.voting_tokens WHERE election_id = $1 AND token_hash = $2 FOR UPDATE NOWAIT",
    )
    .bind(vote.election_id)
    .bind(&vote.token_hash.0[..])
    .fetch_optional(&mut *tx)
    .await?;
    match used {
        None => return Err(IngestError::UnregisteredToken),
        Some(true) => {
            let stored: Option<Option<Vec<u8>>> =
                sqlx::query_scalar("SELECT idempotency_key_hash FROM elections.receipts WHERE receipt = $1 AND status = 'recorded'")
                    .bind(vote.receipt.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            if let (Some(Some(stored)), Some(key)) = (stored, vote.idempotency_key) {
                if stored == key_hash(key) {
                    return Ok(DirectOutcome::Replayed);
                }
            }
            return Err(IngestError::TokenUsed {
                receipt: vote.receipt.to_string(),
            });
        }
        Some(false) => {}
    }
    let open: Option<bool> = sqlx::query_scalar(
        "SELECT status = 'open' AND (opens_at IS NULL OR opens_at <= now()) AND (closes_at IS NULL OR closes_at > now()) \
         FROM elections.elections WHERE id = $1",
    )
    .bind(vote.election_id)
    .fetch_optional(&mut *tx)
    .await?;
    if open != Some(true) {
        return Err(IngestError::Domain(
            shared::domain::DomainError::OutsideWindow,
        ));
    }
    sqlx::query("INSERT INTO elections.ballots (org_id, election_id, choices) VALUES ($1, $2, $3)")
        .bind(vote.tenant.as_str())
        .bind(vote.election_id)
        .bind(vote.ballot.choices())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE elections.voting_tokens SET used = true WHERE election_id = $1 AND token_hash = $2",
    )
    .bind(vote.election_id)
    .bind(&vote.token_hash.0[..])
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO elections.receipts (receipt, org_id, election_id, status, reason, idempotency_key_hash) \
         VALUES ($1, $2, $3, 'recorded', NULL, $4) \
         ON CONFLICT (receipt) DO UPDATE SET status = 'recorded', reason = NULL, idempotency_key_hash = excluded.idempotency_key_hash",
    )
    .bind(vote.receipt.as_str())
    .bind(vote.tenant.as_str())
    .bind(vote.election_id)
    .bind(vote.idempotency_key.map(key_hash))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(DirectOutcome::Recorded)
}
