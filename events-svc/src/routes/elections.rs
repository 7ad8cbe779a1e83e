//! Election administration (admins), the list members vote from, and results (turnout before
//! the seal, tally after).
//!
//! Every change is written here and pushed to the elections side inside one database
//! transaction: if the push fails the change is rolled back and the caller gets a 503, so
//! the two sides never disagree about an election's status.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::domain::{
    ElectionDefinition, ElectionFields, ElectionKind, ElectionOption, ElectionStatus, Results,
    TenantId,
};
use shared::session::Role;
use shared::telemetry::CorrelationId;
use uuid::Uuid;

use super::{BAD_BODY, NOT_JSON, REFUSED, SESSION_401, SESSION_503, TOO_LARGE};
use crate::auth::Caller;
use crate::error::EventsError;
use crate::state::AppState;

mod store;

pub const MAX_TITLE: usize = 200;
pub const MAX_QUESTION: usize = 2000;
pub const MAX_LABEL: usize = 500;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "title": "Annual meeting", "question": "Adopt the budget?", "kind": "single",
    "options": [{"id": "yes", "label": "Yes"}, {"id": "no", "label": "No"}],
    "max_choices": 1, "opens_at": null, "closes_at": null
}))]
pub struct NewElection {
    pub title: String,
    pub question: String,
    pub kind: ElectionKind,
    pub options: Vec<ElectionOption>,
    pub max_choices: u32,
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Election {
    pub id: Uuid,
    pub title: String,
    pub question: String,
    pub kind: ElectionKind,
    pub options: Vec<ElectionOption>,
    pub max_choices: i32,
    /// `closed` once `closes_at` has passed, even before the close is recorded.
    pub status: ElectionStatus,
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
    /// Whether the caller already received a voting token for it.
    pub token_issued: bool,
}

/// The `{id}` of a path: a malformed one is a problem+json 400 like every other bad input,
/// not axum's plain-text answer.
pub fn election_id(id: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, EventsError> {
    id.map(|Path(id)| id)
        .map_err(|rejection| shared::problem::from_path_rejection(rejection).into())
}

impl Election {
    fn definition(&self, tenant: &TenantId) -> Result<ElectionDefinition, EventsError> {
        Ok(ElectionDefinition::new(ElectionFields {
            tenant: tenant.clone(),
            id: self.id,
            kind: self.kind,
            options: self.options.clone(),
            max_choices: self.max_choices as u32,
            status: self.status,
            opens_at: self.opens_at,
            closes_at: self.closes_at,
        })?)
    }
}

/// Create an election (draft). The elections side learns it before the answer.
#[utoipa::path(post, path = "/v1/elections", request_body = NewElection,
    security(("session" = [])),
    responses(
        (status = 401, description = SESSION_401, body = shared::Problem),
        (status = 201, description = "Created (draft)", body = Election),
        (status = 400, description = BAD_BODY, body = shared::Problem),
        (status = 403, description = "Not an admin", body = shared::Problem),
        (status = 413, description = TOO_LARGE, body = shared::Problem),
        (status = 415, description = NOT_JSON, body = shared::Problem),
        (status = 422, description = "The definition is not valid", body = shared::Problem),
        (status = 502, description = REFUSED, body = shared::Problem),
        (status = 503, description = "Elections side, database or session keys unavailable; nothing created (Retry-After)", body = shared::Problem),
        (status = 429, description = "Too many requests from this member or in total (`rate-limited`, Retry-After)", body = shared::Problem),
    ),
    tag = "elections")]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    correlation: CorrelationId,
    body: Result<Json<NewElection>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Election>), EventsError> {
    caller.require(Role::Admin)?;
    let Json(new) = body.map_err(shared::problem::from_json_rejection)?;
    let invalid = |detail: String| {
        EventsError::Domain(shared::domain::DomainError::InvalidDefinition(detail))
    };
    if new.title.trim().is_empty() || new.title.len() > MAX_TITLE {
        return Err(invalid(format!("a title is 1 to {MAX_TITLE} characters")));
    }
    if new.question.trim().is_empty() || new.question.len() > MAX_QUESTION {
        return Err(invalid(format!(
            "a question is 1 to {MAX_QUESTION} characters"
        )));
    }
    if new
        .options
        .iter()
        .any(|o| o.label.trim().is_empty() || o.label.len() > MAX_LABEL)
    {
        return Err(invalid(format!(
            "option labels are 1 to {MAX_LABEL} characters"
        )));
    }
    let definition = ElectionDefinition::new(ElectionFields {
        tenant: caller.0.org.clone(),
        id: Uuid::new_v4(),
        kind: new.kind,
        options: new.options,
        max_choices: new.max_choices,
        status: ElectionStatus::Draft,
        opens_at: new.opens_at,
        closes_at: new.closes_at,
    })?;
    let mut tx = shared::db::begin_for_tenant(&state.pool, &caller.0.org).await?;
    let election = store::insert(
        &mut tx,
        &definition,
        new.title.trim(),
        new.question.trim(),
        caller.0.sub,
    )
    .await?;
    state
        .elections
        .put_election(&definition, &correlation)
        .await?;
    tx.commit().await?;
    tracing::info!(election_id = %definition.id(), tenant = %caller.0.org, "election created");
    Ok((StatusCode::CREATED, Json(election)))
}

