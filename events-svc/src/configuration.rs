//! events-svc's settings, read from the environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::config::{ConfigError, DatabaseSettings, Env};
use shared::domain::{TenantId, DEFAULT_PLATFORM_ORG};
use shared::s2s::{Keyring, RetrySettings};
use shared::token::TokenSigner;

use crate::slots::{SlotKeys, MAX_HASHES_PER_CALL};

#[derive(Clone)]
pub struct Settings {
    /// `PORT` (Cloud Run) or `EVENTS_ADDR`.
    pub addr: SocketAddr,
    pub database: DatabaseSettings,
    /// `HTTP_*`: header-read and request timeouts, concurrency limit of its listener.
    pub server_limits: shared::service::ServerLimits,
    /// `ELECTIONS_URL`: the elections side's internal API (ingest), default `http://127.0.0.1:8080`.
    pub elections_url: String,
    /// `S2S_KEYS`: `keyid:tenant:base64url-secret,...`, the first key of a tenant signs. Each of
    /// these per-tenant lists may also come as one variable per tenant (`S2S_KEYS__<TENANT>`,
    /// `Env::list`), so each tenant's keys can be a secret of their own.
    pub s2s_keys: Keyring,
    /// `S2S_RETRY_BUDGET_MS` (default 3000) and `S2S_ATTEMPT_TIMEOUT_MS` (default 2000): how
    /// long one call to the elections side may take in all, and each attempt.
    pub s2s_retry: RetrySettings,
    /// `VOTING_TOKEN_SIGNING_KEYS`: `kid:tenant:base64url-seed,...`; the first key of each
    /// tenant signs its voting tokens.
    pub token_signers: Arc<HashMap<TenantId, TokenSigner>>,
    /// `VOTING_TOKEN_TTL_SECS`: lifetime of a voting token when the election has no closing
    /// time (default 12 h); otherwise it expires when the election closes.
    pub token_ttl: Duration,
    /// `TOKEN_SLOT_KEYS`: `kid:tenant:base64url-secret,...` (at least 32 bytes); the first key
    /// of each tenant derives the token slots of its new elections (see `slots`). A secret.
    pub token_slot_keys: Arc<SlotKeys>,
    /// `TOKEN_SLOT_CHUNK` (default 64): how many more slots are registered when an election's
    /// run out, and the least margin registered at opening.
    pub token_slot_chunk: u64,
    /// `WORKER_HEALTH_URL`: the worker's health and metrics listener (default
    /// `http://127.0.0.1:9090`), read for the console's live view (`routes::live`).
    pub worker_health_url: String,
    /// `SESSION_JWKS_URL`: members-fn's keys (default `http://127.0.0.1:8082/.well-known/jwks.json`).
    pub session_jwks_url: String,
    /// `SESSION_ISSUER`: the `iss` members-fn signs with (default `ekklesia-members`).
    pub session_issuer: String,
    /// `PLATFORM_ORG` (default `platform`): the organisation whose members with the `ops` role
    /// are platform operators, the only ones who may read or change the queue flag.
    pub platform_org: TenantId,
    /// `QUEUE_MODE_CHANGE_INTERVAL_MS` (default 10000): the least time between two changes of
    /// the queue flag through events-svc, platform-wide (a change sooner is a 429).
    pub queue_mode_change_interval: Duration,
    /// `EVENTS_RATE_PER_MEMBER` (default 10) and `EVENTS_RATE_GLOBAL` (default 1000): requests
    /// per second per member (session `sub`) and per instance, bursts of two seconds' worth.
    /// Admins and platform operators count against their own budget only, so a crowd cannot
    /// keep the chair from closing an election.
    pub rate_limit_per_member: u32,
    pub rate_limit_global: u32,
    /// `SESSION_JWKS_TTL_SECS` (default 300): how long fetched session keys are trusted before
    /// they are fetched again, so a key members-fn stops publishing is refused within it. If
    /// members-fn cannot be reached then, the keys held are kept for one more TTL.
    pub session_jwks_ttl: Duration,
    /// `PAGES_MEMBERS_URL` and `PAGES_INGEST_URL` (default none): the origins at which the
    /// browser reaches members-fn and ingest, for the web pages (`crate::pages`). Each of those
    /// services must list events-svc's origin in its `PAGE_ORIGINS`.
    pub pages: crate::pages::PageConfig,
    /// `AUDIT_KEY`: base64url, ≥ 32 bytes; every change of the queue flag is appended to the
    /// platform organisation's audit chain with a MAC under it (`shared::audit`). A secret.
    pub audit_key: shared::audit::AuditKey,
    /// `USAGE_FLUSH_MS` (default 60000): how often this instance adds its usage counts
    /// (requests per tenant) to the database.
    pub usage_flush: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from(Env::from_process())
    }

    pub fn from(mut env: Env) -> Result<Self, ConfigError> {
        let addr = env.listen_addr("EVENTS_ADDR", "127.0.0.1:8081");
        let database = DatabaseSettings::from_env(&mut env);
        let s2s_keys = s2s_keys(&mut env);
        let token_signers = token_signers(&mut env);
        let token_slot_keys = token_slot_keys(&mut env);
        let token_slot_chunk = env.parse_or("TOKEN_SLOT_CHUNK", 64u64);
        if !(1..=MAX_HASHES_PER_CALL as u64).contains(&token_slot_chunk) {
            env.problem(format!(
                "TOKEN_SLOT_CHUNK must be 1 to {MAX_HASHES_PER_CALL}"
            ));
        }
        let platform_org = platform_org(&mut env);
        let rate_limit_per_member = env.parse_or("EVENTS_RATE_PER_MEMBER", 10u32);
        let rate_limit_global = env.parse_or("EVENTS_RATE_GLOBAL", 1000u32);
        if rate_limit_per_member == 0 || rate_limit_global == 0 {
            env.problem("EVENTS_RATE_PER_MEMBER and EVENTS_RATE_GLOBAL must be at least 1");
        }
        let session_jwks_ttl = Duration::from_secs(env.parse_or("SESSION_JWKS_TTL_SECS", 300u64));
        if session_jwks_ttl.is_zero() {
            env.problem("SESSION_JWKS_TTL_SECS must be at least 1");
        }
        let pages = crate::pages::PageConfig {
            members_url: page_origin(&mut env, "PAGES_MEMBERS_URL"),
            ingest_url: page_origin(&mut env, "PAGES_INGEST_URL"),
        };
        let s2s_retry = s2s_retry(&mut env);
        let settings = Self {
            addr,
            server_limits: shared::service::ServerLimits::from_env(&mut env),
            database,
            elections_url: env.string_or("ELECTIONS_URL", "http://127.0.0.1:8080"),
            worker_health_url: env.string_or("WORKER_HEALTH_URL", "http://127.0.0.1:9090"),
            s2s_keys,
            s2s_retry,
            token_signers: Arc::new(token_signers),
            token_slot_keys: Arc::new(token_slot_keys),
            token_slot_chunk,
            token_ttl: Duration::from_secs(env.parse_or("VOTING_TOKEN_TTL_SECS", 12 * 3600u64)),
            session_jwks_url: env.string_or(
                "SESSION_JWKS_URL",
                "http://127.0.0.1:8082/.well-known/jwks.json",
            ),
            session_issuer: env.string_or("SESSION_ISSUER", "ekklesia-members"),
            platform_org,
            queue_mode_change_interval: env.millis_or("QUEUE_MODE_CHANGE_INTERVAL_MS", 10_000),
            rate_limit_per_member,
            rate_limit_global,
            session_jwks_ttl,
            pages,
            audit_key: shared::audit::key_from_env(&mut env),
            usage_flush: shared::usage::flush_interval_from_env(&mut env),
        };
        env.finish(settings)
    }
}

