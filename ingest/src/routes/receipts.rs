//! What became of a vote: `POST /v1/receipts:lookup` (the receipt in the body, so it stays out
//! of request logs that record URLs) and `GET /v1/receipts/{receipt}` (the contract's form).
//! Both are rate-limited per client and per instance: a look-up costs a database round trip,
//! and polling must not take the connections votes need.

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use shared::domain::VoteStatus;

use crate::error::IngestError;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptStatus {
    pub receipt: String,
    pub status: VoteStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptLookup {
    /// The receipt a vote was answered with.
    pub receipt: String,
}

/// Look a receipt up (the receipt in the body).
#[utoipa::path(
    post,
    path = "/v1/receipts:lookup",
    request_body = ReceiptLookup,
    responses(
        (status = 200, description = "The vote's status", body = ReceiptStatus),
        (status = 400, description = "Malformed request", body = shared::Problem),
        (status = 404, description = "This system never issued the receipt", body = shared::Problem),
        (status = 413, description = "Body too large", body = shared::Problem),
        (status = 415, description = "Not JSON", body = shared::Problem),
        (status = 429, description = "Too many look-ups (Retry-After)", body = shared::Problem),
        (status = 503, description = "Database unavailable (Retry-After)", body = shared::Problem),
    ),
    tag = "votes"
)]
pub async fn lookup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<ReceiptLookup>, JsonRejection>,
) -> Result<Json<ReceiptStatus>, IngestError> {
    charge(&state, peer, &headers)?;
    let Json(lookup) = body.map_err(shared::problem::from_json_rejection)?;
    find(&state, &lookup.receipt).await.map(Json)
}

/// Look a receipt up.
#[utoipa::path(
    get,
    path = "/v1/receipts/{receipt}",
    params(("receipt" = String, Path, description = "The receipt a vote was answered with")),
    responses(
        (status = 200, description = "The vote's status", body = ReceiptStatus),
        (status = 400, description = "Malformed path", body = shared::Problem),
        (status = 404, description = "This system never issued the receipt", body = shared::Problem),
        (status = 429, description = "Too many look-ups (Retry-After)", body = shared::Problem),
        (status = 503, description = "Database unavailable (Retry-After)", body = shared::Problem),
    ),
    tag = "votes"
)]
pub async fn status(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ReceiptStatus>, IngestError> {
    charge(&state, peer, &headers)?;
    let Path(presented) = path.map_err(shared::problem::from_path_rejection)?;
    find(&state, &presented).await.map(Json)
}

fn charge(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), IngestError> {
    let client =
        shared::ratelimit::client_address(peer, headers, state.settings.trusted_proxy_hops);
    state
        .receipt_limits
        .check(client)
        .map_err(|retry_after| IngestError::RateLimited { retry_after })
}

async fn find(state: &AppState, presented: &str) -> Result<ReceiptStatus, IngestError> {
    let Some((receipt, election)) = state.settings.receipt_key.check(presented) else {
        return Err(shared::Problem::not_found("this system never issued that receipt").into());
    };
    // Whose look-up this is, if this instance knows the election (no query just for that).
    if let Some(definition) = state.definitions.cached(election) {
        shared::telemetry::record_tenant(definition.tenant().as_str());
    }
    let row = sqlx::query!(
        r#"SELECT status AS "status!: VoteStatus", reason FROM elections.receipt_status($1)"#,
        receipt.as_str()
    )
    .fetch_optional(&state.pool)
    .await?;
    // A genuine receipt with no outcome yet belongs to a vote still in the queue.
    let (status, reason) = row.map_or((VoteStatus::Queued, None), |r| (r.status, r.reason));
    Ok(ReceiptStatus {
        receipt: receipt.to_string(),
        status,
        reason,
    })
}
