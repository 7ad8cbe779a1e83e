//! Builds and runs the worker: consumer, progress/sealing loop, operational HTTP endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use shared::metrics::HttpMetrics;
use sqlx::PgPool;

use crate::configuration::Settings;
use crate::consumer::{self, Activity};
use crate::seal;

pub struct WorkerMetrics {
    pub batch_size: Histogram,
    pub commit_latency: Histogram,
    /// Accept (ingest) → commit (worker).
    pub queue_lag: Histogram,
    /// recorded, duplicate, or the rejection reason.
    pub outcomes: IntCounterVec,
    /// Messages that are not votes this worker can read, by kind (forged, malformed, ...).
    pub undecodable: IntCounterVec,
    /// Messages received, by subscription (`votes`, `dead_letter`): with the outcomes, how much
    /// this worker holds that is not decided yet.
    pub received: IntCounterVec,
    /// Votes that reached the dead-letter subscription (each one is worth an alert).
    pub dead_letter_received: IntCounter,
    /// Votes that failed to commit on their own (nacked; their batch-mates committed).
    pub poison: IntCounter,
    /// Votes accepted before a close that arrived after the election was sealed.
    pub votes_after_seal: IntCounter,
    /// Batches that met an unavailable database.
    pub failed_batches: IntCounter,
    /// Votes ingest accepted with no outcome yet, and the age of the oldest, per tenant.
    pub undecided: IntGaugeVec,
    pub undecided_oldest: GaugeVec,
    /// Closed elections not sealed yet, and how long the oldest has waited.
    pub awaiting_seal: IntGauge,
    pub awaiting_seal_oldest: prometheus::Gauge,
    pub tenants: shared::metrics::TenantLabels,
}

impl WorkerMetrics {
    fn new(http: &HttpMetrics, tenants: &shared::metrics::TenantLabels) -> Self {
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            http.register(
                &Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("static metric"),
            )
        };
        Self {
            batch_size: histogram(
                "worker_batch_size",
                "Votes per committed batch",
                vec![
                    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0,
                ],
            ),
            commit_latency: histogram(
                "worker_commit_seconds",
                "Batch transaction time",
                shared::metrics::LATENCY_BUCKETS.to_vec(),
            ),
            queue_lag: histogram(
                "worker_queue_lag_seconds",
                "Time from ingest's accept to the worker's commit",
                shared::metrics::LATENCY_BUCKETS.to_vec(),
            ),
            outcomes: http.register(&shared::metrics::counter_vec(
                "worker_votes_total",
                "Votes by outcome (recorded, duplicate, or rejection reason)",
                &["outcome"],
            )),
            undecodable: http.register(&shared::metrics::counter_vec(
                "worker_undecodable_total",
                "Messages that are not votes this worker can read, by kind",
                &["kind"],
            )),
            received: http.register(&shared::metrics::counter_vec(
                "worker_messages_received_total",
                "Messages received, by subscription",
                &["subscription"],
            )),
            dead_letter_received: http.register(
                &IntCounter::new(
                    "worker_dead_letter_votes_total",
                    "Votes received from the dead-letter subscription",
                )
                .expect("static"),
            ),
            poison: http.register(
                &IntCounter::new(
                    "worker_poison_votes_total",
                    "Votes that failed to commit on their own and were nacked",
                )
                .expect("static"),
            ),
            votes_after_seal: http.register(
                &IntCounter::new(
                    "worker_votes_after_seal_total",
                    "Votes accepted before a close that arrived after its seal (resealed)",
                )
                .expect("static"),
            ),
            undecided: http.register(
                &IntGaugeVec::new(
                    Opts::new(
                        "votes_undecided",
                        "Votes accepted by ingest whose receipt has no outcome yet",
                    ),
                    &["tenant"],
                )
                .expect("static"),
            ),
            awaiting_seal: http.register(
                &IntGauge::new(
                    "elections_awaiting_seal",
                    "Closed elections whose results are not final yet",
                )
                .expect("static"),
            ),
            awaiting_seal_oldest: http.register(
                &prometheus::Gauge::new(
                    "elections_awaiting_seal_oldest_seconds",
                    "Time since the close of the oldest election not sealed yet",
                )
                .expect("static"),
            ),
            tenants: tenants.clone(),
            undecided_oldest: http.register(
                &GaugeVec::new(
                    Opts::new(
                        "votes_undecided_oldest_seconds",
                        "Age of the oldest accepted vote without an outcome",
                    ),
                    &["tenant"],
                )
                .expect("static"),
            ),
            failed_batches: http.register(
                &IntCounter::new(
                    "worker_failed_batches_total",
                    "Batch transactions that failed",
                )
                .expect("static"),
            ),
        }
    }
}

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
        let progress = {
            let pool = pool.clone();
            let settings = settings.clone();
            let activity = activity.clone();
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
        };

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
        let drain = async {
            let shutdowns = shutdown_tokens.clone();
            // Shutdown waits for every handed-out message to be acked or nacked, which the
            // batcher does; so it runs beside the batcher, not before it.
            let stopper = tokio::spawn(async move {
                for token in shutdowns {
                    token.shutdown().await;
                }
            });
            let _ = done.await;
            let _ = stopper.await;
        };
        if tokio::time::timeout(settings.shutdown_grace, drain)
            .await
            .is_err()
        {
            tracing::warn!("drain exceeded its bound; unacked messages will be redelivered");
        }
        progress.abort();
        server.abort();
        let _ = seal::forget(&pool, &settings.worker_id).await;
        tracing::info!("worker stopped");
        Ok(())
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
