//! Builds members-fn: state, routes, layers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use prometheus::IntCounterVec;
use shared::metrics::HttpMetrics;
use shared::service::{self, Server};
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::configuration::Settings;
use crate::error::MembersError;
use crate::oidc::OidcClient;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ekklesia members-fn",
        description = "Login (OIDC with PKCE, started and finished at members-fn; dev login where enabled) and the member registry; session tokens for events-svc."
    ),
    components(schemas(shared::Problem))
)]
struct ApiDoc;

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

pub struct Application {
    server: Server,
    state: AppState,
    _pool_sampler: shared::metrics::Sampler,
    _usage_flusher: shared::usage::Flusher,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = shared::db::pool(&settings.database)?;
        let usage = shared::usage::Usage::new();
        let metrics = HttpMetrics::new("members-fn").with_usage(usage.clone());
        let pool_sampler =
            shared::metrics::PoolMetrics::register(&metrics, settings.database.max_connections)
                .spawn_sampler(pool.clone());
        let logins = metrics.register(&shared::metrics::counter_vec(
            "logins_total",
            "Login attempts by method and outcome",
            &["method", "outcome"],
        ));
        if settings.dev_login {
            tracing::warn!("dev login is enabled: anyone can log in as any member by national id");
        }
        let state = AppState(Arc::new(Inner {
            oidc: settings.oidc.clone().map(OidcClient::new),
            limits: shared::ratelimit::Limits::new(
                settings.login_rate_per_client,
                settings.login_rate_global,
            ),
            logins,
            usage: usage.clone(),
            pool: pool.clone(),
            settings,
        }));
        let (api_router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
            .routes(routes!(routes::oidc_start))
            .routes(routes!(routes::oidc_redirect))
            .routes(routes!(routes::oidc_callback))
            .routes(routes!(routes::dev_login))
            .routes(routes!(routes::jwks))
            .layer(DefaultBodyLimit::max(16 * 1024))
            .split_for_parts();
        let router = shared::cors::allow(
            service::router(
                api_router.with_state(state.clone()),
                api,
                metrics,
                service::database_readiness(pool),
            ),
            state.settings.page_origins.clone(),
        );
        let usage_flusher = usage.spawn_flusher(state.pool.clone(), state.settings.usage_flush);
        Ok(Self {
            server: Server::bind_with(
                "members-fn",
                state.settings.addr,
                router,
                state.settings.server_limits,
            )
            .await?,
            state,
            _pool_sampler: pool_sampler,
            _usage_flusher: usage_flusher,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shared::telemetry::shutdown_signal()).await
    }

    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.server.run_until(stop).await?;
        // What was counted since the last flush.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.state.usage.flush(&self.state.pool),
        )
        .await;
        Ok(())
    }
}
