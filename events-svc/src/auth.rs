//! Who is calling: the session token members-fn issued, verified on every request, and held
//! to the caller's request budget (`crate::limits`).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use shared::domain::TenantId;
use shared::session::{Role, SessionClaims, SessionError};

use crate::error::EventsError;
use crate::state::AppState;

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

    /// A platform operator: `ops` in the platform organisation. Each party loads its own
    /// registry and could grant itself `ops`; only the platform team loads the platform
    /// organisation's, so a tenant's `ops` (including sessions minted before this rule) is
    /// not enough for what concerns every tenant.
    pub fn is_platform_ops(&self, platform_org: &TenantId) -> bool {
        &self.0.org == platform_org && self.0.has(Role::Ops)
    }

    pub fn require_platform_ops(&self, platform_org: &TenantId) -> Result<(), EventsError> {
        if self.is_platform_ops(platform_org) {
            Ok(())
        } else {
            Err(EventsError::NotPlatformOps)
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
        let caller = Self(state.sessions.verify(token).await?);
        shared::telemetry::record_tenant(caller.0.org.as_str());
        // Budgets are per verified member: a forged or expired session spends nobody's.
        let counts_globally =
            !(caller.0.has(Role::Admin) || caller.is_platform_ops(&state.settings.platform_org));
        state
            .limits
            .check(caller.0.sub, counts_globally)
            .map_err(|retry_after| EventsError::RateLimited { retry_after })?;
        Ok(caller)
    }
}
