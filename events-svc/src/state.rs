//! What every request handler shares: settings, the pool, clients and counters. Built once by
//! `startup` and handed to the routes as axum state; the routes import this module, never
//! `startup`, so `startup` can import the routes to build the router.

use std::sync::Arc;

use prometheus::IntCounterVec;
use shared::metrics::HttpMetrics;
use shared::s2s::Client;
use shared::session::SessionVerifier;
use sqlx::PgPool;

use crate::configuration::Settings;
use crate::elections_side::ElectionsSide;
use crate::limits::Limits;

pub struct Inner {
    pub settings: Settings,
    pub pool: PgPool,
    pub sessions: SessionVerifier,
    pub elections: ElectionsSide,
    /// Requests per member and per instance (checked with the session, `auth`).
    pub limits: Limits,
    /// Held while this instance registers more token slots (`slots::register_more`).
    pub slot_registrations: tokio::sync::Mutex<()>,
    /// For the console's live view (`routes::ops::live`): short timeouts, loopback or internal.
    pub probe: reqwest::Client,
    /// Token requests by outcome (`issued` or the problem slug).
    pub tokens: IntCounterVec,
    /// Requests per tenant, added to the database every `USAGE_FLUSH_MS`.
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

impl AppState {
    /// The state of one instance; registers its own counters with `metrics`.
    pub fn new(
        settings: Settings,
        pool: PgPool,
        metrics: &HttpMetrics,
        usage: Arc<shared::usage::Usage>,
    ) -> Self {
        let tokens = metrics.register(&shared::metrics::counter_vec(
            "voting_tokens_total",
            "Voting token requests by outcome",
            &["outcome"],
        ));
        Self(Arc::new(Inner {
            sessions: SessionVerifier::with_key_ttl(
                settings.session_jwks_url.clone(),
                settings.session_issuer.clone(),
                http_client(std::time::Duration::from_secs(3)),
                settings.session_jwks_ttl,
            ),
            elections: ElectionsSide::new(Client::new(
                settings.elections_url.clone(),
                settings.s2s_keys.clone(),
                settings.s2s_retry.clone(),
            )),
            probe: http_client(std::time::Duration::from_secs(1)),
            tokens,
            usage,
            limits: Limits::new(settings.rate_limit_per_member, settings.rate_limit_global),
            slot_registrations: tokio::sync::Mutex::new(()),
            pool,
            settings,
        }))
    }
}

fn http_client(timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}
