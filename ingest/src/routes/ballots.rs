//! `POST /v1/elections/{id}/ballots`: where a vote is verified, then published (queue mode) or
//! committed (direct mode).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use shared::telemetry::CorrelationId;
use shared::vote::VoteMessage;
use uuid::Uuid;

use crate::ballot_box::{self, DirectOutcome, DirectVote};
use crate::error::IngestError;
use crate::startup::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BallotRequest {
    /// Option ids; ordered by preference for ranked elections.
    pub choices: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BallotAccepted {
    pub receipt: String,
    /// `queued` (queue mode) or `recorded` (direct mode).
    pub status: String,
    pub status_url: String,
}

fn bearer(headers: &HeaderMap) -> Result<&str, IngestError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(IngestError::MissingToken)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(IngestError::MissingToken)?
        .trim();
    if token.is_empty() {
        return Err(IngestError::MissingToken);
    }
    Ok(token)
}

/// Cast a vote.
#[utoipa::path(
    post,
    path = "/v1/elections/{id}/ballots",
    params(("id" = Uuid, Path, description = "Election id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays get the first answer")),
    request_body = BallotRequest,
    security(("voting_token" = [])),
    responses(
        (status = 202, description = "Queued: Pub/Sub acknowledged the vote", body = BallotAccepted),
        (status = 201, description = "Recorded (direct mode)", body = BallotAccepted),
        (status = 400, description = "Malformed request", body = shared::Problem),
        (status = 401, description = "Missing, invalid or expired token", body = shared::Problem),
        (status = 403, description = "Token for another election, or election not open", body = shared::Problem),
        (status = 409, description = "Token already used (direct mode)", body = shared::Problem),
        (status = 413, description = "Body too large", body = shared::Problem),
        (status = 415, description = "Not JSON", body = shared::Problem),
        (status = 422, description = "Choices invalid for the election", body = shared::Problem),
        (status = 429, description = "Rate limited (Retry-After)", body = shared::Problem),
        (status = 503, description = "Overloaded or a dependency is down (Retry-After)", body = shared::Problem),
    ),
    tag = "votes"
)]
pub async fn cast(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    correlation: CorrelationId,
    headers: HeaderMap,
    path: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<BallotRequest>, JsonRejection>,
) -> Response {
    let queue_mode = state.queue_mode.enabled();
    let result = cast_inner(&state, peer, &correlation, &headers, path, body, queue_mode).await;
    let outcome = match &result {
        Ok(_) => "accepted".to_owned(),
        Err(e) => e.to_problem().slug().to_owned(),
    };
    state
        .metrics
        .votes
        .with_label_values(&[if queue_mode { "queue" } else { "direct" }, &outcome])
        .inc();
    match result {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn cast_inner(
    state: &AppState,
    peer: SocketAddr,
    correlation: &CorrelationId,
    headers: &HeaderMap,
    path: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<BallotRequest>, JsonRejection>,
    queue_mode: bool,
) -> Result<Response, IngestError> {
    state
        .limits
        .check(peer.ip())
        .map_err(|retry_after| IngestError::RateLimited { retry_after })?;
    let Path(election_id) = path.map_err(shared::problem::from_path_rejection)?;
    let span = tracing::Span::current();
    span.record("election_id", tracing::field::display(election_id));

    let token = bearer(headers)?;
    let now = chrono::Utc::now();
    let token = state
        .settings
        .token_verifier
        .verify(token, election_id, now)?;
    span.record("tenant", token.tenant.as_str());

    let Json(request) = body.map_err(shared::problem::from_json_rejection)?;
    let definition = state
        .definitions
        .get(&state.pool, &token.tenant, election_id)
        .await?
        .ok_or(IngestError::UnknownElection)?;
    definition.accepts_votes_at(now)?;
    let ballot = definition.ballot(request.choices)?;
    let receipt = state
        .settings
        .receipt_key
        .derive(election_id, token.token_id());
    let status_url = format!("/v1/receipts/{receipt}");

    if queue_mode {
        let message = VoteMessage {
            v: shared::vote::VERSION,
            tenant: token.tenant.clone(),
            election_id,
            token_hash: token.token_hash(),
            receipt: receipt.clone(),
            choices: ballot.into_choices(),
            accepted_at: now,
        };
        let started = Instant::now();
        // 202 only once Pub/Sub acknowledged the publish (invariant 1); a publish that fails
        // or outlasts the budget is a 503 and the client retries (same token, same receipt).
        let published = tokio::time::timeout(
            state.settings.publish_timeout,
            state.publisher.publish(message.encode(&correlation.0)),
        )
        .await;
        state
            .metrics
            .publish_latency
            .observe(started.elapsed().as_secs_f64());
        match published {
            Ok(Ok(_message_id)) => {}
            Ok(Err(e)) => return Err(IngestError::PublishFailed(e.to_string())),
            Err(_) => return Err(IngestError::PublishFailed("publish timed out".into())),
        }
        Ok((
            StatusCode::ACCEPTED,
            Json(BallotAccepted {
                receipt: receipt.to_string(),
                status: "queued".into(),
                status_url,
            }),
        )
            .into_response())
    } else {
        let idempotency_key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty() && k.len() <= 200);
        let outcome = ballot_box::record(
            &state.pool,
            DirectVote {
                tenant: &token.tenant,
                election_id,
                token_hash: token.token_hash(),
                receipt: &receipt,
                ballot: &ballot,
                idempotency_key,
            },
        )
        .await?;
        let mut response = (
            StatusCode::CREATED,
            Json(BallotAccepted {
                receipt: receipt.to_string(),
                status: "recorded".into(),
                status_url,
            }),
        )
            .into_response();
        if matches!(outcome, DirectOutcome::Replayed) {
            response.headers_mut().insert(
                "idempotent-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
        }
        Ok(response)
    }
}
