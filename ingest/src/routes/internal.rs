//! Internal API for events-svc, behind the S2S signature layer. The caller's tenant comes from
//! its key, never from the request, so a tenant can only touch its own elections. Each handler
//! appends its event to the caller's audit chain (`shared::audit`: which key, which election,
//! counts) in the transaction that has its effect, as the last step before the commit.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::audit::{Event, NewEntry};
use shared::domain::{
    ElectionDefinition, ElectionFields, ElectionKind, ElectionOption, ElectionStatus, TokenHash,
};
use shared::s2s::S2sCaller;
use shared::Problem;
use uuid::Uuid;

use crate::error::IngestError;
use crate::state::AppState;

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

// What the S2S layer (shared::s2s::verify_layer) answers on every internal route.
const S2S_401: &str = "`s2s-unauthorized`: missing or bad signature, unknown key, timestamp outside the window, or a nonce already spent (on any instance)";
const S2S_422: &str =
    "`idempotency-key-reused`: the idempotency key was used for a different request";
const S2S_503: &str = "`in-progress` (the first request with this idempotency key is still running), `s2s-unavailable` (the replay check could not reach the database) or a database problem; retry (Retry-After)";
const S2S_413: &str = "`body-too-large`: over the internal limit (4 MiB)";
const BAD_PATH: &str = "`invalid-path`: the id is not a UUID";
const NOT_JSON: &str = "`unsupported-media-type`: the body is not `application/json`";

/// The id in the path, or a problem naming what is wrong with it (axum's own answer is plain text).
fn election_id(id: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, IngestError> {
    let Path(id) = id.map_err(shared::problem::from_path_rejection)?;
    Ok(id)
}

/// Most token hashes accepted in one registration call.
pub const MAX_TOKENS_PER_CALL: usize = 10_000;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "kind": "single", "options": [{"id": "yes", "label": "Yes"}, {"id": "no", "label": "No"}],
    "max_choices": 1, "status": "draft", "opens_at": null, "closes_at": null
}))]
pub struct ElectionPut {
    pub kind: ElectionKind,
    pub options: Vec<ElectionOption>,
    pub max_choices: u32,
    pub status: ElectionStatus,
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ElectionStored {
    pub election_id: Uuid,
    /// The status now stored.
    pub status: ElectionStatus,
}

/// Create or update an election's definition and status (idempotent). The status only moves
/// forward (draft, open, closed); repeating the current one changes nothing.
#[utoipa::path(put, path = "/internal/v1/elections/{id}", request_body = ElectionPut,
    params(("id" = Uuid, Path, description = "The election")),
    security(("s2s" = [])),
    responses(
        (status = 200, description = "Stored (or already so)", body = ElectionStored),
        (status = 400, description = "`invalid-path` (the id is not a UUID), `malformed-json` or `invalid-body` (not an election), `invalid-request` (an election no ballot could be cast in: options, max_choices, window)", body = shared::Problem),
        (status = 401, description = S2S_401, body = shared::Problem),
        (status = 409, description = "Change not allowed: `conflict` (the ballot of an opened election), `status-regression` (back to an earlier status)", body = shared::Problem),
        (status = 413, description = S2S_413, body = shared::Problem),
        (status = 415, description = NOT_JSON, body = shared::Problem),
        (status = 422, description = S2S_422, body = shared::Problem),
        (status = 503, description = S2S_503, body = shared::Problem),
    ),
    tag = "internal")]
pub async fn put_election(
    State(state): State<AppState>,
    caller: S2sCaller,
    id: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<ElectionPut>, JsonRejection>,
) -> Result<Json<ElectionStored>, IngestError> {
    let id = election_id(id)?;
    let Json(put) = body.map_err(shared::problem::from_json_rejection)?;
    let definition = ElectionDefinition::new(ElectionFields {
        tenant: caller.tenant.clone(),
        id,
        kind: put.kind,
        options: put.options,
        max_choices: put.max_choices,
        status: put.status,
        opens_at: put.opens_at,
        closes_at: put.closes_at,
    })?;
    let mut tx = shared::db::begin_for_tenant(&state.pool, &caller.tenant).await?;
    let previous = stored_status(&mut tx, &definition).await?;
    store(&mut tx, &definition, previous).await?;
    let summary = json!({
        "status": definition.status().as_str(),
        "previous": previous.map(ElectionStatus::as_str),
    });
    audit(&state, &mut tx, &caller, Event::ElectionPushed, id, summary).await?;
    tx.commit().await?;
    let status = definition.status();
    state.definitions.put(definition);
    Ok(Json(ElectionStored {
        election_id: id,
        status,
    }))
}

