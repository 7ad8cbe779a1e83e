//! The live queue flag, for platform operators only (`ops` in the platform organisation,
//! `Caller::require_platform_ops`): the flag is platform-wide, not per tenant, so a tenant's own
//! `ops` role is not enough. Every ingest instance follows it within its poll interval; each
//! change goes through `ops.change_queue_mode`, which refuses a change sooner than
//! `QUEUE_MODE_CHANGE_INTERVAL_MS` after the last one (platform-wide, in the database) and
//! otherwise writes the flag and its audit row (actor and database user) in the same statement;
//! the change's entry in the platform organisation's tamper-evident audit chain
//! (`shared::audit`) is appended in the same transaction.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::{BAD_BODY, NOT_JSON, SESSION_401, SESSION_503, TOO_LARGE};
use crate::auth::Caller;
use crate::error::EventsError;
use crate::state::AppState;

/// The path this API's changes are audited under (the actor is in `ops.queue_mode_audit`).
const AUDIT_PATH: &str = "events-svc";

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema, FromRow)]
pub struct QueueModeChange {
    pub changed_at: DateTime<Utc>,
    /// Who asked: `member:<id>@<org>` through this API, the operator's `--actor` through the CLI.
    pub changed_by: String,
    /// The database login that made the change (`session_user`), which no caller can choose;
    /// `null` for changes made before it was recorded.
    pub database_user: Option<String>,
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

/// The queue flag and its latest audited changes (platform operators only).
#[utoipa::path(get, path = "/v1/ops/queue-mode",
    security(("session" = [])),
    responses(
        (status = 401, description = SESSION_401, body = shared::Problem),
        (status = 200, description = "The flag", body = QueueModeState),
        (status = 403, description = "Not a platform operator (`not-platform-ops`)", body = shared::Problem),
        (status = 429, description = "Too many requests from this member or in total (`rate-limited`, Retry-After)", body = shared::Problem),
        (status = 503, description = SESSION_503, body = shared::Problem),
    ),
    tag = "ops")]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<QueueModeState>, EventsError> {
    caller.require_platform_ops(&state.settings.platform_org)?;
    current(&state).await.map(Json)
}

/// Switch queue mode on or off, platform-wide (platform operators only; audited: who, which
/// database user, when, old, new). At most one change per `QUEUE_MODE_CHANGE_INTERVAL_MS`.
#[utoipa::path(put, path = "/v1/ops/queue-mode", request_body = QueueModeUpdate,
    security(("session" = [])),
    responses(
        (status = 401, description = SESSION_401, body = shared::Problem),
        (status = 200, description = "The flag after the change", body = QueueModeState),
        (status = 400, description = BAD_BODY, body = shared::Problem),
        (status = 403, description = "Not a platform operator (`not-platform-ops`)", body = shared::Problem),
        (status = 413, description = TOO_LARGE, body = shared::Problem),
        (status = 415, description = NOT_JSON, body = shared::Problem),
        (status = 429, description = "The flag changed less than the change interval ago (`queue-mode-changed-recently`), or too many requests (`rate-limited`); Retry-After, nothing changed", body = shared::Problem),
        (status = 503, description = SESSION_503, body = shared::Problem),
    ),
    tag = "ops")]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<QueueModeUpdate>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<QueueModeState>, EventsError> {
    caller.require_platform_ops(&state.settings.platform_org)?;
    let Json(update) = body.map_err(shared::problem::from_json_rejection)?;
    let actor = caller.actor();
    let interval = state.settings.queue_mode_change_interval;
    // The change and its entry in the platform organisation's audit chain commit together.
    let platform_org = &state.settings.platform_org;
    let mut tx = shared::db::begin_for_tenant(&state.pool, platform_org).await?;
    let change = sqlx::query!(
        r#"SELECT changed AS "changed!", retry_after_ms AS "retry_after_ms!"
           FROM ops.change_queue_mode($1, $2, make_interval(secs => $3))"#,
        update.enabled,
        &actor,
        interval.as_secs_f64(),
    )
    .fetch_one(&mut *tx)
    .await?;
    let (changed, retry_after_ms) = (change.changed, change.retry_after_ms);
    if changed {
        shared::audit::append_queue_mode_changes(
            &mut tx,
            &state.settings.audit_key,
            platform_org,
            AUDIT_PATH,
        )
        .await?;
    }
    tx.commit().await?;
    if !changed {
        let retry_after = (retry_after_ms.max(0) as u64).div_ceil(1000);
        return Err(EventsError::QueueModeChangedRecently { retry_after });
    }
    // The actor (a member id) is in the audit table, not in a log line with the request's
    // correlation id (security review M11).
    tracing::warn!(enabled = update.enabled, "queue mode changed");
    current(&state).await.map(Json)
}

async fn current(state: &AppState) -> Result<QueueModeState, EventsError> {
    let flag = sqlx::query!("SELECT enabled, changed_at, changed_by FROM ops.queue_mode")
        .fetch_optional(&state.pool)
        .await?;
    let recent_changes = sqlx::query_as!(
        QueueModeChange,
        "SELECT changed_at, changed_by, database_user, old_enabled, new_enabled \
         FROM ops.queue_mode_audit \
         ORDER BY id DESC LIMIT 20",
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(QueueModeState {
        enabled: flag.as_ref().map(|f| f.enabled),
        changed_at: flag.as_ref().map(|f| f.changed_at),
        changed_by: flag.map(|f| f.changed_by),
        recent_changes,
    })
}
