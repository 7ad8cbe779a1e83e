//! Builds events-svc: its state (`state`), the router over every route, the listener.

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use shared::metrics::HttpMetrics;
use shared::service::{self, Server};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::configuration::Settings;
use crate::routes::{elections, live, ops, tokens};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ekklesia events-svc",
        description = "Elections, one anonymous voting token per member, results (turnout before the seal, tally after), the platform-wide queue flag."
    ),
    components(schemas(shared::Problem)),
    modifiers(&SessionScheme)
)]
struct ApiDoc;

/// Every route's `session`: the session token members-fn issued, as a bearer token.
struct SessionScheme;

impl utoipa::Modify for SessionScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "session",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT (EdDSA)")
                        .description(Some("The session token from members-fn's login"))
                        .build(),
                ),
            );
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
        let metrics = HttpMetrics::new("events-svc").with_usage(usage.clone());
        let pool_sampler =
            shared::metrics::PoolMetrics::register(&metrics, settings.database.max_connections)
                .spawn_sampler(pool.clone());
        let state = AppState::new(settings, pool.clone(), &metrics, usage.clone());
        let (api_router, api) = api(state.clone());
        let router = service::router(api_router, api, metrics, service::database_readiness(pool));
        let usage_flusher = usage.spawn_flusher(state.pool.clone(), state.settings.usage_flush);
        Ok(Self {
            server: Server::bind_with(
                "events-svc",
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

/// The API and the pages with their state, and the API's OpenAPI document.
fn api(state: AppState) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (api_router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(elections::create, elections::list))
        .routes(routes!(elections::get))
        .routes(routes!(elections::open))
        .routes(routes!(elections::close))
        .routes(routes!(elections::results))
        .routes(routes!(tokens::issue))
        .routes(routes!(ops::get, ops::put))
        .routes(routes!(live::live))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .split_for_parts();
    let router = api_router.merge(crate::pages::routes()).with_state(state);
    (router, api)
}
