//! Where votes are committed in queue mode: one short transaction per batch.
//!
//! The transaction reads the batch's elections, decides what it can without tokens
//! (`crate::triage`), claims each chosen vote's token (registered and unused), puts the claimed
//! votes' ballots, encrypted, into the ballot box in shuffled order, and records every
//! submission's outcome on its receipt. A message redelivered after its batch committed (a lost
//! ack, a crash between commit and ack) finds its token used and its receipt recorded, and
//! changes nothing: deduplication lives in the same transaction as the effect, so no vote counts
//! twice whatever Pub/Sub redelivers.
//!
//! Row locks are always taken in one order (tokens by election and hash, receipts by receipt),
//! so two writers holding overlapping batches wait for each other instead of deadlocking.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::seq::SliceRandom;
use shared::db::ElectionRow;
use shared::domain::{ElectionKind, ElectionStatus, RejectionReason, TenantId};
use shared::vote::VoteMessage;
use shared::vote_keys::VoteKeys;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::triage::{triage, Election, Triage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Recorded,
    Rejected(RejectionReason),
    /// Already recorded by an earlier delivery or retry of the same submission: nothing to do.
    Duplicate,
}

/// What one batch transaction did.
#[derive(Debug, Default)]
pub struct Committed {
    /// Index-aligned with the batch.
    pub outcomes: Vec<Outcome>,
    /// Sealed elections that received a vote accepted before their close: they are sealed again.
    pub reopened_seals: Vec<Uuid>,
}

type Tx<'a> = Transaction<'a, Postgres>;
type TokenKey = (Uuid, [u8; 32]);

/// Commits `votes` in one transaction, tenant by tenant (row-level security is per tenant).
#[tracing::instrument(name = "commit", skip_all, fields(votes = votes.len()))]
pub async fn commit(
    pool: &PgPool,
    keys: &VoteKeys,
    votes: &[VoteMessage],
) -> Result<Committed, sqlx::Error> {
    let mut committed = Committed {
        outcomes: vec![Outcome::Duplicate; votes.len()],
        reopened_seals: Vec::new(),
    };
    let mut by_tenant: BTreeMap<&TenantId, Vec<usize>> = BTreeMap::new();
    for (i, vote) in votes.iter().enumerate() {
        by_tenant.entry(&vote.tenant).or_default().push(i);
    }
    let mut tx = pool.begin().await?;
    for (tenant, indices) in by_tenant {
        shared::db::set_tenant(&mut tx, tenant).await?;
        commit_tenant(&mut tx, keys, tenant, votes, &indices, &mut committed).await?;
    }
    tx.commit().await?;
    Ok(committed)
}

async fn commit_tenant(
    tx: &mut Tx<'_>,
    keys: &VoteKeys,
    tenant: &TenantId,
    votes: &[VoteMessage],
    indices: &[usize],
    committed: &mut Committed,
) -> Result<(), sqlx::Error> {
    let elections = lock_elections(tx, tenant, votes, indices).await?;
    let Triage {
        decided,
        chosen,
        siblings,
    } = triage(votes, indices, &elections);
    let outcomes = &mut committed.outcomes;
    for (i, outcome) in decided {
        outcomes[i] = outcome;
    }
    let claimed = claim_tokens(tx, votes, &chosen).await?;
    let mut unclaimed = Vec::new();
    for &i in &chosen {
        if claimed.contains(&(votes[i].election_id, votes[i].token_hash.0)) {
            outcomes[i] = Outcome::Recorded;
        } else {
            unclaimed.push(i);
        }
    }
    let undecided: Vec<usize> = unclaimed
        .iter()
        .copied()
        .chain(siblings.iter().map(|&(i, _)| i))
        .collect();
    let recorded_before = recorded_receipts(tx, votes, &undecided).await?;
    let known = registered_tokens(tx, votes, &unclaimed).await?;
    let settled = Settled {
        recorded_before: &recorded_before,
        known: &known,
    };
    settled.decide(votes, &unclaimed, &siblings, outcomes);
    let recorded: Vec<usize> = chosen
        .iter()
        .copied()
        .filter(|&i| outcomes[i] == Outcome::Recorded)
        .collect();
    insert_ballots(tx, keys, tenant, votes, &recorded).await?;
    for election in elections_to_reseal(votes, &recorded, &elections) {
        sqlx::query!(
            "SELECT elections.reopen_seal($1, $2)",
            tenant.as_str(),
            election
        )
        .execute(&mut **tx)
        .await?;
        committed.reopened_seals.push(election);
    }
    upsert_receipts(tx, tenant, votes, indices, outcomes).await
}

/// What the database says about the votes that did not claim their token.
struct Settled<'a> {
    /// Receipts recorded before (by an earlier delivery of the same submission).
    recorded_before: &'a HashSet<String>,
    /// Tokens registered at all (used or not).
    known: &'a HashSet<TokenKey>,
}

