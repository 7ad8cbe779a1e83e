//! Prometheus metrics, `/metrics`, `/healthz` and `/readyz`.
//!
//! Each application instance owns its own [`prometheus::Registry`] (tests run several apps in
//! one process, and the global registry would refuse the second registration).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, fine-grained below 100 ms where the targets are.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Request rate, errors and latency per route, labelled with the service.
#[derive(Clone)]
pub struct HttpMetrics {
    pub registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Where requests are counted per tenant, for services that report usage.
    usage: Option<Arc<crate::usage::Usage>>,
}

impl HttpMetrics {
    pub fn new(service: &str) -> Self {
        let registry = Registry::new_custom(
            None,
            Some([("service".to_owned(), service.to_owned())].into()),
        )
        .unwrap_or_default();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("static metric definition");
        let _ = registry.register(Box::new(requests.clone()));
        let _ = registry.register(Box::new(latency.clone()));
        Self {
            registry,
            requests,
            latency,
            usage: None,
        }
    }

    /// Counts every request whose tenant becomes known in `usage`
    /// ([`crate::telemetry::record_tenant`]).
    pub fn with_usage(mut self, usage: Arc<crate::usage::Usage>) -> Self {
        self.usage = Some(usage);
        self
    }

    pub fn usage(&self) -> Option<&crate::usage::Usage> {
        self.usage.as_deref()
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, latency: Duration) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[route, method])
            .observe(latency.as_secs_f64());
    }

    /// Registers a service-specific collector; a duplicate name is a programming error.
    pub fn register<C: prometheus::core::Collector + Clone + 'static>(&self, collector: &C) -> C {
        if let Err(e) = self.registry.register(Box::new(collector.clone())) {
            tracing::error!(error = %e, "metric registration failed");
        }
        collector.clone()
    }

    pub fn render(&self) -> Response {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if encoder
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        (
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            buffer,
        )
            .into_response()
    }
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("static metric definition")
}

pub type ReadinessFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
/// Checks that the dependencies a service needs are reachable; `Err` names the one that is not.
pub type ReadinessCheck = Arc<dyn Fn() -> ReadinessFuture + Send + Sync>;

/// A pool's connections in use, idle and at most (`db_pool_*`, sampled every second): in use
/// over max above 0.8 for a minute is what the saturation alert watches.
pub struct PoolMetrics {
    in_use: prometheus::IntGauge,
    idle: prometheus::IntGauge,
    max: prometheus::IntGauge,
}

impl PoolMetrics {
    pub fn register(http: &HttpMetrics, max_connections: u32) -> Self {
        let gauge = |name: &str, help: &str| {
            http.register(&prometheus::IntGauge::new(name, help).expect("static metric"))
        };
        let metrics = Self {
            in_use: gauge("db_pool_in_use", "Database connections in use"),
            idle: gauge("db_pool_idle", "Database connections open and idle"),
            max: gauge(
                "db_pool_max_connections",
                "Most database connections the pool opens",
            ),
        };
        metrics.max.set(i64::from(max_connections));
        metrics
    }

    pub fn sample(&self, pool: &sqlx::PgPool) {
        let idle = pool.num_idle();
        self.idle.set(idle as i64);
        self.in_use
            .set((pool.size() as usize).saturating_sub(idle) as i64);
    }

    /// Samples `pool` every second until the returned guard is dropped.
    pub fn spawn_sampler(self, pool: sqlx::PgPool) -> Sampler {
        Sampler(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                self.sample(&pool);
            }
        }))
    }
}

/// A background sampling task, stopped when dropped.
pub struct Sampler(tokio::task::JoinHandle<()>);

impl Drop for Sampler {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `tenant` label of metrics: the tenant itself if `METRICS_TENANTS` lists it (or lists
/// nothing), `other` otherwise, so a platform with many small parties keeps its series few.
#[derive(Debug, Clone, Default)]
pub struct TenantLabels {
    listed: Option<std::collections::HashSet<String>>,
}

impl TenantLabels {
    pub fn from_env(env: &mut crate::config::Env) -> Self {
        let listed = env.optional_string("METRICS_TENANTS").map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        });
        Self { listed }
    }

    pub fn label<'a>(&self, tenant: &'a str) -> &'a str {
        match &self.listed {
            Some(listed) if !listed.contains(tenant) => "other",
            _ => tenant,
        }
    }
}

/// `check`, run at most once per `ttl`: callers within `ttl` of the last run get its result, and
/// concurrent callers share one run. A probe flood costs the dependency one check per `ttl`.
pub fn cached_readiness(check: ReadinessCheck, ttl: Duration) -> ReadinessCheck {
    type Last = Option<(std::time::Instant, Result<(), String>)>;
    let last: Arc<tokio::sync::Mutex<Last>> = Arc::new(tokio::sync::Mutex::new(None));
    Arc::new(move || {
        let (check, last) = (check.clone(), last.clone());
        Box::pin(async move {
            // Held across the check: concurrent callers wait for the one running and reuse it.
            let mut last = last.lock().await;
            if let Some((at, result)) = last.as_ref() {
                if at.elapsed() < ttl {
                    return result.clone();
                }
            }
            let result = check().await;
            *last = Some((std::time::Instant::now(), result.clone()));
            result
        })
    })
}

/// `/metrics`, `/healthz` (the process is alive) and `/readyz` (its dependencies answer).
pub fn operational_routes<S: Clone + Send + Sync + 'static>(
    metrics: HttpMetrics,
    ready: ReadinessCheck,
) -> Router<S> {
    probe_routes(ready).route("/metrics", get(move || async move { metrics.render() }))
}

/// `/healthz` and `/readyz` only (a public listener that keeps its metrics to itself).
pub fn probe_routes<S: Clone + Send + Sync + 'static>(ready: ReadinessCheck) -> Router<S> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match tokio::time::timeout(Duration::from_secs(3), ready()).await {
                        Ok(Ok(())) => Json(serde_json::json!({"status": "ready"})).into_response(),
                        Ok(Err(what)) => crate::problem::Problem::unavailable("not-ready", what, 5)
                            .into_response(),
                        Err(_) => crate::problem::Problem::unavailable(
                            "not-ready",
                            "readiness check timed out",
                            5,
                        )
                        .into_response(),
                    }
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn tenants_not_listed_are_labelled_other() {
        let mut env = crate::config::Env::from_map([("METRICS_TENANTS", "party-a, party-b")]);
        let labels = TenantLabels::from_env(&mut env);
        assert_eq!(labels.label("party-a"), "party-a");
        assert_eq!(labels.label("party-z"), "other");
        let every = TenantLabels::from_env(&mut crate::config::Env::from_map(std::iter::empty::<(
            String,
            String,
        )>()));
        assert_eq!(every.label("party-z"), "party-z");
    }

    #[tokio::test]
    async fn a_probe_flood_costs_one_check_per_interval() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let check: ReadinessCheck = Arc::new(move || {
            let counted = counted.clone();
            Box::pin(async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            })
        });
        let cached = cached_readiness(check, Duration::from_secs(60));
        let answers = futures_join(500, || cached()).await;
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // After the interval the next probe checks again.
        let fresh = cached_readiness(
            Arc::new(|| Box::pin(async { Err("database unreachable".to_owned()) })),
            Duration::ZERO,
        );
        assert_eq!(fresh().await, Err("database unreachable".to_owned()));
    }

    async fn futures_join<F>(n: usize, f: impl Fn() -> F) -> Vec<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(f())).collect();
        let mut out = Vec::with_capacity(n);
        for task in tasks {
            out.push(task.await.expect("task"));
        }
        out
    }
}
