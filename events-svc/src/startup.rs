//! Builds events-svc: state, routes, layers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use prometheus::IntCounterVec;
use shared::metrics::HttpMetrics;
use shared::s2s::Client;
use shared::service::{self, Server};
use shared::session::SessionVerifier;
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::configuration::Settings;
use crate::elections_side::ElectionsSide;
use crate::limits::Limits;
use crate::routes::{elections, live, ops, tokens};

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

pub struct Inner {
    pub settings: Settings,
    pub pool: PgPool,
    pub sessions: SessionVerifier,
    pub elections: ElectionsSide,
    /// Requests per member and per instance (checked with the session, `auth`).
    pub limits: Limits,
    /// Held while this instance registers more token slots (`slots::register_more`).
    pub slot_registrations: tokio::sync::Mutex<()>,
    /// For the console's live view (`routes::live`): short timeouts, loopback or internal.
    pub probe: reqwest::Client,
    /// Token requests by outcome (`issued` or the problem slug).
    pub tokens: IntCounterVec,
    /// Requests per tenant, added to the database every `USAGE_FLUSH_MS`.
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
        let tokens = metrics.register(&shared::metrics::counter_vec(
            "voting_tokens_total",
            "Voting token requests by outcome",
            &["outcome"],
        ));
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        let state = AppState(Arc::new(Inner {
            sessions: SessionVerifier::with_key_ttl(
                settings.session_jwks_url.clone(),
                settings.session_issuer.clone(),
                http,
                settings.session_jwks_ttl,
            ),
            elections: ElectionsSide::new(Client::new(
                settings.elections_url.clone(),
                settings.s2s_keys.clone(),
                settings.s2s_retry.clone(),
            )),
            probe: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(1))
                .build()
                .unwrap_or_default(),
            tokens,
            usage: usage.clone(),
            limits: Limits::new(settings.rate_limit_per_member, settings.rate_limit_global),
            slot_registrations: tokio::sync::Mutex::new(()),
            pool: pool.clone(),
            settings,
        }));
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
        let router = service::router(
            api_router
                .merge(crate::pages::routes())
                .with_state(state.clone()),
            api,
            metrics,
            service::database_readiness(pool),
        );
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
