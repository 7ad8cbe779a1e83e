//! Where votes are committed in queue mode: one short transaction per batch.
//!
//! The transaction claims each vote's token (registered and unused), inserts the ballots of the
//! claimed ones in shuffled order, and records every receipt's outcome. A message redelivered
//! after its batch committed (a lost ack, a crash between commit and ack) finds its token used
//! and its receipt recorded, and changes nothing: deduplication lives in the same transaction
//! as the effect, so no vote counts twice whatever Pub/Sub redelivers.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use rand::seq::SliceRandom;
use shared::db::ElectionRow;
use shared::domain::{ElectionDefinition, ElectionStatus, RejectionReason, TenantId};
use shared::vote::VoteMessage;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Recorded,
    Rejected(RejectionReason),
    /// Already recorded by an earlier delivery or retry of the same token: nothing to do.
    Duplicate,
}

struct Election {
    definition: ElectionDefinition,
    closed_at: Option<DateTime<Utc>>,
    sealed: bool,
}

/// Commits `votes` (index-aligned outcomes are returned) in one transaction.
pub async fn commit(pool: &PgPool, votes: &[VoteMessage]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut outcomes = vec![Outcome::Duplicate; votes.len()];
    // Row-level security is per tenant, so the batch is written tenant by tenant.
    let mut by_tenant: BTreeMap<&TenantId, Vec<usize>> = BTreeMap::new();
    for (i, vote) in votes.iter().enumerate() {
        by_tenant.entry(&vote.tenant).or_default().push(i);
    }
    let mut tx = pool.begin().await?;
    for (tenant, indices) in by_tenant {
        shared::db::set_tenant(&mut tx, tenant).await?;
        commit_tenant(&mut tx, tenant, votes, &indices, &mut outcomes).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn commit_tenant(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &TenantId,
    votes: &[VoteMessage],
    indices: &[usize],
    outcomes: &mut [Outcome],
) -> Result<(), sqlx::Error> {
    let election_ids: Vec<Uuid> = indices
        .iter()
        .map(|&i| votes[i].election_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // `FOR KEY SHARE` keeps each election row from disappearing until the ballots below are
    // committed: one lock per election per batch, where foreign keys took two per ballot
    // (migration 6). It does not block the close, which updates no key.
    let rows: Vec<ElectionRow> =
        sqlx::query_as(&format!("{} FOR KEY SHARE", ElectionRow::SELECT_BY_IDS))
            .bind(&election_ids)
            .fetch_all(&mut **tx)
            .await?;
    let elections: HashMap<Uuid, Election> = rows
        .iter()
        .filter_map(|r| {
            Some((
                r.id,
                Election {
                    definition: r.definition()?,
                    closed_at: r.closed_at,
                    sealed: r.sealed_at.is_some(),
                },
            ))
        })
        .collect();

    // Decide what can be decided without touching tokens; keep the first vote per token.
    let mut seen_tokens = HashSet::new();
    let mut candidates = Vec::new();
    for &i in indices {
        let vote = &votes[i];
        if !seen_tokens.insert((vote.election_id, vote.token_hash)) {
            outcomes[i] = Outcome::Duplicate;
            continue;
        }
        let Some(election) = elections.get(&vote.election_id) else {
            outcomes[i] = Outcome::Rejected(RejectionReason::ElectionClosed);
            continue;
        };
        let too_late = election.sealed
            || election.definition.status == ElectionStatus::Draft
            || election
                .closed_at
                .is_some_and(|closed| vote.accepted_at > closed);
        if too_late {
            outcomes[i] = Outcome::Rejected(RejectionReason::ElectionClosed);
            continue;
        }
        if election.definition.ballot(vote.choices.clone()).is_err() {
            outcomes[i] = Outcome::Rejected(RejectionReason::InvalidBallot);
            continue;
        }
        candidates.push(i);
    }

    // Claim the tokens: only registered, unused ones flip. Concurrent batches holding the same
    // token serialise on its row; the later one sees it used.
    let claim_elections: Vec<Uuid> = candidates.iter().map(|&i| votes[i].election_id).collect();
    let claim_hashes: Vec<Vec<u8>> = candidates
        .iter()
        .map(|&i| votes[i].token_hash.0.to_vec())
        .collect();
    let claimed: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "UPDATE elections.voting_tokens t SET used = true \
         FROM unnest($1::uuid[], $2::bytea[]) AS m(election_id, token_hash) \
         WHERE t.election_id = m.election_id AND t.token_hash = m.token_hash AND NOT t.used \
         RETURNING t.election_id, t.token_hash",
    )
    .bind(&claim_elections)
    .bind(&claim_hashes)
    .fetch_all(&mut **tx)
    .await?;
    let claimed: HashSet<(Uuid, Vec<u8>)> = claimed.into_iter().collect();

    let mut unclaimed = Vec::new();
    let mut recorded = Vec::new();
    for &i in &candidates {
        if claimed.contains(&(votes[i].election_id, votes[i].token_hash.0.to_vec())) {
            outcomes[i] = Outcome::Recorded;
            recorded.push(i);
        } else {
            unclaimed.push(i);
        }
    }

    if !unclaimed.is_empty() {
        // Unknown token, or used: by this very vote earlier (its receipt says recorded) or not.
        let receipts: Vec<String> = unclaimed
            .iter()
            .map(|&i| votes[i].receipt.to_string())
            .collect();
        let already: HashSet<String> = sqlx::query_scalar(
            "SELECT receipt FROM elections.receipts WHERE receipt = ANY($1) AND status = 'recorded'",
        )
        .bind(&receipts)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
        let known_elections: Vec<Uuid> = unclaimed.iter().map(|&i| votes[i].election_id).collect();
        let known_hashes: Vec<Vec<u8>> = unclaimed
            .iter()
            .map(|&i| votes[i].token_hash.0.to_vec())
            .collect();
        let known: HashSet<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT t.election_id, t.token_hash FROM elections.voting_tokens t \
             JOIN unnest($1::uuid[], $2::bytea[]) AS m(election_id, token_hash) \
             ON t.election_id = m.election_id AND t.token_hash = m.token_hash",
        )
        .bind(&known_elections)
        .bind(&known_hashes)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
        for &i in &unclaimed {
            let vote = &votes[i];
            outcomes[i] = if already.contains(vote.receipt.as_str()) {
                Outcome::Duplicate
            } else if known.contains(&(vote.election_id, vote.token_hash.0.to_vec())) {
                Outcome::Rejected(RejectionReason::TokenAlreadyUsed)
            } else {
                Outcome::Rejected(RejectionReason::UnknownToken)
            };
        }
    }

    if !recorded.is_empty() {
        // Shuffled, so storage order says nothing about arrival order within the batch.
        let mut order = recorded.clone();
        order.shuffle(&mut rand::thread_rng());
        let election_ids: Vec<Uuid> = order.iter().map(|&i| votes[i].election_id).collect();
        // One array literal per ballot: unnest cannot take an array of arrays of different
        // lengths, and a literal cast costs the server a fifth of a per-row jsonb conversion.
        let choices: Vec<String> = order
            .iter()
            .map(|&i| text_array_literal(&votes[i].choices))
            .collect();
        sqlx::query(
            "INSERT INTO elections.ballots (org_id, election_id, choices) \
             SELECT $1, m.election_id, m.choices::text[] \
             FROM unnest($2::uuid[], $3::text[]) AS m(election_id, choices)",
        )
        .bind(tenant.as_str())
        .bind(&election_ids)
        .bind(&choices)
        .execute(&mut **tx)
        .await?;
    }

    // Every decided vote's receipt; a recorded receipt is never downgraded.
    let decided: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| !matches!(outcomes[i], Outcome::Duplicate))
        .collect();
    if !decided.is_empty() {
        let receipts: Vec<String> = decided
            .iter()
            .map(|&i| votes[i].receipt.to_string())
            .collect();
        let election_ids: Vec<Uuid> = decided.iter().map(|&i| votes[i].election_id).collect();
        let statuses: Vec<&str> = decided
            .iter()
            .map(|&i| {
                if outcomes[i] == Outcome::Recorded {
                    "recorded"
                } else {
                    "rejected"
                }
            })
            .collect();
        let reasons: Vec<Option<&str>> = decided
            .iter()
            .map(|&i| match outcomes[i] {
                Outcome::Rejected(reason) => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        sqlx::query(
            "INSERT INTO elections.receipts (receipt, org_id, election_id, status, reason) \
             SELECT m.receipt, $1, m.election_id, m.status, m.reason \
             FROM unnest($2::text[], $3::uuid[], $4::text[], $5::text[]) AS m(receipt, election_id, status, reason) \
             ON CONFLICT (receipt) DO UPDATE SET status = excluded.status, reason = excluded.reason \
             WHERE elections.receipts.status <> 'recorded'",
        )
        .bind(tenant.as_str())
        .bind(&receipts)
        .bind(&election_ids)
        .bind(&statuses)
        .bind(&reasons)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A PostgreSQL array literal of `choices`, every element quoted: option ids are free text
/// (up to 64 characters), so a comma, brace, quote or backslash in one must stay inside it.
pub fn text_array_literal(choices: &[String]) -> String {
    let mut literal = String::with_capacity(2 + choices.iter().map(|c| c.len() + 3).sum::<usize>());
    literal.push('{');
    for (n, choice) in choices.iter().enumerate() {
        if n > 0 {
            literal.push(',');
        }
        literal.push('"');
        for ch in choice.chars() {
            if ch == '"' || ch == '\\' {
                literal.push('\\');
            }
            literal.push(ch);
        }
        literal.push('"');
    }
    literal.push('}');
    literal
}

#[cfg(test)]
mod tests {
    use super::text_array_literal;

    #[test]
    fn array_literal_quotes_every_choice() {
        let choices = vec![
            "yes".to_string(),
            "a,b".to_string(),
            "{x}".to_string(),
            r#"say "no""#.to_string(),
            r"back\slash".to_string(),
            "NULL".to_string(),
            " ".to_string(),
        ];
        assert_eq!(
            text_array_literal(&choices),
            r#"{"yes","a,b","{x}","say \"no\"","back\\slash","NULL"," "}"#
        );
    }
}
