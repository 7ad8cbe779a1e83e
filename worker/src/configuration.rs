//! worker's settings, read from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use shared::config::{ConfigError, DatabaseSettings, Env, PubSubSettings};
use shared::vote_keys::VoteKeys;

#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT` (Cloud Run) or `WORKER_ADDR`: serves /metrics, /healthz, /readyz.
    pub addr: SocketAddr,
    pub database: DatabaseSettings,
    pub pubsub: PubSubSettings,
    /// `VOTE_KEYS`: the keys ingest encrypts vote messages with; ballots stay encrypted with
    /// them until the seal.
    pub vote_keys: Arc<VoteKeys>,
    /// `PUBSUB_DEAD_LETTER_SUBSCRIPTION`: the dead-letter topic's subscription, consumed like
    /// the vote subscription (default `{PUBSUB_TOPIC}-dead-letter-sub`).
    pub dead_letter_subscription: String,
    /// `DEAD_LETTER_STREAMS`: StreamingPull streams on it (default 1).
    pub dead_letter_streams: usize,
    /// `PUBLISH_GRACE_MS`: how long before Pub/Sub's publish time a vote may have been accepted
    /// (default 10000; must exceed ingest's `PUBLISH_TIMEOUT_MS`): an earlier `accepted_at` counts
    /// as that bound.
    pub publish_grace: Duration,
    /// `METRICS_TENANTS`: the tenants that get a label of their own on metrics (default: all).
    pub metrics_tenants: shared::metrics::TenantLabels,
    /// `HTTP_*`: header-read and request timeouts, concurrency limit of its listener.
    pub server_limits: shared::service::ServerLimits,
    /// `WORKER_ID`: names this instance in `ops.worker_progress` (default: host and pid).
    pub worker_id: String,
    /// `BATCH_SIZE`: most votes per transaction (default 500).
    pub batch_size: usize,
    /// `BATCH_WAIT_MS`: a batch is written this long after its first vote even if not full
    /// (default 20): Pub/Sub flow control caps what is outstanding, so size alone could stall.
    pub batch_wait: Duration,
    /// `STREAMS`: StreamingPull streams (default 2).
    pub streams: usize,
    /// `WRITERS`: batches committed concurrently (default 2; keep ≤ DATABASE_MAX_CONNECTIONS).
    pub writers: usize,
    /// `MAX_OUTSTANDING`: messages leased per stream (default 2000).
    pub max_outstanding: i64,
    /// `LEASE_EXTENSION_SECS`: how far each automatic lease extension reaches (default 10,
    /// minimum 10). Short, so the messages of a crashed worker are redelivered within seconds.
    pub lease_extension: Duration,
    /// `IDLE_AFTER_MS`: quiet time after which this worker counts as caught up (default 1000).
    pub idle_after: Duration,
    /// `SEAL_DELAY_MS`: how long after a close the election may be sealed, at the earliest
    /// (default 10000; must exceed ingest's publish timeout plus its definition refresh and its
    /// ledger flush interval): also how far past the close every live ingest must have written
    /// its accepted votes before the seal.
    pub seal_delay: Duration,
    /// `SHUTDOWN_GRACE_MS`: bound on the drain at SIGTERM (default 10000).
    pub shutdown_grace: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from(Env::from_process())
    }

    pub fn from(mut env: Env) -> Result<Self, ConfigError> {
        let addr = env.listen_addr("WORKER_ADDR", "127.0.0.1:9090");
        let default_id = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
            std::process::id()
        );
        let pubsub = PubSubSettings::from_env(&mut env);
        let default_dead_letter =
            shared::pubsub::Topology::for_settings(&pubsub).dead_letter_subscription;
        let settings = Self {
            addr,
            database: DatabaseSettings::from_env(&mut env),
            vote_keys: shared::vote_keys::from_env(&mut env),
            metrics_tenants: shared::metrics::TenantLabels::from_env(&mut env),
            server_limits: shared::service::ServerLimits::from_env(&mut env),
            dead_letter_subscription: env
                .string_or("PUBSUB_DEAD_LETTER_SUBSCRIPTION", &default_dead_letter),
            dead_letter_streams: env.parse_or("DEAD_LETTER_STREAMS", 1usize),
            publish_grace: env.millis_or("PUBLISH_GRACE_MS", 10_000),
            pubsub,
            worker_id: env.string_or("WORKER_ID", &default_id),
            batch_size: env.parse_or("BATCH_SIZE", 500usize),
            batch_wait: env.millis_or("BATCH_WAIT_MS", 20),
            streams: env.parse_or("STREAMS", 2usize),
            writers: env.parse_or("WRITERS", 2usize),
            max_outstanding: env.parse_or("MAX_OUTSTANDING", 2000i64),
            lease_extension: Duration::from_secs(
                env.parse_or("LEASE_EXTENSION_SECS", 10u64).max(10),
            ),
            idle_after: env.millis_or("IDLE_AFTER_MS", 1000),
            seal_delay: env.millis_or("SEAL_DELAY_MS", 10_000),
            shutdown_grace: env.millis_or("SHUTDOWN_GRACE_MS", 10_000),
        };
        if settings.batch_size == 0 || settings.streams == 0 || settings.writers == 0 {
            env.problem("BATCH_SIZE, STREAMS and WRITERS must be at least 1");
        }
        env.finish(settings)
    }
}

impl Settings {
    pub fn dead_letter_subscription_path(&self) -> String {
        format!(
            "projects/{}/subscriptions/{}",
            self.pubsub.project, self.dead_letter_subscription
        )
    }
}
