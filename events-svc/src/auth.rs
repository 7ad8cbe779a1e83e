//! Who is calling: the session token members-fn issued, verified on every request.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use shared::session::{Role, SessionClaims, SessionError};

use crate::error::EventsError;
use crate::startup::AppState;

/// A verified session: member id, tenant and roles.
pub struct Caller(pub SessionClaims);

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), EventsError> {
        if self.0.has(role) {
            Ok(())
        } else {
            Err(EventsError::Forbidden(role))
        }
    }

    /// How audit trails name this caller: the member id and tenant, never a national id.
    pub fn actor(&self) -> String {
        format!("member:{}@{}", self.0.sub, self.0.org)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = EventsError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, EventsError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(SessionError::Missing)?;
        let claims = state.sessions.verify(token).await?;
        Ok(Self(claims))
    }
}
