//! Direct mode: where a vote is committed synchronously, one short transaction per vote (the
//! design the queue replaces, kept as the fallback ops can switch to).

use shared::domain::{TenantId, TokenHash};
use shared::receipt::Receipt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::IngestError;

pub struct DirectVote<'a> {
    pub tenant: &'a TenantId,
    pub election_id: Uuid,
    pub token_hash: TokenHash,
    pub receipt: &'a Receipt,
    /// The choices encrypted for the ballot box (`VoteKeys::encrypt_ballot`).
    pub sealed_ballot: &'a [u8],
    /// The request named itself with an `Idempotency-Key`: if this very submission (its receipt
    /// covers the key and the choices) was already recorded, it gets the first answer again.
    pub replayable: bool,
}

pub enum DirectOutcome {
    Recorded,
    /// The same submission (same choices, same `Idempotency-Key`) was recorded before.
    Replayed,
}

/// Records the vote with one statement in autocommit, `elections.record_direct_vote`
/// (SECURITY DEFINER: ingest has no write privilege of its own on any vote table): it locks the
/// token (`FOR UPDATE NOWAIT`: a concurrent vote with the same token is told to retry rather
/// than queue behind the lock), re-reads the election's state (so a close is honoured at once
/// in direct mode), puts the encrypted ballot in the ballot box, marks the token used and
/// records the receipt.
pub async fn record(pool: &PgPool, vote: DirectVote<'_>) -> Result<DirectOutcome, IngestError> {
    let outcome = sqlx::query_scalar!(
        r#"SELECT elections.record_direct_vote($1, $2, $3, $4, $5, $6) AS "outcome!""#,
        vote.tenant.as_str(),
        vote.election_id,
        &vote.token_hash.0[..],
        vote.receipt.as_str(),
        vote.sealed_ballot,
        vote.replayable
    )
    .fetch_one(pool)
    .await?;
    match outcome.as_str() {
        "recorded" => Ok(DirectOutcome::Recorded),
        "replayed" => Ok(DirectOutcome::Replayed),
        "unregistered" => Err(IngestError::UnregisteredToken),
        // Another submission (other choices, or another Idempotency-Key) was recorded.
        "used" => Err(IngestError::TokenUsed),
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