impl Settled<'_> {
    /// Outcomes of the unclaimed chosen votes, then of their siblings.
    fn decide(
        &self,
        votes: &[VoteMessage],
        unclaimed: &[usize],
        siblings: &[(usize, usize)],
        outcomes: &mut [Outcome],
    ) {
        for &i in unclaimed {
            let vote = &votes[i];
            outcomes[i] = if self.recorded_before.contains(vote.receipt.as_str()) {
                // A redelivery of a submission recorded before.
                Outcome::Duplicate
            } else if self.known.contains(&(vote.election_id, vote.token_hash.0)) {
                // Another submission used the token.
                Outcome::Rejected(RejectionReason::TokenAlreadyUsed)
            } else {
                Outcome::Rejected(RejectionReason::UnknownToken)
            };
        }
        for &(i, chosen) in siblings {
            // A sibling shares its chosen vote's token, so it cannot be recorded too; unless it
            // is itself a redelivery of an earlier recorded submission.
            outcomes[i] = if self.recorded_before.contains(votes[i].receipt.as_str()) {
                Outcome::Duplicate
            } else if outcomes[chosen] == Outcome::Rejected(RejectionReason::UnknownToken) {
                Outcome::Rejected(RejectionReason::UnknownToken)
            } else {
                Outcome::Rejected(RejectionReason::TokenAlreadyUsed)
            };
        }
    }
}

