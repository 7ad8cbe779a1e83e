//! Builds and runs the worker: consumer, progress/sealing loop, operational HTTP endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use google_cloud_pubsub::subscriber::ShutdownToken;
use shared::metrics::HttpMetrics;
use sqlx::PgPool;

use crate::configuration::Settings;
use crate::consumer::{self, Activity};
use crate::seal;
use crate::state::WorkerMetrics;

pub struct Application {
    settings: Settings,
    pool: PgPool,
    server: shared::service::Server,
    consumer: consumer::Consumer,
    activity: Arc<Activity>,
    metrics: Arc<WorkerMetrics>,
    pool_metrics: shared::metrics::PoolMetrics,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = shared::db::pool(&settings.database)?;
        let subscriber = shared::pubsub::subscriber(&settings.pubsub).await?;
        let http = HttpMetrics::new("worker");
        let metrics = Arc::new(WorkerMetrics::new(&http, &settings.metrics_tenants));
        let pool_metrics =
            shared::metrics::PoolMetrics::register(&http, settings.database.max_connections);
        let activity = Arc::new(Activity::default());
        let consumer = consumer::start(
            &settings,
            &subscriber,
            pool.clone(),
            metrics.clone(),
            activity.clone(),
        );
        let router = shared::service::router(
            axum::Router::new(),
            utoipa::openapi::OpenApiBuilder::new()
                .info(utoipa::openapi::Info::new(
                    "Ekklesia worker",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
            http,
            shared::service::database_readiness(pool.clone()),
        );
        let server = shared::service::Server::bind_with(
            "worker",
            settings.addr,
            router,
            settings.server_limits,
        )
        .await?;
        Ok(Self {
            settings,
            pool,
            server,
            consumer,
            activity,
            metrics,
            pool_metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shared::telemetry::shutdown_signal()).await
    }

    /// Runs until `stop`, then drains: stops pulling, commits and acks what is in flight, and
    /// exits within `SHUTDOWN_GRACE_MS` (anything unacked then is redelivered to another worker).
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            settings,
            pool,
            server,
            consumer,
            activity,
            metrics,
            pool_metrics,
        } = self;
        tracing::info!(addr = %server.local_addr(), worker_id = %settings.worker_id, "worker running");
        let server = tokio::spawn(async move {
            let _ = server.run_until(std::future::pending()).await;
        });
        let progress = spawn_progress(
            pool.clone(),
            settings.clone(),
            activity,
            metrics,
            pool_metrics,
        );
        let consumer::Consumer {
            shutdown_tokens,
            mut done,
        } = consumer;
        let consumer_ended = tokio::select! {
            _ = stop => false,
            _ = &mut done => true,
        };
        if consumer_ended {
            // Every stream ended (e.g. the subscription is gone): exit so the platform restarts
            // the worker, instead of looking healthy while pulling nothing.
            progress.abort();
            server.abort();
            let _ = seal::forget(&pool, &settings.worker_id).await;
            anyhow::bail!("all StreamingPull streams ended; see the log for the error");
        }
        tracing::info!("draining: no new pulls, finishing in-flight batches");
        drain(shutdown_tokens, done, settings.shutdown_grace).await;
        progress.abort();
        server.abort();
        let _ = seal::forget(&pool, &settings.worker_id).await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Every 500 ms: pool metrics, this worker's progress report, closing and sealing; every 2 s
/// the undecided-vote gauges.
fn spawn_progress(
    pool: PgPool,
    settings: Settings,
    activity: Arc<Activity>,
    metrics: Arc<WorkerMetrics>,
    pool_metrics: shared::metrics::PoolMetrics,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0u64.. {
            tick.tick().await;
            pool_metrics.sample(&pool);
            let idle = activity.idle(settings.idle_after);
            if let Err(e) = seal::report(&pool, &settings.worker_id, idle).await {
                tracing::warn!(error = %shared::db::redact(&e), "progress report failed");
                continue;
            }
            match seal::seal_ready(&pool, &settings.vote_keys, settings.seal_delay).await {
                Ok(_) => {}
                Err(seal::SealError::Database(e)) => {
                    tracing::warn!(error = %shared::db::redact(&e), "sealing failed")
                }
                Err(e) => tracing::error!(error = %e, "sealing failed"),
            }
            if n % 4 == 0 {
                if let Err(e) = report_undecided(&pool, &metrics).await {
                    tracing::warn!(error = %shared::db::redact(&e), "counting undecided votes failed");
                }
            }
        }
    })
}

/// Stops pulling, then waits (at most `grace`) until the batcher has committed and acked or
/// nacked everything it was handed; anything unacked after that is redelivered elsewhere.
async fn drain(
    shutdown_tokens: Vec<ShutdownToken>,
    done: tokio::task::JoinHandle<()>,
    grace: Duration,
) {
    let drain = async {
        // Shutdown waits for every handed-out message to be acked or nacked, which the
        // batcher does; so it runs beside the batcher, not before it.
        let stopper = tokio::spawn(async move {
            for token in shutdown_tokens {
                token.shutdown().await;
            }
        });
        let _ = done.await;
        let _ = stopper.await;
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!("drain exceeded its bound; unacked messages will be redelivered");
    }
}

/// Sets the undecided-vote gauges from `elections.undecided_votes()` (tenants outside
/// `METRICS_TENANTS` add up under `other`), and the seal gauges from `elections.awaiting_seal()`.
async fn report_undecided(pool: &PgPool, metrics: &WorkerMetrics) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query!(
        r#"SELECT org_id AS "org!", undecided AS "undecided!", oldest AS "oldest!"
             FROM elections.undecided_votes()"#
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.org, r.undecided, r.oldest))
    .collect();
    let now = chrono::Utc::now();
    let age =
        |t: chrono::DateTime<chrono::Utc>| (now - t).num_milliseconds().max(0) as f64 / 1000.0;
    let mut by_label: std::collections::BTreeMap<&str, (i64, f64)> = Default::default();
    for (tenant, undecided, oldest) in &rows {
        let entry = by_label.entry(metrics.tenants.label(tenant)).or_default();
        entry.0 += undecided;
        entry.1 = entry.1.max(age(*oldest));
    }
    metrics.undecided.reset();
    metrics.undecided_oldest.reset();
    for (label, (undecided, oldest)) in by_label {
        metrics.undecided.with_label_values(&[label]).set(undecided);
        metrics
            .undecided_oldest
            .with_label_values(&[label])
            .set(oldest);
    }
    let seals = sqlx::query!(
        r#"SELECT count(*) AS "waiting!", min(closed_at) AS oldest FROM elections.awaiting_seal()"#
    )
    .fetch_one(pool)
    .await?;
    let (waiting, oldest) = (seals.waiting, seals.oldest);
    metrics.awaiting_seal.set(waiting);
    metrics.awaiting_seal_oldest.set(oldest.map_or(0.0, age));
    Ok(())
}
