//! members-fn's public routes: OIDC callback, dev login, the session keys.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::domain::TenantId;
use shared::session::Role;
use uuid::Uuid;

use crate::error::MembersError;
use crate::national_id::NationalId;
use crate::startup::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcCallback {
    /// The authorization code the provider redirected the browser with.
    pub code: String,
    /// The PKCE verifier the client generated for this login (43–128 characters).
    pub code_verifier: String,
    /// The redirect URI used in the authorization request.
    pub redirect_uri: String,
    /// The nonce of the authorization request; the id_token must echo it.
    pub nonce: Option<String>,
    /// Which organisation to log in to, for a person who is a member of several.
    pub org: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevLogin {
    pub national_id: String,
    pub org: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberView {
    pub id: Uuid,
    #[schema(value_type = String)]
    pub org: TenantId,
    pub roles: Vec<Role>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Session {
    /// Bearer token for events-svc (EdDSA JWT; keys at `/.well-known/jwks.json`).
    pub session_token: String,
    pub expires_at: DateTime<Utc>,
    pub member: MemberView,
}

/// Finish an OIDC login: exchange the code, verify the id_token, look the person up.
#[utoipa::path(post, path = "/v1/auth/oidc/callback", request_body = OidcCallback,
    responses(
        (status = 200, description = "Logged in", body = Session),
        (status = 400, description = "Malformed request", body = shared::Problem),
        (status = 401, description = "The login failed (code refused, id_token invalid)", body = shared::Problem),
        (status = 403, description = "Valid login, not a member", body = shared::Problem),
        (status = 409, description = "Member of several organisations: send `org`", body = shared::Problem),
        (status = 429, description = "Too many attempts (Retry-After)", body = shared::Problem),
        (status = 503, description = "Identity provider or database unavailable (Retry-After)", body = shared::Problem),
    ),
    tag = "auth")]
pub async fn oidc_callback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<OidcCallback>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, MembersError> {
    state
        .limits
        .check(peer.ip())
        .map_err(|retry_after| MembersError::RateLimited { retry_after })?;
    let Json(callback) = body.map_err(shared::problem::from_json_rejection)?;
    if !(43..=128).contains(&callback.code_verifier.len())
        || !callback
            .code_verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err(shared::Problem::bad_request(
            "invalid-code-verifier",
            "code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636)",
        )
        .into());
    }
    if callback.code.is_empty() || callback.redirect_uri.is_empty() {
        return Err(shared::Problem::bad_request(
            "invalid-request",
            "code and redirect_uri are required",
        )
        .into());
    }
    let oidc = state.oidc.as_ref().ok_or(MembersError::OidcNotConfigured)?;
    let outcome = oidc
        .login(
            &callback.code,
            &callback.code_verifier,
            &callback.redirect_uri,
            callback.nonce.as_deref(),
        )
        .await;
    let login = state.count("oidc", outcome)?;
    let session = state.count(
        "oidc",
        session_for(&state, &login.national_id, callback.org.as_deref()).await,
    )?;
    Ok(no_store(session))
}

/// Log in by national id alone. Exists only where `DEV_LOGIN_ENABLED` is set, which the
/// production profile refuses at startup.
#[utoipa::path(post, path = "/v1/auth/dev-login", request_body = DevLogin,
    responses(
        (status = 200, description = "Logged in", body = Session),
        (status = 400, description = "Not a valid national id", body = shared::Problem),
        (status = 403, description = "Not a member", body = shared::Problem),
        (status = 404, description = "Dev login is disabled", body = shared::Problem),
        (status = 429, description = "Too many attempts (Retry-After)", body = shared::Problem),
    ),
    tag = "auth")]
pub async fn dev_login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<DevLogin>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, MembersError> {
    if !state.settings.dev_login {
        return Err(shared::Problem::not_found("dev login is disabled").into());
    }
    state
        .limits
        .check(peer.ip())
        .map_err(|retry_after| MembersError::RateLimited { retry_after })?;
    let Json(login) = body.map_err(shared::problem::from_json_rejection)?;
    let national_id = NationalId::parse(&login.national_id)?;
    let session = state.count(
        "dev",
        session_for(&state, &national_id, login.org.as_deref()).await,
    )?;
    Ok(no_store(session))
}

/// The public keys session tokens are signed with.
#[utoipa::path(get, path = "/.well-known/jwks.json",
    responses((status = 200, description = "JSON Web Key Set (Ed25519)")), tag = "auth")]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.settings.session.jwks()),
    )
}

fn no_store(session: Session) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Json(session))
}

/// Looks the person up in the registry and signs a session for the chosen membership.
async fn session_for(
    state: &AppState,
    national_id: &NationalId,
    org: Option<&str>,
) -> Result<Session, MembersError> {
    let memberships: Vec<(String, Uuid, Vec<String>)> =
        sqlx::query_as("SELECT org_id, member_id, roles FROM members.memberships_of($1)")
            .bind(national_id.as_str())
            .fetch_all(&state.pool)
            .await?;
    let chosen = match org {
        Some(org) => memberships.into_iter().find(|(o, _, _)| o == org),
        None if memberships.len() > 1 => {
            return Err(MembersError::ChooseOrganisation(
                memberships.into_iter().map(|m| m.0).collect(),
            ))
        }
        None => memberships.into_iter().next(),
    };
    let (org, member_id, roles) = chosen.ok_or(MembersError::NotAMember)?;
    let org = TenantId::parse(&org).map_err(|_| shared::Problem::internal())?;
    let roles: Vec<Role> = roles.iter().filter_map(|r| Role::parse(r)).collect();
    let (session_token, expires_at) =
        state
            .settings
            .session
            .sign(member_id, org.clone(), roles.clone(), Utc::now());
    tracing::info!(member_id = %member_id, tenant = %org, "session issued");
    Ok(Session {
        session_token,
        expires_at,
        member: MemberView {
            id: member_id,
            org,
            roles,
        },
    })
}
