//! members-fn's public routes: OIDC login (start, the provider's redirect back, and the same
//! callback for API clients), dev login, the session keys.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::domain::TenantId;
use shared::session::Role;
use uuid::Uuid;

use crate::attempts;
use crate::error::MembersError;
use crate::national_id::NationalId;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StartQuery {
    /// Which organisation to log in to, for a person who is a member of several.
    pub org: Option<String>,
    /// A path on this site the page wants to go to afterwards, echoed in the session answer;
    /// or a web page's URL on one of `PAGE_ORIGINS` (`/pages/<name>`, no query), to which the
    /// redirect answers 303 with the session in the fragment (`#session=...`).
    pub return_to: Option<String>,
}

/// What the identity provider appends to the redirect URI. Other parameters (`session_state`,
/// `error_description`, ...) are ignored.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RedirectQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set instead of `code` when the login ended at the provider (e.g. `access_denied`).
    pub error: Option<String>,
    /// The provider's name for itself (RFC 9207), checked when present.
    pub iss: Option<String>,
}

/// An API client's callback: what the provider redirected with, sent together with the login
/// cookie `GET /v1/auth/oidc/start` set. The PKCE verifier, nonce and redirect URI are
/// members-fn's own since that start; a body that still carries them is refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcCallback {
    /// The authorization code the provider redirected with.
    pub code: String,
    /// The state the provider redirected with.
    pub state: String,
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
    /// The `return_to` the login was started with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to: Option<String>,
}

/// Start an OIDC login: members-fn generates state, nonce and PKCE verifier, keeps them for
/// 10 minutes, names the attempt in an HttpOnly cookie and sends the browser to the provider.
#[utoipa::path(get, path = "/v1/auth/oidc/start", params(StartQuery),
    responses(
        (status = 302, description = "To the identity provider (Location), with the login cookie (Set-Cookie)"),
        (status = 400, description = "`org` is not an organisation id, or `return_to` is neither a path on this site nor a page on one of the pages' origins (`invalid-return-to`)", body = shared::Problem),
        (status = 404, description = "No identity provider configured", body = shared::Problem),
        (status = 429, description = "Too many attempts (Retry-After)", body = shared::Problem),
        (status = 503, description = "Identity provider or database unavailable (Retry-After)", body = shared::Problem),
    ),
    tag = "auth")]
pub async fn oidc_start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<StartQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, MembersError> {
    state
        .limits
        .check(peer.ip())
        .map_err(|retry_after| MembersError::RateLimited { retry_after })?;
    let Query(query) = query.map_err(|_| {
        shared::Problem::bad_request(
            "invalid-query",
            "the query takes `org` and `return_to`, each at most once",
        )
    })?;
    let oidc = state.oidc.as_ref().ok_or(MembersError::OidcNotConfigured)?;
    if let Some(org) = &query.org {
        TenantId::parse(org).map_err(|_| {
            shared::Problem::bad_request("invalid-query", "`org` is not an organisation id")
        })?;
    }
    let return_to = match query.return_to.as_deref() {
        Some(raw) => Some(crate::hand_back::check(raw, &state.settings.page_origins)?),
        None => None,
    };
    let started = attempts::Started::generate();
    // The URL first: a provider that cannot be reached leaves no attempt behind.
    let location = oidc
        .authorization_url(&started.state, &started.nonce, &started.code_challenge)
        .await?;
    started
        .save(&state.pool, query.org.as_deref(), return_to.as_deref())
        .await?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (
                header::SET_COOKIE,
                attempts::set_cookie(&started.cookie_value, state.secure_cookies()),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response())
}

