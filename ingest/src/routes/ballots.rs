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
use shared::domain::{Ballot, TenantId, TokenHash, VoteStatus};
use shared::receipt::{submission_digest, Receipt};
use shared::telemetry::CorrelationId;
use shared::token::VerifiedToken;
use shared::vote::VoteMessage;
use uuid::Uuid;

use crate::ballot_box::{self, DirectOutcome, DirectVote};
use crate::error::IngestError;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"choices": ["yes"]}))]
pub struct BallotRequest {
    /// Option ids; ordered by preference for ranked elections.
    pub choices: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BallotAccepted {
    pub receipt: String,
    /// `queued` (queue mode) or `recorded` (direct mode).
    pub status: VoteStatus,
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
           ("Idempotency-Key" = Option<String>, Header, description = "Names this submission: the same request with the same key is a retry (same receipt, counted at most once)")),
    request_body = BallotRequest,
    security(("voting_token" = [])),
    responses(
        (status = 202, description = "Queued: Pub/Sub acknowledged the vote", body = BallotAccepted),
        (status = 201, description = "Recorded (direct mode)", body = BallotAccepted),
        (status = 400, description = "Malformed request", body = shared::Problem),
        (status = 401, description = "Missing, invalid or expired token", body = shared::Problem),
        (status = 403, description = "Token for another election, or election not open", body = shared::Problem),
        (status = 404, description = "The token's election is unknown to the elections side (`not-found`)", body = shared::Problem),
        (status = 409, description = "Token already used by another submission (direct mode)", body = shared::Problem),
        (status = 413, description = "Body too large", body = shared::Problem),
        (status = 415, description = "Not JSON", body = shared::Problem),
        (status = 422, description = "Choices invalid for the election", body = shared::Problem),
        (status = 429, description = "Rate limited (Retry-After)", body = shared::Problem),
        (status = 503, description = "Overloaded or a dependency is down (Retry-After); when the publish timed out the vote may still be queued: the problem names its receipt, and the same request again is safe", body = shared::Problem),
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
    let _in_flight = state.tokens.vote_started();
    let token = match path {
        Ok(Path(election_id)) => verify_token(&state, &headers, election_id).await,
        Err(e) => Err(IngestError::from(shared::problem::from_path_rejection(e))),
    };
    let verified_tenant = token.as_ref().ok().map(|t| t.tenant.clone());
    let tenant = token
        .as_ref()
        .map_or("none", |t| {
            state.settings.metrics_tenants.label(t.tenant.as_str())
        })
        .to_owned();
    let result = match token {
        Ok(token) => {
            cast_verified(
                &state,
                peer,
                &correlation,
                &headers,
                token,
                body,
                queue_mode,
            )
            .await
        }
        Err(e) => Err(e),
    };
    if let (Ok(_), Some(tenant)) = (&result, &verified_tenant) {
        state.usage.vote(tenant.as_str());
    }
    let outcome = match &result {
        Ok(_) => "accepted".to_owned(),
        Err(e) => e.to_problem().slug().to_owned(),
    };
    state
        .metrics
        .votes
        .with_label_values(&[
            if queue_mode { "queue" } else { "direct" },
            &outcome,
            &tenant,
        ])
        .inc();
    match result {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// A vote whose token is genuine: budgets, the ballot, then publish or commit.
async fn cast_verified(
    state: &AppState,
    peer: SocketAddr,
    correlation: &CorrelationId,
    headers: &HeaderMap,
    token: VerifiedToken,
    body: Result<Json<BallotRequest>, JsonRejection>,
    queue_mode: bool,
) -> Result<Response, IngestError> {
    // Only a genuine token spends a budget, narrowest first: its own (one token cannot flood
    // the queue), then its client's, then the instance's. Forged requests cost a voter nothing.
    let rate_limited = |retry_after| IngestError::RateLimited { retry_after };
    state
        .token_limits
        .check(&token.token_hash().0)
        .map_err(rate_limited)?;
    let client =
        shared::ratelimit::client_address(peer, headers, state.settings.trusted_proxy_hops);
    state.limits.check(client).map_err(rate_limited)?;
    let vote = verify(state, headers, token, body).await?;
    if queue_mode {
        publish(state, correlation, vote).await
    } else {
        record(state, vote).await
    }
}

/// A vote that passed every check ingest can make.
struct VerifiedVote {
    tenant: TenantId,
    election_id: Uuid,
    token_hash: TokenHash,
    ballot: Ballot,
    receipt: Receipt,
    idempotency_key: Option<String>,
    accepted_at: chrono::DateTime<chrono::Utc>,
}

/// Where a vote's token is verified: signature, claims, this election (`tokens`: alone, or
/// together with the others of a burst). No database, no budget.
/// (No span of its own: tenant and election go on the request's span, which every log line of
/// the request carries.)
async fn verify_token(
    state: &AppState,
    headers: &HeaderMap,
    election_id: Uuid,
) -> Result<VerifiedToken, IngestError> {
    let span = tracing::Span::current();
    span.record("election_id", tracing::field::display(election_id));
    let token = state.tokens.verify(bearer(headers)?, election_id).await?;
    shared::telemetry::record_tenant(token.tenant.as_str());
    Ok(token)
}

/// Where the rest of a vote is verified: the election's state and the ballot against its
/// definition; and where its receipt is derived (one per submission).
#[tracing::instrument(name = "verify ballot", skip_all)]
async fn verify(
    state: &AppState,
    headers: &HeaderMap,
    token: VerifiedToken,
    body: Result<Json<BallotRequest>, JsonRejection>,
) -> Result<VerifiedVote, IngestError> {
    let election_id = token.election_id;
    let now = chrono::Utc::now();
    let Json(request) = body.map_err(shared::problem::from_json_rejection)?;
    let definition = state
        .definitions
        .get(&state.pool, &token.tenant, election_id)
        .await?
        .ok_or(IngestError::UnknownElection)?;
    definition.accepts_votes_at(now)?;
    let ballot = definition.ballot(request.choices)?;
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .map(str::to_owned);
    let submission = submission_digest(ballot.choices(), idempotency_key.as_deref());
    let receipt = state
        .settings
        .receipt_key
        .derive(election_id, token.token_id(), &submission);
    Ok(VerifiedVote {
        tenant: token.tenant.clone(),
        election_id,
        token_hash: token.token_hash(),
        ballot,
        receipt,
        idempotency_key,
        accepted_at: now,
    })
}

fn answer(status: StatusCode, receipt: &Receipt, vote_status: VoteStatus) -> Response {
    (
        status,
        Json(BallotAccepted {
            receipt: receipt.to_string(),
            status: vote_status,
            status_url: format!("/v1/receipts/{receipt}"),
        }),
    )
        .into_response()
}

/// Where a vote is published (queue mode): 202 only once Pub/Sub acknowledged it (invariant 1).
#[tracing::instrument(name = "publish", skip_all)]
async fn publish(
    state: &AppState,
    correlation: &CorrelationId,
    vote: VerifiedVote,
) -> Result<Response, IngestError> {
    let message = VoteMessage {
        tenant: vote.tenant,
        election_id: vote.election_id,
        token_hash: vote.token_hash,
        receipt: vote.receipt,
        choices: vote.ballot.into_choices(),
        accepted_at: vote.accepted_at,
    };
    let started = Instant::now();
    let mut encoded = message.encode(&state.settings.vote_keys, &correlation.0);
    // The worker's batch span links back to this vote's trace.
    shared::traces::inject_attributes(&mut encoded.attributes);
    let published = tokio::time::timeout(
        state.settings.publish_timeout,
        state.publisher.publish(encoded),
    )
    .await;
    state
        .metrics
        .publish_latency
        .observe(started.elapsed().as_secs_f64());
    let failure = match published {
        Ok(Ok(_message_id)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("publish timed out".to_owned()),
    };
    if let Some(reason) = failure {
        // Pub/Sub may still deliver it: the voter is told so, with the receipt to check, and
        // that the same request again is safe (same receipt, counted at most once).
        return Err(IngestError::PublishFailed {
            reason,
            receipt: message.receipt.to_string(),
        });
    }
    state.ledger.accepted(
        &message.tenant,
        message.election_id,
        &message.receipt,
        message.accepted_at,
    );
    Ok(answer(
        StatusCode::ACCEPTED,
        &message.receipt,
        VoteStatus::Queued,
    ))
}

/// Direct mode: the vote is committed before the answer (`ballot_box::record`).
#[tracing::instrument(name = "record direct", skip_all)]
async fn record(state: &AppState, vote: VerifiedVote) -> Result<Response, IngestError> {
    let sealed = state.settings.vote_keys.encrypt_ballot(
        &vote.tenant,
        vote.election_id,
        vote.ballot.choices(),
    );
    let outcome = ballot_box::record(
        &state.pool,
        DirectVote {
            tenant: &vote.tenant,
            election_id: vote.election_id,
            token_hash: vote.token_hash,
            receipt: &vote.receipt,
            sealed_ballot: &sealed,
            replayable: vote.idempotency_key.is_some(),
        },
    )
    .await?;
    let mut response = answer(StatusCode::CREATED, &vote.receipt, VoteStatus::Recorded);
    if matches!(outcome, DirectOutcome::Replayed) {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}
