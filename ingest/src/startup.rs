//! Builds the ingest application: state, routes, layers, background tasks.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use shared::metrics::HttpMetrics;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::configuration::Settings;
use crate::queue_mode::QueueMode;
use crate::routes::{ballots, internal, receipts};
// Until routes/ballots.rs imports it from `crate::state` (its owner restructures that file).
pub use crate::state::AppState;
use crate::state::VoteMetrics;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ekklesia ingest",
        description = "The public vote path: cast a vote, look a receipt up."
    ),
    components(schemas(shared::Problem)),
    modifiers(&VotingTokenScheme)
)]
struct PublicApi;

/// The ballot route's `voting_token`: the token events-svc issued, as a bearer token.
struct VotingTokenScheme;

impl utoipa::Modify for VotingTokenScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "voting_token",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWS (typ vote+jwt)")
                        .description(Some(
                            "The voting token from events-svc (`POST /v1/elections/{id}/token`)",
                        ))
                        .build(),
                ),
            );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ekklesia ingest (internal)",
        description = "The elections side's internal API, signed service-to-service calls from events-svc only."
    ),
    components(schemas(shared::Problem)),
    modifiers(&S2sScheme)
)]
struct InternalApi;

/// The internal routes' `s2s` signature (`shared::s2s`); OpenAPI has no word for a signature
/// over the request, so it is described on the header that carries it.
struct S2sScheme;

impl utoipa::Modify for S2sScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        doc.components.get_or_insert_with(Default::default).add_security_scheme(
            "s2s",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Signature",
                "HMAC-SHA256 with the caller's S2S key over `METHOD|PATH?QUERY|TIMESTAMP|NONCE|hex(sha256(body))`, \
                 base64url without padding; sent with `X-Key-Id`, `X-Timestamp` (Unix seconds, within 300 s) \
                 and `X-Nonce` (spent once)",
            ))),
        );
    }
}

/// How often spent S2S nonces are pruned: each is kept at least 601 s anyway, so once a minute
/// keeps the table at about eleven minutes of internal calls.
const NONCE_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Application {
    /// The vote path (`INGEST_ADDR`/`PORT`).
    public: Option<shared::service::Server>,
    /// The internal API and `/metrics` (`INTERNAL_ADDR`, or `PORT` with `INGEST_SERVE=internal`).
    internal: Option<shared::service::Server>,
    state: AppState,
    background: Vec<tokio::task::JoinHandle<()>>,
    _usage_flusher: shared::usage::Flusher,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = shared::db::pool(&settings.database)?;
        let usage = shared::usage::Usage::new();
        let http_metrics = HttpMetrics::new("ingest").with_usage(usage.clone());
        let publisher = crate::publisher::VotePublisher::build(
            &settings.pubsub,
            settings.publish_timeout,
            settings.publish_batch_delay,
            http_metrics.register(&shared::metrics::counter_vec(
                "votes_published_total",
                "Votes published alone at once (immediate) or sharing a Publish request (batched)",
                &["path"],
            )),
        )
        .await?;
        let metrics = VoteMetrics::register(&http_metrics);
        let pool_metrics = shared::metrics::PoolMetrics::register(
            &http_metrics,
            settings.database.max_connections,
        );
        let queue_mode = QueueMode::new(settings.queue_mode_default);
        if let Err(e) = queue_mode.refresh(&pool).await {
            tracing::warn!(error = %shared::db::redact(&e), "could not read the queue flag at startup; using the default");
        }
        let state = AppState::new(settings, pool, publisher, queue_mode, metrics, usage)?;
        // Nonces are spent in the database too, so a replay to another instance fails as well.
        let verifier = shared::s2s::Verifier::new(state.settings.s2s_keys.clone())
            .with_nonce_store(state.pool.clone());
        let nonce_pruner = verifier
            .nonce_store()
            .map(|store| store.spawn_pruner(NONCE_PRUNE_INTERVAL));
        let (public, internal) = bind_listeners(&state, http_metrics, Arc::new(verifier)).await?;
        let mut background = spawn_background(&state, pool_metrics);
        background.extend(nonce_pruner);
        let usage_flusher = state
            .usage
            .spawn_flusher(state.pool.clone(), state.settings.usage_flush);
        Ok(Self {
            public,
            internal,
            state,
            background,
            _usage_flusher: usage_flusher,
        })
    }

    /// Where the vote path is served (or, with `INGEST_SERVE=internal`, the internal API).
    pub fn local_addr(&self) -> SocketAddr {
        self.public
            .as_ref()
            .or(self.internal.as_ref())
            .map(shared::service::Server::local_addr)
            .expect("at least one listener")
    }

    /// Where the internal API and `/metrics` are served.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal
            .as_ref()
            .map(shared::service::Server::local_addr)
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until SIGTERM/ctrl-c (or the given future), then flushes the publisher.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shared::telemetry::shutdown_signal()).await
    }

    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // One stop for both listeners.
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            let _ = stopping.send(true);
        });
        let servers: Vec<_> = [self.public, self.internal]
            .into_iter()
            .flatten()
            .map(|server| {
                let mut stopped = stopped.clone();
                tokio::spawn(server.run_until(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                }))
            })
            .collect();
        for server in servers {
            server.await??;
        }
        for task in self.background {
            task.abort();
        }
        // Every 202 already waited for its publish; this only drains stragglers.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.state.publisher.flush(),
        )
        .await;
        // Last: every vote answered 202 is now known to the elections side.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.state.ledger.close(&self.state.pool),
        )
        .await;
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.state.usage.flush(&self.state.pool),
        )
        .await;
        Ok(())
    }
}