/// Open an election for voting (from draft).
#[utoipa::path(post, path = "/v1/elections/{id}/open",
    params(("id" = Uuid, Path, description = "The election")),
    security(("session" = [])),
    responses(
        (status = 401, description = SESSION_401, body = shared::Problem),
        (status = 200, description = "Open", body = Election),
        (status = 400, description = "The id is not a UUID (`invalid-path`)", body = shared::Problem),
        (status = 403, description = "Not an admin", body = shared::Problem),
        (status = 404, description = "No such election", body = shared::Problem),
        (status = 409, description = "A closed election cannot be reopened", body = shared::Problem),
        (status = 502, description = REFUSED, body = shared::Problem),
        (status = 503, description = "Elections side, database or session keys unavailable, or voting tokens not set up for the organisation (`tenant-not-configured`); nothing changed (Retry-After)", body = shared::Problem),
        (status = 429, description = "Too many requests from this member or in total (`rate-limited`, Retry-After)", body = shared::Problem),
    ),
    tag = "elections")]
pub async fn open(
    state: State<AppState>,
    caller: Caller,
    correlation: CorrelationId,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Election>, EventsError> {
    transition(
        state,
        caller,
        correlation,
        election_id(id)?,
        ElectionStatus::Open,
    )
    .await
}

/// Close an election: no vote is accepted after this; results become final once the
/// queue has drained.
#[utoipa::path(post, path = "/v1/elections/{id}/close",
    params(("id" = Uuid, Path, description = "The election")),
    security(("session" = [])),
    responses(
        (status = 401, description = SESSION_401, body = shared::Problem),
        (status = 200, description = "Closed", body = Election),
        (status = 400, description = "The id is not a UUID (`invalid-path`)", body = shared::Problem),
        (status = 403, description = "Not an admin", body = shared::Problem),
        (status = 404, description = "No such election", body = shared::Problem),
        (status = 502, description = REFUSED, body = shared::Problem),
        (status = 503, description = "Elections side, database or session keys unavailable; nothing changed (Retry-After)", body = shared::Problem),
        (status = 429, description = "Too many requests from this member or in total (`rate-limited`, Retry-After)", body = shared::Problem),
    ),
    tag = "elections")]
pub async fn close(
    state: State<AppState>,
    caller: Caller,
    correlation: CorrelationId,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Election>, EventsError> {
    transition(
        state,
        caller,
        correlation,
        election_id(id)?,
        ElectionStatus::Closed,
    )
    .await
}

async fn transition(
    State(state): State<AppState>,
    caller: Caller,
    correlation: CorrelationId,
    id: Uuid,
    to: ElectionStatus,
) -> Result<Json<Election>, EventsError> {
    caller.require(Role::Admin)?;
    let tenant = &caller.0.org;
    let mut tx = shared::db::begin_for_tenant(&state.pool, tenant).await?;
    let mut election = store::lock(&mut tx, id)
        .await?
        .ok_or(EventsError::UnknownElection)?;
    match (election.status, to) {
        // Repeating a transition is a no-op, so an admin's retry is safe.
        (a, b) if a == b => return Ok(Json(election)),
        (ElectionStatus::Closed, _) => {
            return Err(EventsError::Conflict(
                "a closed election cannot be reopened",
            ))
        }
        _ => {}
    }
    if to == ElectionStatus::Open {
        // Every member's token hash reaches the elections side now, in one shuffled batch,
        // before anyone can ask for a token (see `crate::slots`).
        crate::slots::register_at_open(&state, &mut tx, tenant, id, &correlation).await?;
    }
    store::set_status(&mut tx, id, to).await?;
    election.status = to;
    state
        .elections
        .put_election(&election.definition(tenant)?, &correlation)
        .await?;
    tx.commit().await?;
    tracing::info!(election_id = %id, tenant = %tenant, status = to.as_str(), "election status changed");
    Ok(Json(election))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `open` (default), or for admins `draft`, `closed` or `all`.
    pub status: Option<String>,
}

/// Elections of the caller's organisation: open ones for members; admins may ask for others.
#[utoipa::path(get, path = "/v1/elections", params(ListQuery),
    security(("session" = [])),
    responses(
        (status = 401, description = SESSION_401, body = shared::Problem),
        (status = 200, description = "Elections", body = Vec<Election>),
        (status = 400, description = "Unknown status filter", body = shared::Problem),
        (status = 403, description = "Only admins see drafts and closed elections", body = shared::Problem),
        (status = 503, description = SESSION_503, body = shared::Problem),
        (status = 429, description = "Too many requests from this member or in total (`rate-limited`, Retry-After)", body = shared::Problem),
    ),
    tag = "elections")]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Election>>, EventsError> {
    let Query(query) =
        query.map_err(|e| shared::Problem::bad_request("invalid-query", e.body_text()))?;
    let filter = match query.status.as_deref().unwrap_or("open") {
        "all" => None,
        status => Some(ElectionStatus::parse(status).map_err(|_| {
            shared::Problem::bad_request("invalid-query", "status is open, draft, closed or all")
        })?),
    };
    if filter != Some(ElectionStatus::Open) {
        caller.require(Role::Admin)?;
    }
    let mut tx = shared::db::begin_for_tenant(&state.pool, &caller.0.org).await?;
    let elections = store::list(&mut tx, caller.0.sub, filter).await?;
    tx.commit().await?;
    Ok(Json(elections))
}