fn s2s_keys(env: &mut Env) -> Keyring {
    Keyring::from_config(&env.list("S2S_KEYS")).unwrap_or_else(|e| {
        env.problem(format!("S2S_KEYS: {e}"));
        Keyring::default()
    })
}

/// The first key of each tenant signs its voting tokens.
fn token_signers(env: &mut Env) -> HashMap<TenantId, TokenSigner> {
    let mut token_signers = HashMap::new();
    match shared::token::signers_from_config(&env.list("VOTING_TOKEN_SIGNING_KEYS")) {
        Ok(signers) => {
            for signer in signers {
                token_signers
                    .entry(signer.tenant().clone())
                    .or_insert(signer);
            }
        }
        Err(e) => env.problem(format!("VOTING_TOKEN_SIGNING_KEYS: {e}")),
    }
    token_signers
}

fn token_slot_keys(env: &mut Env) -> SlotKeys {
    SlotKeys::from_config(&env.list("TOKEN_SLOT_KEYS")).unwrap_or_else(|e| {
        env.problem(format!("TOKEN_SLOT_KEYS: {e}"));
        SlotKeys::default()
    })
}

fn platform_org(env: &mut Env) -> TenantId {
    TenantId::parse(&env.string_or("PLATFORM_ORG", DEFAULT_PLATFORM_ORG)).unwrap_or_else(|_| {
        env.problem("PLATFORM_ORG is not a tenant id (2-63 of a-z, 0-9, -)");
        TenantId::parse(DEFAULT_PLATFORM_ORG).expect("the default is a tenant id")
    })
}

/// An origin only (or nothing): it also goes into the pages' Content-Security-Policy.
fn page_origin(env: &mut Env, name: &str) -> String {
    let raw = env.string_or(name, "");
    match shared::cors::AllowedOrigins::parse(&raw) {
        Ok(_) if !raw.contains(',') => raw.trim().to_owned(),
        _ => {
            env.problem(format!("{name} is not one origin (http[s]://host[:port])"));
            String::new()
        }
    }
}

fn s2s_retry(env: &mut Env) -> RetrySettings {
    RetrySettings {
        initial: Duration::from_millis(50),
        max_interval: Duration::from_secs(1),
        max_elapsed: env.millis_or("S2S_RETRY_BUDGET_MS", 3000),
        attempt_timeout: env.millis_or("S2S_ATTEMPT_TIMEOUT_MS", 2000),
    }
}
