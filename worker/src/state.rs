//! What the worker's parts share: its metrics.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts,
};
use shared::metrics::{HttpMetrics, TenantLabels};

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

const BATCH_SIZE_BUCKETS: [f64; 10] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0,
];

impl WorkerMetrics {
    pub fn new(http: &HttpMetrics, tenants: &TenantLabels) -> Self {
        let r = Registrar(http);
        let latency = shared::metrics::LATENCY_BUCKETS;
        let (undecided, undecided_oldest, awaiting_seal, awaiting_seal_oldest) = r.gauges();
        Self {
            batch_size: r.histogram(
                "worker_batch_size",
                "Votes per committed batch",
                &BATCH_SIZE_BUCKETS,
            ),
            commit_latency: r.histogram("worker_commit_seconds", "Batch transaction time", latency),
            queue_lag: r.histogram(
                "worker_queue_lag_seconds",
                "Time from ingest's accept to the worker's commit",
                latency,
            ),
            outcomes: r.counters(
                "worker_votes_total",
                "Votes by outcome (recorded, duplicate, or rejection reason)",
                "outcome",
            ),
            undecodable: r.counters(
                "worker_undecodable_total",
                "Messages that are not votes this worker can read, by kind",
                "kind",
            ),
            received: r.counters(
                "worker_messages_received_total",
                "Messages received, by subscription",
                "subscription",
            ),
            dead_letter_received: r.counter(
                "worker_dead_letter_votes_total",
                "Votes received from the dead-letter subscription",
            ),
            poison: r.counter(
                "worker_poison_votes_total",
                "Votes that failed to commit on their own and were nacked",
            ),
            votes_after_seal: r.counter(
                "worker_votes_after_seal_total",
                "Votes accepted before a close that arrived after its seal (resealed)",
            ),
            failed_batches: r.counter(
                "worker_failed_batches_total",
                "Batch transactions that failed",
            ),
            undecided,
            undecided_oldest,
            awaiting_seal,
            awaiting_seal_oldest,
            tenants: tenants.clone(),
        }
    }
}

/// Registers the worker's metrics with the service's registry (names and help are static, so
/// a failure is a bug caught by every test that starts a worker).
struct Registrar<'a>(&'a HttpMetrics);

impl Registrar<'_> {
    fn register<M>(&self, metric: prometheus::Result<M>) -> M
    where
        M: prometheus::core::Collector + Clone + 'static,
    {
        self.0.register(&metric.expect("static metric"))
    }
    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        ))
    }
    /// Undecided votes (count and oldest, per tenant) and elections awaiting their seal.
    fn gauges(&self) -> (IntGaugeVec, GaugeVec, IntGauge, Gauge) {
        let r = self;
        (
            r.register(IntGaugeVec::new(
                Opts::new(
                    "votes_undecided",
                    "Votes accepted by ingest whose receipt has no outcome yet",
                ),
                &["tenant"],
            )),
            r.register(GaugeVec::new(
                Opts::new(
                    "votes_undecided_oldest_seconds",
                    "Age of the oldest accepted vote without an outcome",
                ),
                &["tenant"],
            )),
            r.register(IntGauge::new(
                "elections_awaiting_seal",
                "Closed elections whose results are not final yet",
            )),
            r.register(Gauge::new(
                "elections_awaiting_seal_oldest_seconds",
                "Time since the close of the oldest election not sealed yet",
            )),
        )
    }
    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help))
    }
    fn counters(&self, name: &str, help: &str, label: &str) -> IntCounterVec {
        self.0
            .register(&shared::metrics::counter_vec(name, help, &[label]))
    }
}