/// The registered redirect URI: the provider sends the browser back here with `code` and
/// `state`. Accepted only with the login cookie of the attempt whose state it is, once.
#[utoipa::path(get, path = "/v1/auth/oidc/redirect", params(RedirectQuery),
    responses(
        (status = 200, description = "Logged in (Cache-Control: no-store; the login cookie is cleared)", body = Session),
        (status = 303, description = "Logged in from a web page: back to its `return_to` with `#session=<session token>` (Location; no-store; the login cookie is cleared)"),
        (status = 400, description = "No code (`invalid-request`), or not a provider's redirect (`invalid-query`)", body = shared::Problem),
        (status = 401, description = "No login started in this browser, expired, replayed, state mismatch, the provider ended the login, code refused, id_token invalid (also without the login's nonce)", body = shared::Problem),
        (status = 403, description = "Valid login, not a member", body = shared::Problem),
        (status = 409, description = "Member of several organisations: start again with `org`", body = shared::Problem),
        (status = 429, description = "Too many attempts (Retry-After)", body = shared::Problem),
        (status = 503, description = "Identity provider or database unavailable (Retry-After)", body = shared::Problem),
    ),
    tag = "auth")]
pub async fn oidc_redirect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<RedirectQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, MembersError> {
    state
        .limits
        .check(peer.ip())
        .map_err(|retry_after| MembersError::RateLimited { retry_after })?;
    let Query(query) = query.map_err(|_| {
        shared::Problem::bad_request("invalid-query", "the query is not a provider's redirect")
    })?;
    let outcome = finish_login(&state, &headers, &query).await;
    state.count("oidc", outcome)
}

/// The same as the redirect, for an API client that stops at the provider's redirect and posts
/// `{code, state}` with the login cookie instead. The contract's older body
/// (`{code, code_verifier, redirect_uri, nonce}`) cannot be made safe: members-fn cannot tell
/// whose verifier it is given, so it is refused.
#[utoipa::path(post, path = "/v1/auth/oidc/callback", request_body = OidcCallback,
    responses(
        (status = 200, description = "Logged in (the login cookie is cleared)", body = Session),
        (status = 400, description = "Malformed request (`malformed-json`, `invalid-body`), or the old body with code_verifier (`legacy-callback`)", body = shared::Problem),
        (status = 401, description = "As for the redirect: no login started, expired, replayed, state mismatch, code refused, id_token invalid", body = shared::Problem),
        (status = 403, description = "Valid login, not a member", body = shared::Problem),
        (status = 409, description = "Member of several organisations: start again with `org`", body = shared::Problem),
        (status = 413, description = "`body-too-large`: over 16 KiB", body = shared::Problem),
        (status = 415, description = "`unsupported-media-type`: the body is not `application/json`", body = shared::Problem),
        (status = 429, description = "Too many attempts (Retry-After)", body = shared::Problem),
        (status = 503, description = "Identity provider or database unavailable (Retry-After)", body = shared::Problem),
    ),
    tag = "auth")]
pub async fn oidc_callback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, MembersError> {
    state
        .limits
        .check(peer.ip())
        .map_err(|retry_after| MembersError::RateLimited { retry_after })?;
    let Json(body) = body.map_err(shared::problem::from_json_rejection)?;
    if ["code_verifier", "redirect_uri", "nonce"]
        .iter()
        .any(|old| body.get(old).is_some())
    {
        return Err(shared::Problem::bad_request(
            "legacy-callback",
            "code_verifier, redirect_uri and nonce are members-fn's own now: start the login at \
             GET /v1/auth/oidc/start and send {code, state} with the cookie it sets",
        )
        .into());
    }
    let callback: OidcCallback = serde_json::from_value(body).map_err(|e| {
        shared::Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "Bad request",
            format!("the body is {{code, state}}: {e}"),
        )
    })?;
    let query = RedirectQuery {
        code: Some(callback.code),
        state: Some(callback.state),
        error: None,
        iss: None,
    };
    let outcome = finish_login(&state, &headers, &query).await;
    state.count("oidc", outcome)
}

