//! What every request handler shares: settings, the pool, the OIDC client, limits and
//! counters. Built once by `startup` and handed to the routes as axum state; the routes import
//! this module, never `startup`, so `startup` can import the routes to build the router.

use std::sync::Arc;

use prometheus::IntCounterVec;
use shared::metrics::HttpMetrics;
use sqlx::PgPool;

use crate::configuration::Settings;
use crate::error::MembersError;
use crate::oidc::OidcClient;

pub struct Inner {
    pub settings: Settings,
    pub pool: PgPool,
    pub oidc: Option<OidcClient>,
    pub limits: shared::ratelimit::Limits,
    /// Logins by method (`oidc`, `dev`) and outcome (`ok` or the problem slug).
    pub logins: IntCounterVec,
    /// Logins and requests per tenant, added to the database every `USAGE_FLUSH_MS`.
    pub usage: Arc<shared::usage::Usage>,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The state of one instance; registers its own counters with `metrics`.
    pub fn new(
        settings: Settings,
        pool: PgPool,
        metrics: &HttpMetrics,
        usage: Arc<shared::usage::Usage>,
    ) -> Self {
        let logins = metrics.register(&shared::metrics::counter_vec(
            "logins_total",
            "Login attempts by method and outcome",
            &["method", "outcome"],
        ));
        Self(Arc::new(Inner {
            oidc: settings.oidc.clone().map(OidcClient::new),
            limits: shared::ratelimit::Limits::new(
                settings.login_rate_per_client,
                settings.login_rate_global,
            ),
            logins,
            usage,
            pool,
            settings,
        }))
    }

    /// Cookies are `Secure` everywhere but the local profile (plain http on 127.0.0.1).
    pub fn secure_cookies(&self) -> bool {
        self.settings.profile != shared::config::Profile::Local
    }

    /// Counts a login step's outcome and passes it on.
    pub fn count<T>(
        &self,
        method: &str,
        outcome: Result<T, MembersError>,
    ) -> Result<T, MembersError> {
        let label = match &outcome {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_problem().slug().to_owned(),
        };
        self.logins.with_label_values(&[method, &label]).inc();
        outcome
    }
}