/// The batch's elections, read `FOR KEY SHARE` (`elections.lock_for_votes`): each stays as it
/// is (not deleted, not sealed, since the seal takes it `FOR UPDATE`) until the ballots below are
/// committed. One lock per election per batch; the close, an update of other columns, is not
/// blocked.
#[tracing::instrument(skip_all)]
async fn lock_elections(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    votes: &[VoteMessage],
    indices: &[usize],
) -> Result<HashMap<Uuid, Election>, sqlx::Error> {
    let mut ids: Vec<Uuid> = indices.iter().map(|&i| votes[i].election_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // A function's columns are nullable as far as the macro knows; these are the table's.
    let rows = sqlx::query_as!(
        ElectionRow,
        r#"SELECT org_id AS "org_id!", id AS "id!", kind AS "kind!: ElectionKind",
                  options AS "options!", max_choices AS "max_choices!",
                  status AS "status!: ElectionStatus", opens_at, closes_at, closed_at, sealed_at
             FROM elections.lock_for_votes($1, $2)"#,
        tenant.as_str(),
        &ids
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut elections = HashMap::with_capacity(rows.len());
    for row in rows {
        // Every vote for an unusable election is then rejected as for an unknown one; the
        // reason is logged.
        let Some(definition) = row.usable_definition() else {
            continue;
        };
        elections.insert(
            row.id,
            Election {
                definition,
                closed_at: row.closed_at,
                sealed: row.sealed_at.is_some(),
            },
        );
    }
    Ok(elections)
}

/// Claims the chosen votes' tokens: only registered, unused ones flip. The rows are locked in
/// (election, hash) order first, so concurrent batches never lock them in opposite orders.
#[tracing::instrument(skip_all)]
async fn claim_tokens(
    tx: &mut Tx<'_>,
    votes: &[VoteMessage],
    chosen: &[usize],
) -> Result<HashSet<TokenKey>, sqlx::Error> {
    if chosen.is_empty() {
        return Ok(HashSet::new());
    }
    let (elections, hashes) = token_columns(votes, chosen);
    let claimed = sqlx::query!(
        "WITH wanted AS ( \
             SELECT t.election_id, t.token_hash FROM elections.voting_tokens t \
             JOIN unnest($1::uuid[], $2::bytea[]) AS m(election_id, token_hash) \
               ON t.election_id = m.election_id AND t.token_hash = m.token_hash \
             WHERE NOT t.used \
             ORDER BY t.election_id, t.token_hash FOR UPDATE OF t) \
         UPDATE elections.voting_tokens t SET used = true FROM wanted w \
         WHERE t.election_id = w.election_id AND t.token_hash = w.token_hash AND NOT t.used \
         RETURNING t.election_id, t.token_hash",
        &elections,
        &hashes
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(token_keys(
        claimed.into_iter().map(|r| (r.election_id, r.token_hash)),
    ))
}

/// (election, hash) rows as keys; a stored hash is always 32 bytes (a CHECK constraint).
fn token_keys(rows: impl Iterator<Item = (Uuid, Vec<u8>)>) -> HashSet<TokenKey> {
    rows.filter_map(|(e, h)| Some((e, <[u8; 32]>::try_from(h).ok()?)))
        .collect()
}

/// Sorted (election, hash) columns of the given votes, for one `unnest`.
fn token_columns(votes: &[VoteMessage], indices: &[usize]) -> (Vec<Uuid>, Vec<Vec<u8>>) {
    let mut keys: Vec<TokenKey> = indices
        .iter()
        .map(|&i| (votes[i].election_id, votes[i].token_hash.0))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().map(|(e, h)| (e, h.to_vec())).unzip()
}

/// Which of these votes' receipts are already recorded (their submission committed before).
#[tracing::instrument(skip_all)]
async fn recorded_receipts(
    tx: &mut Tx<'_>,
    votes: &[VoteMessage],
    indices: &[usize],
) -> Result<HashSet<String>, sqlx::Error> {
    if indices.is_empty() {
        return Ok(HashSet::new());
    }
    let receipts: Vec<&str> = indices.iter().map(|&i| votes[i].receipt.as_str()).collect();
    let recorded = sqlx::query_scalar!(
        "SELECT receipt FROM elections.receipts WHERE receipt = ANY($1) AND status = 'recorded'",
        &receipts as &[&str]
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(recorded.into_iter().collect())
}

/// Which of these votes' tokens are registered at all (used or not).
#[tracing::instrument(skip_all)]
async fn registered_tokens(
    tx: &mut Tx<'_>,
    votes: &[VoteMessage],
    indices: &[usize],
) -> Result<HashSet<TokenKey>, sqlx::Error> {
    if indices.is_empty() {
        return Ok(HashSet::new());
    }
    let (elections, hashes) = token_columns(votes, indices);
    let known = sqlx::query!(
        "SELECT t.election_id, t.token_hash FROM elections.voting_tokens t \
         JOIN unnest($1::uuid[], $2::bytea[]) AS m(election_id, token_hash) \
         ON t.election_id = m.election_id AND t.token_hash = m.token_hash",
        &elections,
        &hashes
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(token_keys(
        known.into_iter().map(|r| (r.election_id, r.token_hash)),
    ))
}

/// The recorded votes' ballots, encrypted for the ballot box, in shuffled order so storage
/// order says nothing about arrival order within the batch.
#[tracing::instrument(skip_all)]
async fn insert_ballots(
    tx: &mut Tx<'_>,
    keys: &VoteKeys,
    tenant: &TenantId,
    votes: &[VoteMessage],
    recorded: &[usize],
) -> Result<(), sqlx::Error> {
    if recorded.is_empty() {
        return Ok(());
    }
    let mut order = recorded.to_vec();
    order.shuffle(&mut rand::thread_rng());
    let elections: Vec<Uuid> = order.iter().map(|&i| votes[i].election_id).collect();
    let sealed: Vec<Vec<u8>> = order
        .iter()
        .map(|&i| keys.encrypt_ballot(tenant, votes[i].election_id, &votes[i].choices))
        .collect();
    sqlx::query!(
        "INSERT INTO elections.ballot_box (org_id, election_id, sealed) \
         SELECT $1, m.election_id, m.sealed FROM unnest($2::uuid[], $3::bytea[]) AS m(election_id, sealed)",
        tenant.as_str(),
        &elections,
        &sealed
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sealed elections that just recorded a vote (accepted before their close, or triage would
/// have refused it): the seal is reopened so the worker seals them again with it.
fn elections_to_reseal(
    votes: &[VoteMessage],
    recorded: &[usize],
    elections: &HashMap<Uuid, Election>,
) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = recorded
        .iter()
        .map(|&i| votes[i].election_id)
        .filter(|id| elections.get(id).is_some_and(|e| e.sealed))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Every decided submission's outcome on its receipt, in receipt order (one lock order for
/// every writer); a recorded receipt is never downgraded.
#[tracing::instrument(skip_all)]
async fn upsert_receipts(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    votes: &[VoteMessage],
    indices: &[usize],
    outcomes: &[Outcome],
) -> Result<(), sqlx::Error> {
    let mut decided: BTreeMap<&str, (Uuid, Outcome)> = BTreeMap::new();
    for &i in indices {
        if outcomes[i] == Outcome::Duplicate {
            continue;
        }
        let entry = decided
            .entry(votes[i].receipt.as_str())
            .or_insert((votes[i].election_id, outcomes[i]));
        // One receipt twice in a batch (a redelivered copy): recorded wins.
        if outcomes[i] == Outcome::Recorded {
            entry.1 = Outcome::Recorded;
        }
    }
    if decided.is_empty() {
        return Ok(());
    }
    let receipts: Vec<&str> = decided.keys().copied().collect();
    let elections: Vec<Uuid> = decided.values().map(|(e, _)| *e).collect();
    let statuses: Vec<&str> = decided
        .values()
        .map(|(_, o)| {
            if *o == Outcome::Recorded {
                "recorded"
            } else {
                "rejected"
            }
        })
        .collect();
    let reasons: Vec<Option<&str>> = decided
        .values()
        .map(|(_, o)| match o {
            Outcome::Rejected(reason) => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    sqlx::query!(
        "INSERT INTO elections.receipts (receipt, org_id, election_id, status, reason) \
         SELECT m.receipt, $1, m.election_id, m.status, m.reason \
         FROM unnest($2::text[], $3::uuid[], $4::text[], $5::text[]) AS m(receipt, election_id, status, reason) \
         ON CONFLICT (receipt) DO UPDATE SET status = excluded.status, reason = excluded.reason \
         WHERE elections.receipts.status <> 'recorded'",
        tenant.as_str(),
        &receipts as &[&str],
        &elections,
        &statuses as &[&str],
        &reasons as &[Option<&str>]
    )
    .execute(&mut **tx)
    .await?;
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
