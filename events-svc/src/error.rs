//! Every way an events-svc request can fail, and the answer each one gets.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::domain::DomainError;
use shared::s2s::CallError;
use shared::session::{Role, SessionError};
use shared::Problem;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("this needs the {0} role")]
    Forbidden(Role),
    #[error("this needs a platform operator")]
    NotPlatformOps,
    #[error("rate limited")]
    RateLimited { retry_after: u64 },
    #[error("the queue flag changed too recently")]
    QueueModeChangedRecently { retry_after: u64 },
    #[error("election not found")]
    UnknownElection,
    #[error("the caller is not an active member of this organisation")]
    NotAMember,
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("a voting token was already issued to this member for this election")]
    TokenAlreadyIssued,
    #[error("voting tokens are not configured for this tenant")]
    TenantNotConfigured,
    #[error("the elections side failed: {0}")]
    ElectionsSide(#[from] CallError),
    #[error("database: {}", shared::db::redact(.0))]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Problem(Problem),
}

impl From<Problem> for EventsError {
    fn from(p: Problem) -> Self {
        Self::Problem(p)
    }
}

impl EventsError {
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::Session(e) => session_problem(e),
            Self::Forbidden(role) => forbidden("forbidden", format!("this needs the {role} role")),
            Self::NotPlatformOps => forbidden(
                "not-platform-ops",
                "the queue flag is platform-wide: it needs the ops role in the platform organisation",
            ),
            Self::RateLimited { retry_after } => too_many(
                "rate-limited",
                "too many requests from this member or in total; retry after the indicated delay",
                *retry_after,
            ),
            Self::QueueModeChangedRecently { retry_after } => too_many(
                "queue-mode-changed-recently",
                "the queue flag was changed moments ago; it changes at most once per interval, \
                 platform-wide: retry after the indicated delay",
                *retry_after,
            ),
            Self::UnknownElection => Problem::not_found("no such election in your organisation"),
            Self::NotAMember => forbidden(
                "not-a-member",
                "you are no longer in your organisation's member registry",
            ),
            Self::Domain(e @ (DomainError::NotOpen(_) | DomainError::OutsideWindow)) => {
                forbidden("election-not-open", e.to_string())
            }
            Self::Domain(e) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-election",
                "Invalid election",
                e.to_string(),
            ),
            Self::Conflict(detail) => {
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", *detail)
            }
            Self::TokenAlreadyIssued => Problem::new(
                StatusCode::CONFLICT,
                "token-already-issued",
                "Conflict",
                "a voting token was already issued to you for this election; it cannot be issued twice",
            ),
            // An operator must add the tenant's keys (logged where it was found, with the
            // tenant); a client may retry later rather than treat it as a failure of its own.
            Self::TenantNotConfigured => Problem::unavailable(
                "tenant-not-configured",
                "voting tokens are not set up for your organisation yet; try again later",
                60,
            ),
            Self::ElectionsSide(e) => elections_side_problem(e),
            Self::Database(e) => shared::db::problem_for(e),
            Self::Problem(p) => p.clone(),
        }
    }
}

fn forbidden(slug: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, slug, "Forbidden", detail)
}

fn too_many(slug: &str, detail: &str, retry_after: u64) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        slug,
        "Too many requests",
        detail,
    )
    .retry_after(retry_after)
}

fn session_problem(e: &SessionError) -> Problem {
    let slug = match e {
        SessionError::KeysUnavailable => {
            return Problem::unavailable(
                "session-keys-unavailable",
                "the session keys cannot be fetched from members-fn right now",
                5,
            )
        }
        SessionError::Missing => "missing-session",
        SessionError::Expired => "session-expired",
        _ => "invalid-session",
    };
    Problem::new(
        StatusCode::UNAUTHORIZED,
        slug,
        "Unauthorized",
        e.to_string(),
    )
}

fn elections_side_problem(e: &CallError) -> Problem {
    match e {
        // The elections side refused the change: pass its reason on.
        CallError::Status { status, .. } if status.is_client_error() => {
            let detail = e
                .problem()
                .map(|p| p.detail)
                .unwrap_or_else(|| format!("the elections side answered {status}"));
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "elections-side-refused",
                "Bad Gateway",
                detail,
            )
        }
        _ => Problem::unavailable(
            "elections-side-unavailable",
            "the elections side cannot be reached; nothing was changed, try again shortly",
            5,
        ),
    }
}

impl IntoResponse for EventsError {
    fn into_response(self) -> Response {
        let problem = self.to_problem();
        if problem.status >= 500 {
            tracing::error!(error = %self, "request failed");
        }
        problem.into_response()
    }
}
