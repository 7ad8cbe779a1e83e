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

/// Records the vote with one statement in autocommit, `elections.record_direct_vote`
/// (migration `20261126000007_direct_vote.sql`): it sets the tenant for its own transaction,
/// locks the token (`FOR UPDATE NOWAIT`: a concurrent vote with the same token is told to retry
/// rather than queue behind the lock), re-reads the election's state (so a close is honoured at
/// once in direct mode), inserts the ballot, marks the token used and records the receipt. One
/// round trip instead of one per statement; the answers are the same.
pub async fn record(pool: &PgPool, vote: DirectVote<'_>) -> Result<DirectOutcome, IngestError> {
    let key_hash = vote.idempotency_key.map(key_hash);
    let (outcome, stored_key_hash): (String, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT outcome, stored_key_hash FROM elections.record_direct_vote($1, $2, $3, $4, $5, $6)",
    )
    .bind(vote.tenant.as_str())
    .bind(vote.election_id)
    .bind(&vote.token_hash.0[..])
    .bind(vote.receipt.as_str())
    .bind(vote.ballot.choices())
    .bind(key_hash.as_deref())
    .fetch_one(pool)
    .await?;
    match outcome.as_str() {
        "recorded" => Ok(DirectOutcome::Recorded),
        "unregistered" => Err(IngestError::UnregisteredToken),
        // The same Idempotency-Key as the recorded vote: a replay gets the first answer.
        "used" => match (stored_key_hash, key_hash) {
            (Some(stored), Some(key)) if stored == key => Ok(DirectOutcome::Replayed),
            _ => Err(IngestError::TokenUsed {
                receipt: vote.receipt.to_string(),
            }),
        },
        "closed" => Err(IngestError::Domain(
            shared::domain::DomainError::OutsideWindow,
        )),
        // Only reachable if the function and this code disagree (a migration without the
        // matching ingest): an internal error, as any other unexpected database answer.
        other => {
            tracing::error!(
                outcome = other,
                "unexpected outcome from record_direct_vote"
            );
            Err(IngestError::Problem(shared::Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "an unexpected database error occurred; it has been logged",
            )))
        }
    }
}
