//! Test support for every crate's integration tests, the benchmarks and the load-test harness;
//! never a dependency of a service (infra/local/test.sh checks): a fresh database per test
//! cloned from a migrated template, a fresh topic and subscription per test on the Pub/Sub
//! emulator, generated keys, a TCP proxy that can cut or freeze a connection, the services
//! in this process ([`services`], [`elections::Stack`]), a driver for the local OIDC provider,
//! an OTLP collector, [`eventually`], and `TEST_LOG=1` ([`log`]).
//!
//! It needs the local stack (`infra/local/up.sh`): `EKKLESIA_ADMIN_DATABASE_URL` and
//! `PUBSUB_EMULATOR_HOST` must be set (`source infra/local/env.sh`).

mod db;
pub mod elections;
mod keys;
pub mod log;
pub mod oidc_provider;
pub mod otlp;
mod proxy;
mod pubsub;
pub mod services;
mod wait;

pub use db::{database_addr, Role, TestDb};
pub use keys::TestKeys;
pub use proxy::TcpProxy;
pub use pubsub::TestPubSub;
pub use wait::{eventually, eventually_every, Condition, TimedOut, POLL};

use std::time::Duration;

use uuid::Uuid;

/// Waits until ingest at `ingest_url` answers votes on `election` (an open election of the
/// signer's tenant with an option `choice`) in queue mode (202) or in direct mode. It probes
/// with tokens whose ids were never registered, which count nowhere: direct mode refuses them
/// (`token-not-registered`), and in queue mode the worker rejects them later.
pub async fn until_ingest_mode(
    http: &reqwest::Client,
    ingest_url: &str,
    signer: &shared::token::TokenSigner,
    election: Uuid,
    choice: &str,
    queue: bool,
) {
    eventually_every(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let now = chrono::Utc::now();
            let (probe, _) = signer.issue(
                election,
                now - chrono::Duration::seconds(60),
                now + chrono::Duration::minutes(5),
            );
            let answer = http
                .post(format!("{ingest_url}/v1/elections/{election}/ballots"))
                .bearer_auth(&probe)
                .json(&serde_json::json!({ "choices": [choice] }))
                .send()
                .await
                .expect("ingest answers");
            let status = answer.status().as_u16();
            let body: serde_json::Value = answer.json().await.unwrap_or_default();
            let slug = body["type"].as_str().and_then(|t| t.rsplit('/').next());
            let in_queue_mode = match (status, slug) {
                (202, _) => true,
                (403, Some("token-not-registered")) => false,
                _ => panic!("probe vote: {status} {body}"),
            };
            if in_queue_mode == queue {
                Ok(())
            } else {
                Err(format!("still answering {status}"))
            }
        },
    )
    .await
    .expect("ingest followed the queue flag");
}