/// The tasks that keep the state current: the queue flag, the cached definitions, the ledger,
/// and every second the pool metrics (every minute the rate limiters forget idle clients).
fn spawn_background(
    state: &AppState,
    pool_metrics: shared::metrics::PoolMetrics,
) -> Vec<tokio::task::JoinHandle<()>> {
    let upkeep = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            for second in 0u64.. {
                tick.tick().await;
                pool_metrics.sample(&state.pool);
                if second % 60 == 0 {
                    state.limits.retain_recent();
                    state.token_limits.retain_recent();
                    state.receipt_limits.retain_recent();
                }
            }
        })
    };
    vec![
        state
            .queue_mode
            .spawn_follower(state.pool.clone(), state.settings.queue_mode_poll),
        state
            .definitions
            .spawn_refresher(state.pool.clone(), state.settings.definition_refresh),
        state
            .ledger
            .clone()
            .spawn_flusher(state.pool.clone(), state.settings.ledger_flush),
        upkeep,
    ]
}

/// The listeners `INGEST_SERVE` asks for.
async fn bind_listeners(
    state: &AppState,
    http_metrics: HttpMetrics,
    verifier: Arc<shared::s2s::Verifier>,
) -> anyhow::Result<(
    Option<shared::service::Server>,
    Option<shared::service::Server>,
)> {
    use crate::configuration::Serve;
    let settings = &state.settings;
    let limits = settings.server_limits;
    let bind = |name, addr, router| shared::service::Server::bind_with(name, addr, router, limits);
    let public = match settings.serve {
        Serve::Both | Serve::Public => Some(
            bind(
                "ingest",
                settings.addr,
                public_router(state.clone(), http_metrics.clone()),
            )
            .await?,
        ),
        Serve::Internal => None,
    };
    let internal_addr = match settings.serve {
        Serve::Both => Some(settings.internal_addr),
        Serve::Internal => Some(settings.addr),
        Serve::Public => None,
    };
    let internal = match internal_addr {
        Some(addr) => Some(
            bind(
                "ingest-internal",
                addr,
                internal_router(state.clone(), http_metrics, verifier),
            )
            .await?,
        ),
        None => None,
    };
    Ok((public, internal))
}

/// The vote path: votes and receipts, probes, the public OpenAPI document.
fn public_router(state: AppState, http_metrics: HttpMetrics) -> axum::Router {
    let (api_router, api) = OpenApiRouter::with_openapi(PublicApi::openapi())
        .routes(routes!(ballots::cast))
        .routes(routes!(receipts::status))
        .routes(routes!(receipts::lookup))
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .split_for_parts();
    shared::cors::allow(
        shared::service::public_router(
            api_router.with_state(state.clone()),
            api,
            http_metrics,
            shared::service::database_readiness(state.pool.clone()),
        ),
        state.settings.page_origins.clone(),
    )
}

/// The elections side's internal API behind the S2S signature layer, `/metrics`, probes.
fn internal_router(
    state: AppState,
    http_metrics: HttpMetrics,
    verifier: Arc<shared::s2s::Verifier>,
) -> axum::Router {
    let (api_router, api) = OpenApiRouter::with_openapi(InternalApi::openapi())
        .routes(routes!(internal::put_election))
        .routes(routes!(internal::register_tokens))
        .routes(routes!(internal::results))
        // Bulk token registration is larger than any vote; the S2S layer bounds it itself.
        .layer(DefaultBodyLimit::max(shared::s2s::MAX_BODY))
        .layer(middleware::from_fn_with_state(
            verifier,
            shared::s2s::verify_layer,
        ))
        .split_for_parts();
    shared::service::router(
        api_router.with_state(state.clone()),
        api,
        http_metrics,
        shared::service::database_readiness(state.pool.clone()),
    )
}
