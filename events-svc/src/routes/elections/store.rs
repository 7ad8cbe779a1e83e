//! The queries behind the election routes, each returning checked [`Election`]s.
//!
//! An open election whose `closes_at` has passed is shown closed: the elections side closes and
//! seals it by itself at that instant (`elections.close_due`). Every query that answers with an
//! election computes its status with the same
//!   `CASE WHEN e.status = 'open' AND e.closes_at <= now() THEN 'closed' ELSE e.status END`
//! (the query macros take string literals only, so it cannot be a shared constant).

use chrono::{DateTime, Utc};
use shared::domain::{
    DomainError, ElectionDefinition, ElectionKind, ElectionOption, ElectionStatus,
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Election;
use crate::error::EventsError;

/// An election as the queries read it: `kind` and `status` are text columns, checked into an
/// [`Election`] before anything else sees them.
struct ElectionRecord {
    id: Uuid,
    title: String,
    question: String,
    kind: String,
    options: sqlx::types::Json<Vec<ElectionOption>>,
    max_choices: i32,
    status: String,
    opens_at: Option<DateTime<Utc>>,
    closes_at: Option<DateTime<Utc>>,
    token_issued: bool,
}

impl TryFrom<ElectionRecord> for Election {
    type Error = EventsError;

    /// The table's CHECK constraints admit only known values: a row that still does not parse
    /// was edited by hand, and is a logged 500, not an answer with a value no client knows.
    fn try_from(row: ElectionRecord) -> Result<Self, EventsError> {
        let unusable = |e: DomainError| {
            tracing::error!(election_id = %row.id, error = %e, "stored election is unusable");
            EventsError::from(shared::Problem::internal())
        };
        Ok(Self {
            kind: ElectionKind::parse(&row.kind).map_err(unusable)?,
            status: ElectionStatus::parse(&row.status).map_err(unusable)?,
            id: row.id,
            title: row.title,
            question: row.question,
            options: row.options.0,
            max_choices: row.max_choices,
            opens_at: row.opens_at,
            closes_at: row.closes_at,
            token_issued: row.token_issued,
        })
    }
}

/// A new election, a draft whatever its window says, as `created_by` defined it.
pub async fn insert(
    tx: &mut PgConnection,
    definition: &ElectionDefinition,
    title: &str,
    question: &str,
    created_by: Uuid,
) -> Result<Election, EventsError> {
    sqlx::query_as!(
        ElectionRecord,
        r#"INSERT INTO events.elections AS e
               (org_id, id, title, question, kind, options, max_choices, opens_at, closes_at,
                created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           RETURNING e.id, e.title, e.question, e.kind,
               e.options AS "options: sqlx::types::Json<Vec<ElectionOption>>", e.max_choices,
               e.status, e.opens_at, e.closes_at, false AS "token_issued!""#,
        definition.tenant().as_str(),
        definition.id(),
        title,
        question,
        definition.kind().as_str(),
        sqlx::types::Json(definition.options()) as _,
        definition.max_choices() as i32,
        definition.opens_at(),
        definition.closes_at(),
        created_by,
    )
    .fetch_one(tx)
    .await?
    .try_into()
}

/// The election, its row locked until the transaction ends (`token_issued` is not read).
pub async fn lock(tx: &mut PgConnection, id: Uuid) -> Result<Option<Election>, EventsError> {
    sqlx::query_as!(
        ElectionRecord,
        r#"SELECT e.id, e.title, e.question, e.kind,
               e.options AS "options: sqlx::types::Json<Vec<ElectionOption>>", e.max_choices,
               CASE WHEN e.status = 'open' AND e.closes_at <= now() THEN 'closed'
                    ELSE e.status END AS "status!",
               e.opens_at, e.closes_at, false AS "token_issued!"
           FROM events.elections e WHERE e.id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(tx)
    .await?
    .map(Election::try_from)
    .transpose()
}

pub async fn set_status(tx: &mut PgConnection, id: Uuid, to: ElectionStatus) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE events.elections SET status = $2, updated_at = now() WHERE id = $1",
        id,
        to.as_str()
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The tenant's newest 500 elections with status `filter` (all if `None`), and whether
/// `member` received a token for each.
pub async fn list(
    tx: &mut PgConnection,
    member: Uuid,
    filter: Option<ElectionStatus>,
) -> Result<Vec<Election>, EventsError> {
    sqlx::query_as!(
        ElectionRecord,
        r#"SELECT e.id, e.title, e.question, e.kind,
               e.options AS "options: sqlx::types::Json<Vec<ElectionOption>>", e.max_choices,
               CASE WHEN e.status = 'open' AND e.closes_at <= now() THEN 'closed'
                    ELSE e.status END AS "status!",
               e.opens_at, e.closes_at, (t.member_id IS NOT NULL) AS "token_issued!"
           FROM events.elections e
           LEFT JOIN events.token_issuance t ON t.election_id = e.id AND t.member_id = $1
           WHERE $2::text IS NULL
              OR CASE WHEN e.status = 'open' AND e.closes_at <= now() THEN 'closed'
                      ELSE e.status END = $2
           ORDER BY e.created_at DESC LIMIT 500"#,
        member,
        filter.map(ElectionStatus::as_str)
    )
    .fetch_all(tx)
    .await?
    .into_iter()
    .map(Election::try_from)
    .collect()
}

/// One election of the tenant, and whether `member` received a token for it.
pub async fn get(
    tx: &mut PgConnection,
    id: Uuid,
    member: Uuid,
) -> Result<Option<Election>, EventsError> {
    sqlx::query_as!(
        ElectionRecord,
        r#"SELECT e.id, e.title, e.question, e.kind,
               e.options AS "options: sqlx::types::Json<Vec<ElectionOption>>", e.max_choices,
               CASE WHEN e.status = 'open' AND e.closes_at <= now() THEN 'closed'
                    ELSE e.status END AS "status!",
               e.opens_at, e.closes_at, (t.member_id IS NOT NULL) AS "token_issued!"
           FROM events.elections e
           LEFT JOIN events.token_issuance t ON t.election_id = e.id AND t.member_id = $2
           WHERE e.id = $1"#,
        id,
        member
    )
    .fetch_optional(tx)
    .await?
    .map(Election::try_from)
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, status: &str) -> ElectionRecord {
        ElectionRecord {
            id: Uuid::new_v4(),
            title: "t".into(),
            question: "q".into(),
            kind: kind.into(),
            options: sqlx::types::Json(vec![ElectionOption {
                id: "yes".into(),
                label: "Yes".into(),
            }]),
            max_choices: 1,
            status: status.into(),
            opens_at: None,
            closes_at: None,
            token_issued: false,
        }
    }

    #[test]
    fn an_answer_shows_kind_and_status_as_the_strings_stored() {
        for kind in ["single", "multiple", "ranked"] {
            for status in ["draft", "open", "closed"] {
                let election = Election::try_from(record(kind, status)).expect("known values");
                let json = serde_json::to_value(&election).expect("serializable");
                assert_eq!(
                    (json["kind"].as_str(), json["status"].as_str()),
                    (Some(kind), Some(status))
                );
                assert_eq!(json["options"][0]["id"], "yes");
            }
        }
    }

    #[test]
    fn a_row_with_an_unknown_kind_or_status_is_an_internal_error() {
        for (kind, status) in [("approval", "open"), ("single", "sealed")] {
            let refused = Election::try_from(record(kind, status)).expect_err("unknown value");
            assert_eq!(refused.to_problem().status, 500, "{kind} {status}");
        }
    }
}
