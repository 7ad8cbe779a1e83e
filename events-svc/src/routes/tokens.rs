//! `POST /v1/elections/{id}/token`: a member's one voting token for an election.
//!
//! In one transaction: record that the member received a token (the primary key makes a
//! second request a 409, also under concurrency), take the election's next token slot, sign a
//! token carrying that slot's id, commit, and only then hand the token out. The slot's hash was
//! registered with the elections side in advance, in a shuffled batch (`crate::slots`), so
//! there is no call to the elections side here and nothing is written, on either side, in an
//! order that pairs this member with the token's hash. If the slots have run out, the
//! transaction is rolled back, more are registered with no transaction open (a slow elections
//! side holds no connection or lock), and the issuance starts again; if the registration fails
//! the member gets a 503 and may ask again, never a token that cannot vote.
//!
//! The events schema records *that* the member received a token, never the token, its id or
//! its hash.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use shared::domain::{DomainError, ElectionStatus, TenantId};
use shared::session::Role;
use shared::telemetry::CorrelationId;
use sqlx::PgConnection;
use uuid::Uuid;

use super::SESSION_401;
use crate::auth::Caller;
use crate::error::EventsError;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedToken {
    /// The voting token: send it to ingest as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub election_id: Uuid,
}

/// Issue the caller's voting token for an open election, once.
#[utoipa::path(post, path = "/v1/elections/{id}/token",
    params(("id" = Uuid, Path, description = "The election")),
    security(("session" = [])),
    responses(
        (status = 401, description = SESSION_401, body = shared::Problem),
        (status = 201, description = "The voting token (Cache-Control: no-store)", body = IssuedToken),
        (status = 400, description = "The id is not a UUID (`invalid-path`)", body = shared::Problem),
        (status = 403, description = "The election is not open, or the caller is no longer in the member registry (`not-a-member`)", body = shared::Problem),
        (status = 404, description = "No such election in your organisation", body = shared::Problem),
        (status = 409, description = "A token was already issued to this member", body = shared::Problem),
        (status = 502, description = "`elections-side-refused`: the elections side refused more token slots; no token issued", body = shared::Problem),
        (status = 503, description = "Elections side, database or session keys unavailable, voting tokens not set up for the organisation (`tenant-not-configured`), or more being prepared (`token-slots-busy`); no token issued (Retry-After)", body = shared::Problem),
        (status = 429, description = "Too many requests from this member or in total (`rate-limited`, Retry-After)", body = shared::Problem),
    ),
    tag = "tokens")]
pub async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    correlation: CorrelationId,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<impl IntoResponse, EventsError> {
    let id = crate::routes::elections::election_id(id)?;
    let outcome = issue_token(&state, &caller, &correlation, id).await;
    let label = match &outcome {
        Ok(_) => "issued".to_owned(),
        Err(e) => e.to_problem().slug().to_owned(),
    };
    state.tokens.with_label_values(&[&label]).inc();
    let issued = outcome?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(issued),
    ))
}

async fn issue_token(
    state: &AppState,
    caller: &Caller,
    correlation: &CorrelationId,
    id: Uuid,
) -> Result<IssuedToken, EventsError> {
    caller.require(Role::Member)?;
    // Each round hands out a registered slot or registers more first; other members may take
    // the new ones in between, so a few rounds, then a 503 to retry.
    for _ in 0..ISSUE_ROUNDS {
        if let Some(issued) = try_issue(state, caller, id).await? {
            return Ok(issued);
        }
        crate::slots::register_more(state, &caller.0.org, id, correlation).await?;
    }
    Err(shared::Problem::unavailable(
        "token-slots-busy",
        "voting tokens for this election are being prepared; try again",
        1,
    )
    .into())
}

/// How many times one request tries to take a slot, registering more in between.
const ISSUE_ROUNDS: usize = 3;

/// One attempt, in one transaction: the token, or `None` (nothing written) when every
/// registered slot is taken.
async fn try_issue(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Option<IssuedToken>, EventsError> {
    let tenant = &caller.0.org;
    let mut tx = shared::db::begin_for_tenant(&state.pool, tenant).await?;
    let now = Utc::now();
    let window = votable_window(&mut tx, caller.0.sub, id, now).await?;
    let signer = state.settings.token_signers.get(tenant).ok_or_else(|| {
        tracing::error!(tenant = %tenant, "VOTING_TOKEN_SIGNING_KEYS has no key for this tenant");
        EventsError::TenantNotConfigured
    })?;
    // Fail before anything is written (an election's own key is checked when its slot is taken).
    crate::slots::current_key(state, tenant)?;
    record_issuance(&mut tx, tenant, id, caller.0.sub).await?;
    let ttl = Duration::from_std(state.settings.token_ttl).unwrap_or(Duration::hours(12));
    let expires_at = window
        .closes_at
        .map_or(now + ttl, |close| close.min(now + ttl));
    // A minute of slack for clocks; never earlier than the election opens.
    let not_before = window.opens_at.map_or(now, |open| open.max(now)) - Duration::seconds(60);
    let Some((slot, key)) = crate::slots::take(state, &mut tx, tenant, id).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    let (token, _) = signer.issue_with_id(id, &key.token_id(id, slot), not_before, expires_at);
    tx.commit().await?;
    Ok(Some(IssuedToken {
        token,
        expires_at,
        election_id: id,
    }))
}

/// When an election opens and closes.
struct Window {
    opens_at: Option<DateTime<Utc>>,
    closes_at: Option<DateTime<Utc>>,
}

/// The window of election `id` if `member` may have its token at `now`: still a member, the
/// election their tenant's, open and not past its close.
async fn votable_window(
    tx: &mut PgConnection,
    member: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Window, EventsError> {
    // The session says who the member was when they logged in; the registry says whether they
    // still are (a member removed since then gets no token; security review L15).
    let active = sqlx::query_scalar!(
        r#"SELECT members.is_active_member($1) AS "active!""#,
        member
    )
    .fetch_one(&mut *tx)
    .await?;
    if !active {
        return Err(EventsError::NotAMember);
    }
    // The election first: another tenant's (or no) election is a 404 for everyone, whether or
    // not the caller's tenant has keys yet.
    let election = sqlx::query!(
        "SELECT status, opens_at, closes_at FROM events.elections WHERE id = $1",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(EventsError::UnknownElection)?;
    let status = ElectionStatus::parse(&election.status)?;
    if status != ElectionStatus::Open {
        return Err(DomainError::NotOpen(status).into());
    }
    if election.closes_at.is_some_and(|t| now >= t) {
        return Err(DomainError::OutsideWindow.into());
    }
    Ok(Window {
        opens_at: election.opens_at,
        closes_at: election.closes_at,
    })
}

/// Records that `member` received their token for election `id`; the primary key makes a
/// second time, also a concurrent one, a `TokenAlreadyIssued`.
async fn record_issuance(
    tx: &mut PgConnection,
    tenant: &TenantId,
    id: Uuid,
    member: Uuid,
) -> Result<(), EventsError> {
    let first = sqlx::query!(
        "INSERT INTO events.token_issuance (org_id, election_id, member_id) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
        tenant.as_str(),
        id,
        member
    )
    .execute(tx)
    .await?
    .rows_affected()
        == 1;
    if first {
        Ok(())
    } else {
        Err(EventsError::TokenAlreadyIssued)
    }
}
