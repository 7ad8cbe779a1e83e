//! ingest's settings, read from the environment.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::config::{ConfigError, DatabaseSettings, Env, PubSubSettings};
use shared::receipt::ReceiptKey;
use shared::s2s::Keyring;
use shared::token::TokenVerifier;
use shared::vote_keys::VoteKeys;

#[derive(Clone)]
pub struct Settings {
    /// `PORT` (Cloud Run) or `INGEST_ADDR`; port 0 picks a free port (tests). With
    /// `INGEST_SERVE=internal` this is where the internal API is served.
    pub addr: SocketAddr,
    /// `INTERNAL_ADDR` (default 127.0.0.1:8079): the elections side's internal API (S2S), its
    /// OpenAPI document and `/metrics`, never on the public listener.
    pub internal_addr: SocketAddr,
    /// `INGEST_SERVE`: `both` (default: public on `addr`, internal on `internal_addr`), `public`
    /// or `internal` (only that one, on `addr`: Cloud Run serves one port per service, so the
    /// internal API is a second service from the same image with internal ingress).
    pub serve: Serve,
    /// `METRICS_TENANTS`: the tenants that get a label of their own on metrics (default: all).
    pub metrics_tenants: shared::metrics::TenantLabels,
    /// `HTTP_*`: header-read and request timeouts, concurrency limit (every listener).
    pub server_limits: shared::service::ServerLimits,
    pub database: DatabaseSettings,
    pub pubsub: PubSubSettings,
    /// `VOTING_TOKEN_PUBLIC_KEYS`: `kid:tenant:base64url-key,...` (also from
    /// `VOTING_TOKEN_PUBLIC_KEYS__<TENANT>`, one variable per tenant: `Env::list`).
    pub token_verifier: TokenVerifier,
    /// `RECEIPT_KEY`: base64url, ≥ 32 bytes; the same on every instance.
    pub receipt_key: ReceiptKey,
    /// `S2S_KEYS`: keys events-svc signs internal calls with (also from `S2S_KEYS__<TENANT>`).
    pub s2s_keys: Keyring,
    /// `VOTE_KEYS`: `kid:base64url-secret,...`, shared with the worker only: vote messages and
    /// direct-mode ballots are encrypted with the first.
    pub vote_keys: Arc<VoteKeys>,
    /// `AUDIT_KEY`: base64url, ≥ 32 bytes; every S2S event is appended to the caller's audit
    /// chain with a MAC under it (`shared::audit`). A secret the database never sees.
    pub audit_key: shared::audit::AuditKey,
    /// `USAGE_FLUSH_MS` (default 60000): how often this instance adds its usage counts
    /// (requests, votes per tenant) to the database.
    pub usage_flush: Duration,
    /// `INSTANCE_ID`: names this instance in `ops.ingest_ledger` (default: host, pid, random).
    pub instance_id: String,
    /// `LEDGER_FLUSH_MS`: how often accepted receipts are written to the ledger (default 250).
    pub ledger_flush: Duration,
    /// `QUEUE_MODE_DEFAULT`: the mode until ops set one (`ops.queue_mode`).
    pub queue_mode_default: bool,
    /// `QUEUE_MODE_POLL_MS`: how often the live flag is re-read (default 1000).
    pub queue_mode_poll: Duration,
    /// `PUBLISH_TIMEOUT_MS`: longest wait for Pub/Sub to acknowledge a publish (default 2000).
    pub publish_timeout: Duration,
    /// `PUBLISH_BATCH_DELAY_MS`: how long the publisher may hold a message to share a Publish
    /// request (default 5; see BENCHMARKS.md).
    pub publish_batch_delay: Duration,
    /// `DEFINITION_REFRESH_MS`: how often cached election definitions are re-read (default 2000).
    pub definition_refresh: Duration,
    /// `RATE_LIMIT_PER_CLIENT` / `RATE_LIMIT_GLOBAL`: votes per second with a genuine token
    /// (burst = 2 s worth), per client address and per instance. The per-client default is
    /// generous on purpose: a whole meeting hall may share one address behind the venue's NAT.
    pub rate_limit_per_client: u32,
    pub rate_limit_global: u32,
    /// `RATE_LIMIT_PER_TOKEN` (1 per second, bursts of 10): submissions one voting token may
    /// make, so one token cannot flood the queue; a voter's client retries fit easily.
    pub rate_limit_per_token: u32,
    /// `RECEIPT_RATE_PER_CLIENT` (20) / `RECEIPT_RATE_GLOBAL` (500): receipt look-ups per second,
    /// so polling receipts cannot take the database connections votes need.
    pub receipt_rate_per_client: u32,
    pub receipt_rate_global: u32,
    /// `PAGE_ORIGINS` (default none): the web pages' origins allowed to call the vote path
    /// (`shared::cors`).
    pub page_origins: shared::cors::AllowedOrigins,
    /// `TRUSTED_PROXY_HOPS` (0): proxies in front of ingest that append to `X-Forwarded-For`
    /// (Cloud Run: 1); the client address for rate limits is the entry the farthest one added.
    pub trusted_proxy_hops: usize,
    /// `MAX_BODY_BYTES` (default 16 KiB).
    pub max_body_bytes: usize,
}