/// The election's stored status (locked until the commit), after checking that an opened
/// election keeps its ballot. `None`: not stored yet.
async fn stored_status(
    tx: &mut Tx<'_>,
    definition: &ElectionDefinition,
) -> Result<Option<ElectionStatus>, IngestError> {
    let existing = sqlx::query!(
        r#"SELECT status AS "status: ElectionStatus", kind AS "kind: ElectionKind", options,
                  max_choices
             FROM elections.elections WHERE id = $1 FOR UPDATE"#,
        definition.id()
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some(existing) = existing else {
        return Ok(None);
    };
    let same_ballot = existing.kind == definition.kind()
        && existing.options == options_json(definition)
        && existing.max_choices as u32 == definition.max_choices();
    if existing.status != ElectionStatus::Draft && !same_ballot {
        return Err(conflict("the options of an election cannot change once it was opened").into());
    }
    Ok(Some(existing.status))
}

fn options_json(definition: &ElectionDefinition) -> serde_json::Value {
    serde_json::to_value(definition.options()).unwrap_or_default()
}

/// Upserts the definition. The status only moves forward, checked by the upsert itself so
/// that concurrent pushes (a late create racing the open) cannot get past it: a regression
/// updates no row.
async fn store(
    tx: &mut Tx<'_>,
    definition: &ElectionDefinition,
    previous: Option<ElectionStatus>,
) -> Result<(), IngestError> {
    let stored = sqlx::query!(
        "INSERT INTO elections.elections (org_id, id, kind, options, max_choices, status, opens_at, closes_at, closed_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $6 = 'closed' THEN now() END, now()) \
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, options = excluded.options, \
             max_choices = excluded.max_choices, status = excluded.status, opens_at = excluded.opens_at, \
             closes_at = excluded.closes_at, \
             closed_at = COALESCE(elections.elections.closed_at, excluded.closed_at), updated_at = now() \
         WHERE array_position(ARRAY['draft', 'open', 'closed'], elections.elections.status) \
            <= array_position(ARRAY['draft', 'open', 'closed'], excluded.status)",
        definition.tenant().as_str(),
        definition.id(),
        definition.kind().as_str(),
        options_json(definition),
        definition.max_choices() as i32,
        definition.status().as_str(),
        definition.opens_at(),
        definition.closes_at(),
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if stored == 0 {
        let current = previous.map_or("further along", ElectionStatus::as_str);
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "status-regression",
            "Conflict",
            format!(
                "the election is already {current}; its status only moves forward (draft, open, closed)"
            ),
        )
        .into());
    }
    Ok(())
}

/// Appends the request's event to the caller's audit chain, in `tx` (last, before the commit).
async fn audit(
    state: &AppState,
    tx: &mut Tx<'_>,
    caller: &S2sCaller,
    event: Event,
    election_id: Uuid,
    summary: serde_json::Value,
) -> Result<(), IngestError> {
    let entry = NewEntry {
        event,
        election_id: Some(election_id),
        actor: &caller.key_id,
        summary,
    };
    shared::audit::append(tx, &state.settings.audit_key, &caller.tenant, entry).await?;
    Ok(())
}

fn conflict(detail: &str) -> Problem {
    Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "token_hashes": ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
}))]
pub struct TokenRegistration {
    /// sha256 of each token id, hex.
    pub token_hashes: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokensRegistered {
    pub election_id: Uuid,
    /// Hashes new to the election (the others were registered before).
    pub registered: u64,
    /// Hashes in the request.
    pub received: u64,
}

/// Register voting-token hashes for an election (idempotent; duplicates are ignored).
#[utoipa::path(post, path = "/internal/v1/elections/{id}/tokens", request_body = TokenRegistration,
    params(("id" = Uuid, Path, description = "The election")),
    security(("s2s" = [])),
    responses(
        (status = 200, description = "Registered", body = TokensRegistered),
        (status = 400, description = "`invalid-path` (the id is not a UUID), `malformed-json` or `invalid-body`, `invalid-token-hashes` (none, or more than 10,000), `invalid-request` (a hash is not 64 hexadecimal characters)", body = shared::Problem),
        (status = 401, description = S2S_401, body = shared::Problem),
        (status = 404, description = "`not-found`: no such election of the caller's organisation", body = shared::Problem),
        (status = 409, description = "`conflict`: the election is closed", body = shared::Problem),
        (status = 413, description = S2S_413, body = shared::Problem),
        (status = 415, description = NOT_JSON, body = shared::Problem),
        (status = 422, description = S2S_422, body = shared::Problem),
        (status = 503, description = S2S_503, body = shared::Problem),
    ),
    tag = "internal")]
