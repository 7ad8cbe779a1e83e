//! Every way a vote can be refused, and the answer each one gets.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::domain::DomainError;
use shared::token::TokenError;
use shared::Problem;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("missing bearer token")]
    MissingToken,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("election not found")]
    UnknownElection,
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("the token is not registered for this election")]
    UnregisteredToken,
    #[error("a ballot was already recorded with this token")]
    TokenUsed,
    #[error("rate limited")]
    RateLimited { retry_after: u64 },
    #[error("publish failed: {reason}")]
    PublishFailed { reason: String, receipt: String },
    #[error("database: {}", shared::db::redact(.0))]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Problem(Problem),
}

impl IngestError {
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::MissingToken => Problem::new(
                StatusCode::UNAUTHORIZED,
                "missing-token",
                "Unauthorized",
                "send the voting token as `Authorization: Bearer <token>`",
            ),
            Self::Token(e) => token_problem(e),
            Self::UnknownElection => Problem::not_found("no such election"),
            Self::Domain(e) => domain_problem(e),
            Self::UnregisteredToken => Problem::new(
                StatusCode::FORBIDDEN,
                "token-not-registered",
                "Forbidden",
                "this voting token is not registered for the election",
            ),
            Self::TokenUsed => Problem::new(
                StatusCode::CONFLICT,
                "token-already-used",
                "Conflict",
                "a ballot was already recorded with this voting token (by another submission: \
                 other choices, or another Idempotency-Key); this one was not counted",
            ),
            Self::RateLimited { retry_after } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                "too many requests for this voting token, from this client or in total; retry \
                 after the indicated delay",
            )
            .retry_after(*retry_after),
            Self::PublishFailed { receipt, .. } => Problem::unavailable(
                "queue-unavailable",
                "the queue did not confirm this vote in time: it may or may not have been \
                 queued. Send the same request again (same token, choices and Idempotency-Key): \
                 it gets the same receipt and counts at most once. The receipt's status shows \
                 whether it arrived",
                2,
            )
            .with_receipt(receipt.clone()),
            Self::Database(e) => shared::db::problem_for(e),
            Self::Problem(p) => p.clone(),
        }
    }
}

fn token_problem(e: &TokenError) -> Problem {
    if *e == TokenError::WrongElection {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "token-for-other-election",
            "Forbidden",
            e.to_string(),
        );
    }
    let slug = match e {
        TokenError::Expired => "token-expired",
        TokenError::NotYetValid => "token-not-yet-valid",
        TokenError::UnknownKey => "token-unknown-key",
        TokenError::WrongTenant => "token-wrong-tenant",
        TokenError::BadSignature => "token-bad-signature",
        _ => "token-malformed",
    };
    Problem::new(
        StatusCode::UNAUTHORIZED,
        slug,
        "Unauthorized",
        e.to_string(),
    )
}

fn domain_problem(e: &DomainError) -> Problem {
    match e {
        DomainError::NotOpen(_) | DomainError::OutsideWindow => Problem::new(
            StatusCode::FORBIDDEN,
            "election-not-open",
            "Forbidden",
            e.to_string(),
        ),
        DomainError::InvalidBallot(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-ballot",
            "Invalid ballot",
            e.to_string(),
        ),
        _ => Problem::bad_request("invalid-request", e.to_string()),
    }
}

impl From<Problem> for IngestError {
    fn from(p: Problem) -> Self {
        Self::Problem(p)
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let problem = self.to_problem();
        if problem.status >= 500 {
            tracing::error!(error = %self, "request failed");
        }
        problem.into_response()
    }
}