/// One election of the caller's organisation.
#[utoipa::path(get, path = "/v1/elections/{id}",
    params(("id" = Uuid, Path, description = "The election")),
    security(("session" = [])),
    responses(
        (status = 401, description = SESSION_401, body = shared::Problem),
        (status = 200, description = "The election", body = Election),
        (status = 400, description = "The id is not a UUID (`invalid-path`)", body = shared::Problem),
        (status = 403, description = "Only admins see drafts", body = shared::Problem),
        (status = 404, description = "No such election in your organisation", body = shared::Problem),
        (status = 429, description = "Too many requests from this member or in total (`rate-limited`, Retry-After)", body = shared::Problem),
        (status = 503, description = SESSION_503, body = shared::Problem),
    ),
    tag = "elections")]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Election>, EventsError> {
    let id = election_id(id)?;
    let election = load(&state, &caller, id).await?;
    if election.status == ElectionStatus::Draft {
        caller.require(Role::Admin)?;
    }
    Ok(Json(election))
}

pub async fn load(state: &AppState, caller: &Caller, id: Uuid) -> Result<Election, EventsError> {
    let mut tx = shared::db::begin_for_tenant(&state.pool, &caller.0.org).await?;
    let election = store::get(&mut tx, id, caller.0.sub).await?;
    tx.commit().await?;
    election.ok_or(EventsError::UnknownElection)
}

/// Turnout before the seal, tally after. Admins may read the results at any time, members
/// once the election is closed. Until the ballots are sealed (after the close, once the queue
/// has drained) the answer holds only the turnout (`total`, `used_tokens`) and an empty
/// `tally`, for everyone: a per-option count while votes come in would let an observer pair
/// a voter with a choice. After the seal it holds the tally; `final` is true when the sealed
/// ballots equal the used tokens (otherwise `integrity_problem` says why not).
#[utoipa::path(get, path = "/v1/elections/{id}/results",
    params(("id" = Uuid, Path, description = "The election")),
    security(("session" = [])),
    responses(
        (status = 401, description = SESSION_401, body = shared::Problem),
        (status = 200, description = "Turnout before the seal (`sealed` false, empty `tally`), tally after (`sealed` true; `final` unless `integrity_problem`)", body = Results),
        (status = 400, description = "The id is not a UUID (`invalid-path`)", body = shared::Problem),
        (status = 403, description = "Members read results only after the close", body = shared::Problem),
        (status = 404, description = "No such election in your organisation", body = shared::Problem),
        (status = 502, description = "`elections-side-refused`: the elections side refused the read", body = shared::Problem),
        (status = 503, description = "Elections side, database or session keys unavailable (Retry-After)", body = shared::Problem),
        (status = 429, description = "Too many requests from this member or in total (`rate-limited`, Retry-After)", body = shared::Problem),
    ),
    tag = "elections")]
pub async fn results(
    State(state): State<AppState>,
    caller: Caller,
    correlation: CorrelationId,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Results>, EventsError> {
    let id = election_id(id)?;
    let election = load(&state, &caller, id).await?;
    if election.status != ElectionStatus::Closed && !caller.0.has(Role::Admin) {
        return Err(shared::Problem::new(
            StatusCode::FORBIDDEN,
            "results-not-published",
            "Forbidden",
            "results are published when the election closes",
        )
        .into());
    }
    let mut results = state
        .elections
        .results(&caller.0.org, id, &correlation)
        .await?;
    if !results.sealed && !results.tally.is_empty() {
        // The elections side sends no tally before the seal; should one ever come (an older
        // or faulty elections side), it does not leave this service.
        tracing::error!(election_id = %id, tenant = %caller.0.org,
            "the elections side sent a tally for an unsealed election; withheld");
        results.tally.clear();
    }
    Ok(Json(results))
}
