//! What every request handler shares: settings, the pool, the publisher, caches, limits and
//! metrics. Built by `startup`; the routes take it from here, never from `startup`.

use std::sync::Arc;

use prometheus::{Histogram, HistogramOpts, IntCounterVec};
use shared::metrics::HttpMetrics;
use sqlx::PgPool;

use crate::configuration::Settings;
use crate::definitions::Definitions;
use crate::ledger::Ledger;
use crate::publisher::VotePublisher;
use crate::queue_mode::QueueMode;
use crate::tokens::Tokens;

pub struct VoteMetrics {
    /// Votes by mode and outcome (`accepted` or the problem slug).
    pub votes: IntCounterVec,
    pub publish_latency: Histogram,
    /// Tokens checked, on the request or in a batch (a burst).
    pub tokens_checked: IntCounterVec,
}

pub struct Inner {
    pub settings: Settings,
    pub pool: PgPool,
    pub publisher: VotePublisher,
    pub definitions: Definitions,
    pub queue_mode: QueueMode,
    /// Where a vote's token is verified.
    pub tokens: Tokens,
    /// Receipts answered 202, on their way to `elections.accepted_votes`.
    pub ledger: Arc<Ledger>,
    /// Per-client and instance-wide budgets for votes with a genuine token.
    pub limits: shared::ratelimit::Limits,
    /// Per-token budget: one token cannot flood the queue.
    pub token_limits: shared::ratelimit::KeyedLimit<[u8; 32]>,
    /// Per-client and instance-wide budgets for receipt look-ups.
    pub receipt_limits: shared::ratelimit::Limits,
    pub metrics: VoteMetrics,
    /// Requests and votes per tenant, added to the database every `USAGE_FLUSH_MS`.
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

impl VoteMetrics {
    pub fn register(http_metrics: &HttpMetrics) -> Self {
        Self {
            votes: http_metrics.register(&shared::metrics::counter_vec(
                "votes_total",
                "Votes by mode and outcome",
                &["mode", "outcome", "tenant"],
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
            tokens_checked: http_metrics.register(&shared::metrics::counter_vec(
                "tokens_checked_total",
                "Voting tokens checked, on the request (few votes in flight) or in a batch (a burst)",
                &["how"],
            )),
        }
    }
}

impl AppState {
    pub fn new(
        settings: Settings,
        pool: PgPool,
        publisher: VotePublisher,
        queue_mode: QueueMode,
        metrics: VoteMetrics,
        usage: Arc<shared::usage::Usage>,
    ) -> std::io::Result<Self> {
        let tokens = Tokens::start(
            settings.token_verifier.clone(),
            metrics.tokens_checked.clone(),
        )?;
        Ok(Self(Arc::new(Inner {
            limits: shared::ratelimit::Limits::new(
                settings.rate_limit_per_client,
                settings.rate_limit_global,
            ),
            token_limits: shared::ratelimit::KeyedLimit::new(
                settings.rate_limit_per_token,
                settings.rate_limit_per_token.saturating_mul(2).max(10),
            ),
            receipt_limits: shared::ratelimit::Limits::new(
                settings.receipt_rate_per_client,
                settings.receipt_rate_global,
            ),
            definitions: Definitions::default(),
            ledger: Arc::new(Ledger::new(
                settings.instance_id.clone(),
                queue_mode.clone(),
            )),
            queue_mode,
            tokens,
            pool,
            publisher,
            metrics,
            usage,
            settings,
        })))
    }
}
