//! Ekklesia members-fn: Login and membership (issue 4 builds the routes).
//!
//! For now the service skeleton every service shares: typed settings, JSON logs with
//! correlation ids, `/healthz`, `/readyz` (database reachable), `/metrics`, `/openapi.json`,
//! problem+json for unknown routes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::{middleware, Router};
use shared::config::{ConfigError, DatabaseSettings, Env};
use shared::metrics::{HttpMetrics, ReadinessCheck};
use tokio::net::TcpListener;
use utoipa::OpenApi;

#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT` (Cloud Run) or `MEMBERS_ADDR`.
    pub addr: SocketAddr,
    pub database: DatabaseSettings,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from(Env::from_process())
    }

    pub fn from(mut env: Env) -> Result<Self, ConfigError> {
        let settings = Self {
            addr: env.listen_addr("MEMBERS_ADDR", "127.0.0.1:8082"),
            database: DatabaseSettings::from_env(&mut env),
        };
        env.finish(settings)
    }
}

#[derive(OpenApi)]
#[openapi(info(
    title = "Ekklesia members-fn",
    description = "Login and membership (issue 4 builds the routes)."
))]
struct ApiDoc;

pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = shared::db::pool(&settings.database)?;
        let metrics = HttpMetrics::new("members-fn");
        let ready: ReadinessCheck = Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move { shared::db::ping(&pool).await })
        });
        let api = ApiDoc::openapi();
        let router = Router::new()
            .route(
                "/openapi.json",
                axum::routing::get(move || async move { axum::Json(api) }),
            )
            .merge(shared::metrics::operational_routes(metrics.clone(), ready))
            .fallback(shared::problem::not_found_fallback)
            .route_layer(middleware::from_fn(shared::telemetry::record_route))
            .layer(middleware::from_fn_with_state(
                metrics,
                shared::telemetry::observe_requests,
            ));
        let listener = TcpListener::bind(settings.addr).await?;
        Ok(Self { listener, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shared::telemetry::shutdown_signal()).await
    }

    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "members-fn listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(stop)
            .await?;
        Ok(())
    }
}
