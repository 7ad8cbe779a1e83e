//! Every way a login or an import can fail, and the answer each one gets. Details name the
//! problem, never echo a code, token or national id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::Problem;

use crate::national_id::NationalIdError;

#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    #[error("the identity provider cannot be reached: {0}")]
    ProviderUnavailable(String),
    #[error("the identity provider refused the authorization code")]
    CodeRejected,
    #[error("the identity provider ended the login with an error")]
    ProviderRefused(String),
    #[error("no login was started in this browser")]
    LoginNotStarted,
    #[error("the login attempt expired")]
    LoginExpired,
    #[error("the login attempt was already used")]
    LoginReplayed,
    #[error("the callback's state does not match the login attempt")]
    StateMismatch,
    #[error("{0}")]
    IdToken(String),
    #[error(transparent)]
    NationalId(#[from] NationalIdError),
    #[error("this person is not a member")]
    NotAMember,
    #[error("a member of several organisations must say which one (`org`): {0:?}")]
    ChooseOrganisation(Vec<String>),
    #[error("OIDC login is not configured")]
    OidcNotConfigured,
    #[error("rate limited")]
    RateLimited { retry_after: u64 },
    #[error("database: {}", shared::db::redact(.0))]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Problem(Problem),
}

impl From<Problem> for MembersError {
    fn from(p: Problem) -> Self {
        Self::Problem(p)
    }
}

impl MembersError {
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::ProviderUnavailable(_) => Problem::unavailable(
                "identity-provider-unavailable",
                "the identity provider cannot be reached; try again shortly",
                5,
            ),
            Self::CodeRejected => unauthorized(
                "login-failed",
                "the identity provider refused the authorization code (used, expired, or the code_verifier does not match)",
            ),
            Self::ProviderRefused(code) => unauthorized(
                "login-failed",
                format!("the identity provider ended the login with error `{code}`; start again"),
            ),
            Self::LoginNotStarted => unauthorized(
                "login-not-started",
                "this browser has no login in progress (no login cookie, or one members-fn does not know): start at GET /v1/auth/oidc/start",
            ),
            Self::LoginExpired => unauthorized(
                "login-expired",
                "the login attempt expired (it lasts 10 minutes); start again at GET /v1/auth/oidc/start",
            ),
            Self::LoginReplayed => unauthorized(
                "login-replayed",
                "this login attempt was already used; each is good for one callback, start again at GET /v1/auth/oidc/start",
            ),
            Self::StateMismatch => unauthorized(
                "state-mismatch",
                "the callback's state is missing or is not the state of the login this browser started",
            ),
            Self::IdToken(detail) => unauthorized("invalid-id-token", detail.clone()),
            Self::NationalId(e) => Problem::bad_request("invalid-national-id", e.to_string()),
            Self::NotAMember => Problem::new(
                StatusCode::FORBIDDEN,
                "not-a-member",
                "Forbidden",
                "the login is valid but this person is not in the member registry",
            ),
            Self::ChooseOrganisation(orgs) => choose_organisation(orgs),
            Self::OidcNotConfigured => Problem::new(
                StatusCode::NOT_FOUND,
                "oidc-not-configured",
                "Not Found",
                "this deployment has no identity provider configured",
            ),
            Self::RateLimited { retry_after } => rate_limited(*retry_after),
            Self::Database(e) => shared::db::problem_for(e),
            Self::Problem(p) => p.clone(),
        }
    }
}

/// Every way a login can fail at the provider or with its attempt is a 401 with its own slug.
fn unauthorized(slug: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, slug, "Unauthorized", detail)
}

fn choose_organisation(orgs: &[String]) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "choose-organisation",
        "Conflict",
        format!(
            "this person is a member of several organisations ({}); send `org`",
            orgs.join(", ")
        ),
    )
}

fn rate_limited(retry_after: u64) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too Many Requests",
        "too many login attempts; wait and try again",
    )
    .retry_after(retry_after)
}

impl IntoResponse for MembersError {
    fn into_response(self) -> Response {
        match &self {
            Self::Database(_) | Self::ProviderUnavailable(_) => {
                tracing::warn!(error = %self, "login dependency failed")
            }
            _ => {}
        }
        self.to_problem().into_response()
    }
}
