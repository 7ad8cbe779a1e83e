//! Ekklesia members-fn: Login and membership (issue 4 builds the routes).
//!
//! For now the service skeleton every service shares: typed settings, JSON logs with
//! correlation ids, `/healthz`, `/readyz` (database reachable), `/metrics`, `/openapi.json`,
//! problem+json for unknown routes.

use std::net::SocketAddr;

use axum::Router;
use shared::config::{ConfigError, DatabaseSettings, Env};
use shared::metrics::HttpMetrics;
use shared::service::{self, Server};
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
    server: Server,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = shared::db::pool(&settings.database)?;
        let metrics = HttpMetrics::new("members-fn");
        let router = service::router(
            Router::new(),
            ApiDoc::openapi(),
            metrics,
            service::database_readiness(pool),
        );
        Ok(Self {
            server: Server::bind("members-fn", settings.addr, router).await?,
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
        Ok(self.server.run_until(stop).await?)
    }
}