/// Checks the callback against the attempt the cookie names, uses the attempt up, exchanges
/// the code with its verifier, requires its nonce, and signs the session.
async fn finish_login(
    state: &AppState,
    headers: &HeaderMap,
    query: &RedirectQuery,
) -> Result<Response, MembersError> {
    let oidc = state.oidc.as_ref().ok_or(MembersError::OidcNotConfigured)?;
    let secure = state.secure_cookies();
    let cookie = attempts::from_cookie(headers, secure).ok_or(MembersError::LoginNotStarted)?;
    let login_state = query
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(MembersError::StateMismatch)?;
    let attempt = attempts::consume(&state.pool, &cookie, login_state).await?;
    if let Some(error) = &query.error {
        // An OAuth error code is a short token; anything else is not repeated back.
        let code = if !error.is_empty()
            && error.len() <= 64
            && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            error.clone()
        } else {
            "unrecognised".to_owned()
        };
        return Err(MembersError::ProviderRefused(code));
    }
    if query
        .iss
        .as_deref()
        .is_some_and(|iss| iss.trim_end_matches('/') != oidc.issuer())
    {
        return Err(MembersError::ProviderRefused("issuer_mismatch".into()));
    }
    let code = query
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            shared::Problem::bad_request("invalid-request", "the callback has no code")
        })?;
    let login = oidc
        .login(code, &attempt.code_verifier, &attempt.nonce)
        .await?;
    let mut session = session_for(state, &login.national_id, attempt.org.as_deref()).await?;
    // A page's login: the session goes back to it in the URL's fragment.
    let origins = &state.settings.page_origins;
    if let Some(page) =
        (attempt.return_to.as_deref()).and_then(|r| crate::hand_back::page(r, origins))
    {
        return Ok(crate::hand_back::redirect(
            page,
            &session,
            attempts::clear_cookie(secure),
        ));
    }
    session.return_to = attempt.return_to;
    Ok((
        [
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::SET_COOKIE, attempts::clear_cookie(secure)),
        ],
        Json(session),
    )
        .into_response())
}

/// Log in by national id alone. Exists only where `DEV_LOGIN_ENABLED` is set, which the
/// production profile refuses at startup.
#[utoipa::path(post, path = "/v1/auth/dev-login", request_body = DevLogin,
    responses(
        (status = 200, description = "Logged in", body = Session),
        (status = 400, description = "Not a valid national id, or not the documented JSON (`malformed-json`, `invalid-body`)", body = shared::Problem),
        (status = 403, description = "Not a member", body = shared::Problem),
        (status = 404, description = "Dev login is disabled", body = shared::Problem),
        (status = 409, description = "Member of several organisations: name `org`", body = shared::Problem),
        (status = 413, description = "`body-too-large`: over 16 KiB", body = shared::Problem),
        (status = 415, description = "`unsupported-media-type`: the body is not `application/json`", body = shared::Problem),
        (status = 429, description = "Too many attempts (Retry-After)", body = shared::Problem),
        (status = 503, description = "Database unavailable or overloaded (Retry-After)", body = shared::Problem),
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
    responses((status = 200, description = "JSON Web Key Set (Ed25519, RFC 7517): `{\"keys\": [{kty, crv, use, alg, kid, x}]}`", body = Object)), tag = "auth")]
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
    let memberships: Vec<(String, Uuid, Vec<String>)> = sqlx::query!(
        r#"SELECT org_id AS "org_id!", member_id AS "member_id!", roles AS "roles!"
           FROM members.memberships_of($1)"#,
        national_id.as_str()
    )
    .fetch_all(&state.pool)
    .await?
    .into_iter()
    .map(|m| (m.org_id, m.member_id, m.roles))
    .collect();
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
    // No member id here: this line carries the request's correlation id, which a client may
    // reuse on the vote path (security review M11).
    shared::telemetry::record_tenant(org.as_str());
    state.usage.login(org.as_str());
    tracing::info!(tenant = %org, "session issued");
    Ok(Session {
        session_token,
        expires_at,
        member: MemberView {
            id: member_id,
            org,
            roles,
        },
        return_to: None,
    })
}
