//! Builds the ingest application: state, routes, layers, background tasks.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use google_cloud_pubsub::client::Publisher;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge};
use shared::metrics::HttpMetrics;
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::configuration::Settings;
use crate::definitions::Definitions;
use crate::ledger::Ledger;
use crate::queue_mode::QueueMode;
use crate::routes::{ballots, internal, receipts};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ekklesia ingest",
        description = "The public vote path and the elections side's internal API."
    ),
    components(schemas(shared::Problem))
)]
struct ApiDoc;

/// How often spent S2S nonces are pruned: each is kept at least 601 s anyway, so once a minute
/// keeps the table at about eleven minutes of internal calls.
const NONCE_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

pub struct VoteMetrics {
    /// Votes by mode and outcome (`accepted` or the problem slug).
    pub votes: IntCounterVec,
    pub publish_latency: Histogram,
    pub pool_in_use: IntGauge,
}

pub struct Inner {
    pub settings: Settings,
    pub pool: PgPool,
    pub publisher: Publisher,
    pub definitions: Definitions,
    pub queue_mode: QueueMode,
    /// Receipts answered 202, on their way to `elections.accepted_votes`.
    pub ledger: Arc<Ledger>,
    /// Global and per-client vote rate limits.
    pub limits: shared::ratelimit::Limits,
    pub metrics: VoteMetrics,
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
    server: shared::service::Server,
    state: AppState,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = shared::db::pool(&settings.database)?;
        let publisher = shared::pubsub::publisher(
            &settings.pubsub,
            settings.publish_timeout,
            settings.publish_batch_delay,
        )
        .await?;
        let http_metrics = HttpMetrics::new("ingest");
        let metrics = VoteMetrics {
            votes: http_metrics.register(&shared::metrics::counter_vec(
                "votes_total",
                "Votes by mode and outcome",
                &["mode", "outcome"],
            )),
            publish_latency: http_metrics.register(
                &Histogram::with_opts(
                    HistogramOpts::new(
                        "publish_latency_seconds",
                        "Time until Pub/Sub acknowledged a vote",
                    )
                    .buckets(shared::metrics::LATENCY_BUCKETS.to_vec()),
                )
                .expect("static metric"),
            ),
            pool_in_use: http_metrics.register(
                &IntGauge::new("db_pool_in_use", "Database connections in use")
                    .expect("static metric"),
            ),
        };
        let queue_mode = QueueMode::new(settings.queue_mode_default);
        if let Err(e) = queue_mode.refresh(&pool).await {
            tracing::warn!(error = %shared::db::redact(&e), "could not read the queue flag at startup; using the default");
        }
        let state = AppState(Arc::new(Inner {
            limits: shared::ratelimit::Limits::new(
                settings.rate_limit_per_client,
                settings.rate_limit_global,
            ),
            definitions: Definitions::default(),
            ledger: Arc::new(Ledger::new(settings.instance_id.clone())),
            queue_mode,
            pool,
            publisher,
            metrics,
            settings,
        }));
        // Nonces are spent in the database too, so a replay to another instance fails as well.
        let verifier = shared::s2s::Verifier::new(state.settings.s2s_keys.clone())
            .with_nonce_store(state.pool.clone());
        let nonce_pruner = verifier
            .nonce_store()
            .map(|store| store.spawn_pruner(NONCE_PRUNE_INTERVAL));
        let server = shared::service::Server::bind(
            "ingest",
            state.settings.addr,
            router(state.clone(), http_metrics, Arc::new(verifier)),
        )
        .await?;
        let mut background = vec![
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
            {
                let state = state.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                    for second in 0u64.. {
                        tick.tick().await;
                        let in_use =
                            (state.pool.size() as usize).saturating_sub(state.pool.num_idle());
                        state.metrics.pool_in_use.set(in_use as i64);
                        if second % 60 == 0 {
                            state.limits.retain_recent();
                        }
                    }
                })
            },
        ];
        background.extend(nonce_pruner);
        Ok(Self {
            server,
            state,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
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
        self.server.run_until(stop).await?;
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
        Ok(())
    }
}

fn router(
    state: AppState,
    http_metrics: HttpMetrics,
    verifier: Arc<shared::s2s::Verifier>,
) -> axum::Router {
    let internal_routes = OpenApiRouter::new()
        .routes(routes!(internal::put_election))
        .routes(routes!(internal::register_tokens))
        .routes(routes!(internal::results))
        // Bulk token registration is larger than any vote; the S2S layer bounds it itself.
        .layer(DefaultBodyLimit::max(shared::s2s::MAX_BODY))
        .layer(middleware::from_fn_with_state(
            verifier,
            shared::s2s::verify_layer,
        ));
    let (api_router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ballots::cast))
        .routes(routes!(receipts::status))
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .merge(internal_routes)
        .split_for_parts();
    shared::service::router(
        api_router.with_state(state.clone()),
        api,
        http_metrics,
        shared::service::database_readiness(state.pool.clone()),
    )
}
