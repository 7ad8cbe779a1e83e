//! The live queue flag (ops role). Every ingest instance follows it within its poll
//! interval; each change goes through `ops.set_queue_mode`, which writes the audit row in
//! the same statement. The flag is platform-wide, not per tenant.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::session::Role;
use sqlx::FromRow;

use crate::auth::Caller;
use crate::error::EventsError;
use crate::startup::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema, FromRow)]
pub struct QueueModeChange {
    pub changed_at: DateTime<Utc>,
    pub changed_by: String,
    pub old_enabled: Option<bool>,
    pub new_enabled: bool,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueModeState {
    /// The live flag; `null` until ops first set it (ingest then uses its configured default).
    pub enabled: Option<bool>,
    pub changed_at: Option<DateTime<Utc>>,
    pub changed_by: Option<String>,
    /// The latest changes, newest first.
    pub recent_changes: Vec<QueueModeChange>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueModeUpdate {
    pub enabled: bool,
}

/// The queue flag and its latest audited changes.
#[utoipa::path(get, path = "/v1/ops/queue-mode",
    responses(
        (status = 200, description = "The flag", body = QueueModeState),
        (status = 403, description = "Not ops", body = shared::Problem),
    ),
    tag = "ops")]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<QueueModeState>, EventsError> {
    caller.require(Role::Ops)?;
    current(&state).await.map(Json)
}

/// Switch queue mode on or off (audited: who, when, old, new).
#[utoipa::path(put, path = "/v1/ops/queue-mode", request_body = QueueModeUpdate,
    responses(
        (status = 200, description = "The flag after the change", body = QueueModeState),
        (status = 403, description = "Not ops", body = shared::Problem),
    ),
    tag = "ops")]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<QueueModeUpdate>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<QueueModeState>, EventsError> {
    caller.require(Role::Ops)?;
    let Json(update) = body.map_err(shared::problem::from_json_rejection)?;
    let actor = caller.actor();
    sqlx::query("SELECT * FROM ops.set_queue_mode($1, $2)")
        .bind(update.enabled)
        .bind(&actor)
        .execute(&state.pool)
        .await?;
    // The actor (a member id) is in the audit table, not in a log line with the request's
    // correlation id (security review M11).
    tracing::warn!(enabled = update.enabled, "queue mode changed");
    current(&state).await.map(Json)
}

async fn current(state: &AppState) -> Result<QueueModeState, EventsError> {
    let flag: Option<(bool, DateTime<Utc>, String)> =
        sqlx::query_as("SELECT enabled, changed_at, changed_by FROM ops.queue_mode")
            .fetch_optional(&state.pool)
            .await?;
    let recent_changes: Vec<QueueModeChange> = sqlx::query_as(
        "SELECT changed_at, changed_by, old_enabled, new_enabled FROM ops.queue_mode_audit \
         ORDER BY id DESC LIMIT 20",
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(QueueModeState {
        enabled: flag.as_ref().map(|f| f.0),
        changed_at: flag.as_ref().map(|f| f.1),
        changed_by: flag.map(|f| f.2),
        recent_changes,
    })
}
