//! `GET /v1/receipts/{receipt}`: what became of a vote.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::error::IngestError;
use crate::startup::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptStatus {
    pub receipt: String,
    /// `queued`, `recorded` or `rejected`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Look a receipt up.
#[utoipa::path(
    get,
    path = "/v1/receipts/{receipt}",
    params(("receipt" = String, Path, description = "The receipt a vote was answered with")),
    responses(
        (status = 200, description = "The vote's status", body = ReceiptStatus),
        (status = 404, description = "This system never issued the receipt", body = shared::Problem),
        (status = 503, description = "Database unavailable (Retry-After)", body = shared::Problem),
    ),
    tag = "votes"
)]
pub async fn status(
    State(state): State<AppState>,
    Path(presented): Path<String>,
) -> Result<Json<ReceiptStatus>, IngestError> {
    let Some((receipt, _election)) = state.settings.receipt_key.check(&presented) else {
        return Err(shared::Problem::not_found("this system never issued that receipt").into());
    };
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT status, reason FROM elections.receipt_status($1)")
            .bind(receipt.as_str())
            .fetch_optional(&state.pool)
            .await?;
    // A genuine receipt with no outcome yet belongs to a vote still in the queue.
    let (status, reason) = row.unwrap_or_else(|| ("queued".into(), None));
    Ok(Json(ReceiptStatus {
        receipt: receipt.to_string(),
        status,
        reason,
    }))
}