pub async fn register_tokens(
    State(state): State<AppState>,
    caller: S2sCaller,
    id: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<TokenRegistration>, JsonRejection>,
) -> Result<Json<TokensRegistered>, IngestError> {
    let id = election_id(id)?;
    let Json(registration) = body.map_err(shared::problem::from_json_rejection)?;
    if registration.token_hashes.is_empty() || registration.token_hashes.len() > MAX_TOKENS_PER_CALL
    {
        return Err(Problem::bad_request(
            "invalid-token-hashes",
            format!("send 1 to {MAX_TOKENS_PER_CALL} token hashes per call"),
        )
        .into());
    }
    let hashes = registration
        .token_hashes
        .iter()
        .map(|h| TokenHash::from_hex(h).map(|h| h.0.to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tx = shared::db::begin_for_tenant(&state.pool, &caller.tenant).await?;
    let status = sqlx::query_scalar!(
        r#"SELECT status AS "status: ElectionStatus" FROM elections.elections WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    match status {
        None => return Err(IngestError::UnknownElection),
        Some(ElectionStatus::Closed) => return Err(conflict("the election is closed").into()),
        Some(_) => {}
    }
    let inserted = sqlx::query!(
        "INSERT INTO elections.voting_tokens (org_id, election_id, token_hash) \
         SELECT $1, $2, h FROM unnest($3::bytea[]) AS h ON CONFLICT DO NOTHING",
        caller.tenant.as_str(),
        id,
        &hashes,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    audit(
        &state,
        &mut tx,
        &caller,
        Event::TokensRegistered,
        id,
        json!({"received": hashes.len(), "registered": inserted}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(TokensRegistered {
        election_id: id,
        registered: inserted,
        received: hashes.len() as u64,
    }))
}

pub use shared::domain::Results;

/// Tally of an election.
#[utoipa::path(get, path = "/internal/v1/elections/{id}/results",
    params(("id" = Uuid, Path, description = "The election")),
    security(("s2s" = [])),
    responses(
        (status = 200, description = "Turnout, and once sealed the tally", body = Results),
        (status = 400, description = BAD_PATH, body = shared::Problem),
        (status = 401, description = S2S_401, body = shared::Problem),
        (status = 404, description = "`not-found`: no such election of the caller's organisation", body = shared::Problem),
        (status = 503, description = S2S_503, body = shared::Problem),
    ),
    tag = "internal")]
pub async fn results(
    State(state): State<AppState>,
    caller: S2sCaller,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Results>, IngestError> {
    let id = election_id(id)?;
    let mut tx = shared::db::begin_for_tenant(&state.pool, &caller.tenant).await?;
    let results = count(&mut tx, id).await?;
    let summary = json!({"sealed": results.sealed, "total": results.total, "used_tokens": results.used_tokens});
    audit(&state, &mut tx, &caller, Event::ResultsRead, id, summary).await?;
    tx.commit().await?;
    if results.integrity_problem.is_some() {
        tracing::error!(election_id = %id, tenant = %caller.tenant, total = results.total,
            used_tokens = results.used_tokens,
            "sealed ballots differ from used tokens; results withheld from final");
    }
    Ok(Json(results))
}

/// Turnout and used tokens; once sealed the tally and whether the two figures agree.
async fn count(tx: &mut Tx<'_>, id: Uuid) -> Result<Results, IngestError> {
    let election = sqlx::query!(
        r#"SELECT kind AS "kind: ElectionKind", options, sealed_at
             FROM elections.elections WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(IngestError::UnknownElection)?;
    let counted = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM elections.ballots WHERE election_id = $1)
                + (SELECT count(*) FROM elections.ballot_box WHERE election_id = $1) AS "total!",
                  (SELECT count(*) FROM elections.voting_tokens WHERE election_id = $1 AND used)
                  AS "used_tokens!""#,
        id
    )
    .fetch_one(&mut **tx)
    .await?;
    let (total, used_tokens) = (counted.total, counted.used_tokens);
    let sealed = election.sealed_at.is_some();
    let tally = if sealed {
        tally(tx, id, election.kind, election.options).await?
    } else {
        BTreeMap::new()
    };
    let integrity_problem = (sealed && total != used_tokens).then(|| {
        format!(
            "{total} ballots are sealed but {used_tokens} voting tokens were used: a ballot was \
             added or removed outside the vote path; these results are not final"
        )
    });
    Ok(Results {
        election_id: id,
        total,
        tally,
        is_final: sealed && integrity_problem.is_none(),
        sealed,
        used_tokens,
        integrity_problem,
    })
}

/// Every option with its count (zero included). Ranked ballots count their first preference;
/// the others count every option named.
async fn tally(
    tx: &mut Tx<'_>,
    id: Uuid,
    kind: ElectionKind,
    options: serde_json::Value,
) -> Result<BTreeMap<String, i64>, IngestError> {
    let counts: Vec<(String, i64)> = if kind == ElectionKind::Ranked {
        sqlx::query!(
            r#"SELECT choices[1] AS "option!", count(*) AS "count!"
                 FROM elections.ballots WHERE election_id = $1 GROUP BY 1"#,
            id
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| (r.option, r.count))
        .collect()
    } else {
        sqlx::query!(
            r#"SELECT c AS "option!", count(*) AS "count!"
                 FROM elections.ballots, unnest(choices) AS c WHERE election_id = $1 GROUP BY 1"#,
            id
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| (r.option, r.count))
        .collect()
    };
    let mut tally: BTreeMap<String, i64> = serde_json::from_value::<Vec<ElectionOption>>(options)
        .unwrap_or_default()
        .into_iter()
        .map(|o| (o.id, 0))
        .collect();
    tally.extend(counts);
    Ok(tally)
}