/// Which listeners this instance serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    Both,
    Public,
    Internal,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from(Env::from_process())
    }

    pub fn from(mut env: Env) -> Result<Self, ConfigError> {
        let addr = env.listen_addr("INGEST_ADDR", "127.0.0.1:8080");
        let database = DatabaseSettings::from_env(&mut env);
        let pubsub = PubSubSettings::from_env(&mut env);
        let token_verifier = token_verifier(&mut env);
        let receipt_key = receipt_key(&mut env);
        let s2s_keys = s2s_keys(&mut env);
        let vote_keys = shared::vote_keys::from_env(&mut env);
        let serve = serve(&mut env);
        let internal_addr = env
            .string_or("INTERNAL_ADDR", "127.0.0.1:8079")
            .parse()
            .unwrap_or_else(|_| {
                env.problem("INTERNAL_ADDR must be host:port");
                SocketAddr::from(([127, 0, 0, 1], 0))
            });
        let settings = Self {
            addr,
            internal_addr,
            serve,
            server_limits: shared::service::ServerLimits::from_env(&mut env),
            metrics_tenants: shared::metrics::TenantLabels::from_env(&mut env),
            vote_keys,
            audit_key: shared::audit::key_from_env(&mut env),
            usage_flush: shared::usage::flush_interval_from_env(&mut env),
            instance_id: env.string_or("INSTANCE_ID", &default_instance()),
            ledger_flush: env.millis_or("LEDGER_FLUSH_MS", 250),
            database,
            pubsub,
            token_verifier,
            receipt_key,
            s2s_keys,
            queue_mode_default: env.bool_or("QUEUE_MODE_DEFAULT", true),
            queue_mode_poll: env.millis_or("QUEUE_MODE_POLL_MS", 1000),
            publish_timeout: env.millis_or("PUBLISH_TIMEOUT_MS", 2000),
            publish_batch_delay: env.millis_or("PUBLISH_BATCH_DELAY_MS", 5),
            definition_refresh: env.millis_or("DEFINITION_REFRESH_MS", 2000),
            rate_limit_per_client: env.parse_or("RATE_LIMIT_PER_CLIENT", 2000),
            rate_limit_global: env.parse_or("RATE_LIMIT_GLOBAL", 20000),
            rate_limit_per_token: env.parse_or("RATE_LIMIT_PER_TOKEN", 1),
            receipt_rate_per_client: env.parse_or("RECEIPT_RATE_PER_CLIENT", 20),
            receipt_rate_global: env.parse_or("RECEIPT_RATE_GLOBAL", 500),
            page_origins: shared::cors::AllowedOrigins::from_env(&mut env),
            trusted_proxy_hops: env.parse_or("TRUSTED_PROXY_HOPS", 0),
            max_body_bytes: env.parse_or("MAX_BODY_BYTES", 16 * 1024),
        };
        if settings.rates().contains(&0) {
            env.problem("rate limits must be at least 1 per second");
        }
        env.finish(settings)
    }

    fn rates(&self) -> [u32; 5] {
        [
            self.rate_limit_per_client,
            self.rate_limit_global,
            self.rate_limit_per_token,
            self.receipt_rate_per_client,
            self.receipt_rate_global,
        ]
    }
}

fn token_verifier(env: &mut Env) -> TokenVerifier {
    match TokenVerifier::from_config(&env.list("VOTING_TOKEN_PUBLIC_KEYS")) {
        Ok(v) => v,
        Err(e) => {
            env.problem(format!("VOTING_TOKEN_PUBLIC_KEYS: {e}"));
            TokenVerifier::new()
        }
    }
}

fn receipt_key(env: &mut Env) -> ReceiptKey {
    match ReceiptKey::from_base64(&env.string("RECEIPT_KEY")) {
        Ok(k) => k,
        Err(e) => {
            env.problem(format!("RECEIPT_KEY: {e}"));
            ReceiptKey::new(vec![0; 32]).expect("32 bytes")
        }
    }
}

fn s2s_keys(env: &mut Env) -> Keyring {
    match Keyring::from_config(&env.optional_list("S2S_KEYS").unwrap_or_default()) {
        Ok(k) => k,
        Err(e) => {
            env.problem(format!("S2S_KEYS: {e}"));
            Keyring::default()
        }
    }
}

fn serve(env: &mut Env) -> Serve {
    match env.string_or("INGEST_SERVE", "both").as_str() {
        "both" => Serve::Both,
        "public" => Serve::Public,
        "internal" => Serve::Internal,
        _ => {
            env.problem("INGEST_SERVE must be both, public or internal");
            Serve::Both
        }
    }
}

/// `INSTANCE_ID`'s default: host, pid and a random suffix.
fn default_instance() -> String {
    format!(
        "ingest-{}-{}-{:08x}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
        std::process::id(),
        rand_suffix()
    )
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    // Two instances on one host (tests) must not share an id; no cryptographic need here.
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}
