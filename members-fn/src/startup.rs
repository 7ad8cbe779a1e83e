//! Builds members-fn: its state (`state`), the router over every route, the listener.

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use shared::metrics::HttpMetrics;
use shared::service::{self, Server};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::configuration::Settings;
use crate::routes;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ekklesia members-fn",
        description = "Login (OIDC with PKCE, started and finished at members-fn; dev login where enabled) and the member registry; session tokens for events-svc."
    ),
    components(schemas(shared::Problem))
)]
struct ApiDoc;

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
        if settings.dev_login {
            tracing::warn!("dev login is enabled: anyone can log in as any member by national id");
        }
        let state = AppState::new(settings, pool.clone(), &metrics, usage.clone());
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
