//! A whole elections side for one test: a fresh database, a fresh topic and subscription on the
//! emulator, ingest serving real HTTP on 127.0.0.1, and workers in this process (or, from the
//! worker's own tests, as a process).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::Method;
use chrono::Utc;
use serde_json::{json, Value};
use shared::domain::TenantId;
use shared::s2s::{Client, RetrySettings};
use shared::telemetry::CorrelationId;
use shared::vote::VoteMessage;
use uuid::Uuid;

use crate::services::{self, Ingest, Running, ServiceEnv};
use crate::{eventually, TestDb, TestKeys, TestPubSub};

pub const TENANT: &str = "party-a";
pub const OTHER_TENANT: &str = "party-b";

pub struct Stack {
    pub db: TestDb,
    pub pubsub: TestPubSub,
    pub keys: TestKeys,
    /// The vote path.
    pub ingest_url: String,
    /// The elections side's internal API (S2S) and ingest's `/metrics`.
    pub internal_url: String,
    pub http: reqwest::Client,
    pub s2s: Client,
    /// The settings ingest was built from, for another instance of it.
    ingest_env: ServiceEnv,
    /// Its worker's settings, each worker with its own `WORKER_ID`.
    worker_env: ServiceEnv,
    _ingest: Ingest,
    workers: Vec<Running>,
}

pub struct StackOptions {
    pub queue_mode: bool,
    /// Overrides the emulator address ingest publishes to (to simulate an outage).
    pub ingest_pubsub_host: Option<String>,
    pub publish_timeout_ms: u64,
    pub extra_env: Vec<(&'static str, String)>,
    pub max_delivery_attempts: i32,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            queue_mode: true,
            ingest_pubsub_host: None,
            publish_timeout_ms: 2000,
            extra_env: Vec::new(),
            max_delivery_attempts: 5,
        }
    }
}

impl Stack {
    pub async fn start(options: StackOptions) -> Self {
        Self::start_on(TestDb::create().await, options).await
    }

    /// The stack on a database the test prepared (e.g. an older release's schema).
    pub async fn start_on(db: TestDb, options: StackOptions) -> Self {
        crate::log::init();
        let pubsub = TestPubSub::create_with(options.max_delivery_attempts).await;
        let keys = TestKeys::new(&[TENANT, OTHER_TENANT]);
        let mut env = services::ingest_env(&db, &pubsub, &keys);
        env.extend([
            ("DATABASE_MAX_CONNECTIONS", "3".to_owned()),
            ("QUEUE_MODE_DEFAULT", options.queue_mode.to_string()),
            ("PUBLISH_TIMEOUT_MS", options.publish_timeout_ms.to_string()),
            ("LEDGER_FLUSH_MS", "100".to_owned()),
            // Tests poll receipts far faster than a voter's page would.
            ("RECEIPT_RATE_PER_CLIENT", "100000".to_owned()),
            ("RECEIPT_RATE_GLOBAL", "100000".to_owned()),
        ]);
        if let Some(host) = &options.ingest_pubsub_host {
            env.set("PUBSUB_EMULATOR_HOST", host.clone());
        }
        env.extend(options.extra_env.iter().cloned());
        let mut worker_env = services::worker_env(&db, &pubsub, &keys);
        worker_env.extend([
            ("DATABASE_MAX_CONNECTIONS", "3".to_owned()),
            (
                "PUBSUB_DEAD_LETTER_SUBSCRIPTION",
                pubsub.topology.dead_letter_subscription.clone(),
            ),
            ("SHUTDOWN_GRACE_MS", "5000".to_owned()),
        ]);
        let ingest = services::spawn_ingest(&env).await;
        let ingest_url = ingest.url.clone();
        let internal_url = ingest.internal_url.clone();
        let s2s = Client::new(&internal_url, keys.s2s.clone(), RetrySettings::default());
        Self {
            db,
            pubsub,
            keys,
            ingest_url,
            internal_url,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            s2s,
            ingest_env: env,
            worker_env,
            _ingest: ingest,
            workers: Vec::new(),
        }
    }

    /// Another ingest instance on the same database, topic and keys (a second replica, or the
    /// first one after a restart); it stops when dropped.
    pub async fn another_ingest(&self) -> Ingest {
        services::spawn_ingest(&self.ingest_env).await
    }

    pub fn worker_settings(&self) -> worker::configuration::Settings {
        services::worker_settings(&self.worker_env())
    }

    /// The worker's settings, with a `WORKER_ID` of its own.
    pub fn worker_env(&self) -> ServiceEnv {
        let mut env = self.worker_env.clone();
        env.set("WORKER_ID", format!("w-{}", Uuid::new_v4().simple()));
        env
    }

    /// Runs a worker in this process until the stack is dropped; returns where it serves
    /// /metrics.
    pub async fn start_worker(&mut self, settings: worker::configuration::Settings) -> SocketAddr {
        let worker = services::spawn_worker(settings).await;
        let addr = worker.addr;
        self.workers.push(worker);
        addr
    }

    /// A further subscription (no retry or dead-letter policy) on the vote topic; its path.
    pub async fn observer_subscription(&self, name: &str) -> String {
        let path = format!(
            "projects/{}/subscriptions/{}-{name}",
            self.pubsub.settings.project, self.pubsub.settings.topic
        );
        shared::pubsub::subscription_admin(&self.pubsub.settings)
            .await
            .expect("subscription admin")
            .create_subscription()
            .set_name(&path)
            .set_topic(self.pubsub.settings.topic_path())
            .set_ack_deadline_seconds(30)
            .send()
            .await
            .expect("observer subscription");
        path
    }

    /// The emulator's socket address (what a [`crate::TcpProxy`] forwards to).
    pub async fn emulator_addr(&self) -> SocketAddr {
        let host = self
            .pubsub
            .settings
            .emulator_host
            .clone()
            .expect("tests run against the emulator");
        tokio::net::lookup_host(host.trim_start_matches("http://").to_owned())
            .await
            .expect("resolve the emulator")
            .next()
            .expect("an address")
    }

    pub fn tenant(&self, name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    /// Creates and opens an election with options `o0..o{n-1}` over the signed internal API.
    pub async fn open_election(
        &self,
        tenant: &str,
        kind: &str,
        options: usize,
        max_choices: u32,
    ) -> Uuid {
        let id = Uuid::new_v4();
        let body = json!({
            "kind": kind,
            "options": (0..options).map(|i| json!({"id": format!("o{i}"), "label": format!("Option {i}")})).collect::<Vec<_>>(),
            "max_choices": max_choices,
            "status": "open",
            "opens_at": null,
            "closes_at": null,
        });
        self.put_election(tenant, id, body).await;
        id
    }

    pub async fn put_election(&self, tenant: &str, id: Uuid, body: Value) {
        self.s2s
            .call(
                &self.tenant(tenant),
                Method::PUT,
                &format!("/internal/v1/elections/{id}"),
                Some(&body),
                Some(&Uuid::new_v4().to_string()),
                &CorrelationId::new(),
            )
            .await
            .expect("election stored");
    }

    pub async fn close_election(
        &self,
        tenant: &str,
        id: Uuid,
        kind: &str,
        options: usize,
        max_choices: u32,
    ) {
        let body = json!({
            "kind": kind,
            "options": (0..options).map(|i| json!({"id": format!("o{i}"), "label": format!("Option {i}")})).collect::<Vec<_>>(),
            "max_choices": max_choices,
            "status": "closed",
            "opens_at": null,
            "closes_at": null,
        });
        self.put_election(tenant, id, body).await;
    }

    /// Issues `n` tokens and registers their hashes, as events-svc does.
    pub async fn tokens(&self, tenant: &str, election: Uuid, n: usize) -> Vec<String> {
        let signer = self.keys.signer(tenant);
        let now = Utc::now();
        let mut tokens = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        for _ in 0..n {
            let (token, hash) = signer.issue(
                election,
                now - chrono::Duration::seconds(1),
                now + chrono::Duration::hours(1),
            );
            tokens.push(token);
            hashes.push(hash.to_hex());
        }
        for chunk in hashes.chunks(5000) {
            self.s2s
                .call(
                    &self.tenant(tenant),
                    Method::POST,
                    &format!("/internal/v1/elections/{election}/tokens"),
                    Some(&json!({"token_hashes": chunk})),
                    Some(&Uuid::new_v4().to_string()),
                    &CorrelationId::new(),
                )
                .await
                .expect("tokens registered");
        }
        tokens
    }

    pub async fn vote(&self, election: Uuid, token: &str, choices: &[&str]) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/v1/elections/{election}/ballots",
                self.ingest_url
            ))
            .bearer_auth(token)
            .json(&json!({"choices": choices}))
            .send()
            .await
            .expect("ingest answers")
    }

    pub async fn receipt(&self, receipt: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/v1/receipts/{receipt}", self.ingest_url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn results(&self, tenant: &str, election: Uuid) -> Value {
        self.s2s
            .call(
                &self.tenant(tenant),
                Method::GET,
                &format!("/internal/v1/elections/{election}/results"),
                None,
                None,
                &CorrelationId::new(),
            )
            .await
            .expect("results")
            .json()
            .unwrap()
    }

    /// Ballots recorded: encrypted in the ballot box until the seal, in `ballots` after it.
    pub async fn ballot_count(&self, election: Uuid) -> i64 {
        sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM elections.ballots WHERE election_id = $1) \
                  + (SELECT count(*) FROM elections.ballot_box WHERE election_id = $1)",
        )
        .bind(election)
        .fetch_one(&self.db.owner)
        .await
        .unwrap()
    }

    pub fn vote_keys(&self) -> shared::vote_keys::VoteKeys {
        self.keys.vote_keys()
    }

    /// The vote message ingest would publish for `token` (no HTTP, any `accepted_at`).
    pub fn message(
        &self,
        election: Uuid,
        token: &str,
        choices: &[&str],
        accepted_at: chrono::DateTime<Utc>,
    ) -> VoteMessage {
        let verifier =
            shared::token::TokenVerifier::from_config(&self.keys.public_keys_config()).unwrap();
        let verified = verifier
            .verify(token, election, Utc::now())
            .expect("a valid token");
        let choices: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
        let submission = shared::receipt::submission_digest(&choices, None);
        VoteMessage {
            tenant: verified.tenant.clone(),
            election_id: election,
            token_hash: verified.token_hash(),
            receipt: self
                .keys
                .receipt_key()
                .derive(election, verified.token_id(), &submission),
            choices,
            accepted_at,
        }
    }

    /// Publishes `message` to the vote topic (encrypted with `keys`), as ingest does.
    pub async fn publish(&self, message: &VoteMessage, keys: &shared::vote_keys::VoteKeys) {
        let publisher = shared::pubsub::publisher(
            &self.pubsub.settings,
            Duration::from_secs(10),
            Duration::from_millis(1),
        )
        .await
        .expect("publisher");
        publisher
            .publish(message.encode(keys, "test"))
            .await
            .expect("published");
    }

    /// The token's hash on the elections side.
    pub fn token_hash(&self, election: Uuid, token: &str) -> shared::domain::TokenHash {
        self.message(election, token, &["o0"], Utc::now())
            .token_hash
    }

    /// Votes with an `Idempotency-Key`.
    pub async fn vote_with_key(
        &self,
        election: Uuid,
        token: &str,
        choices: &[&str],
        key: &str,
    ) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/v1/elections/{election}/ballots",
                self.ingest_url
            ))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({"choices": choices}))
            .send()
            .await
            .expect("ingest answers")
    }

    /// Waits until every receipt has an outcome (recorded or rejected); returns the statuses.
    pub async fn wait_decided(
        &self,
        receipts: &[String],
        within: Duration,
    ) -> HashMap<String, String> {
        eventually(within, || async {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT receipt, status FROM elections.receipts WHERE receipt = ANY($1)",
            )
            .bind(receipts)
            .fetch_all(&self.db.owner)
            .await
            .unwrap();
            if rows.len() == receipts.len() {
                Ok(rows.into_iter().collect())
            } else {
                Err(format!(
                    "only {} of {} votes decided",
                    rows.len(),
                    receipts.len()
                ))
            }
        })
        .await
        .expect("every vote decided in time")
    }

    pub async fn wait_final(&self, tenant: &str, election: Uuid, within: Duration) -> Value {
        eventually(within, || async {
            let results = self.results(tenant, election).await;
            if results["final"] == json!(true) {
                Ok(results)
            } else {
                Err(results)
            }
        })
        .await
        .expect("the results became final")
    }

    /// Waits until ingest answers votes on `election` (an open election of `TENANT`) in queue
    /// mode (202) or in direct mode; see [`crate::until_ingest_mode`].
    pub async fn until_ingest_mode(&self, election: Uuid, choice: &str, queue: bool) {
        crate::until_ingest_mode(
            &self.http,
            &self.ingest_url,
            self.keys.signer(TENANT),
            election,
            choice,
            queue,
        )
        .await;
    }

    /// As the queue-mode CLI does (owner, audited in the platform organisation's chain).
    pub async fn set_queue_mode(&self, enabled: bool) {
        ingest::queue_mode::set(
            &self.db.owner,
            enabled,
            "test",
            &self.keys.audit_key(),
            &self.tenant(shared::domain::DEFAULT_PLATFORM_ORG),
        )
        .await
        .unwrap();
    }
}

/// The receipt of an accepted vote, checking its status.
pub async fn accepted_receipt(response: reqwest::Response, expected: u16) -> String {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, expected, "{body}");
    body["receipt"].as_str().unwrap().to_owned()
}

/// Receives from a subscription for `wait`; returns how many messages arrived (and acks them).
pub async fn drain_count(settings: &shared::config::PubSubSettings, wait: Duration) -> usize {
    let subscriber = shared::pubsub::subscriber(settings).await.unwrap();
    let mut stream = subscriber.subscribe(settings.subscription_path()).build();
    let mut n = 0;
    while let Ok(Some(Ok((_, h)))) = tokio::time::timeout(wait, stream.next()).await {
        h.ack();
        n += 1;
    }
    n
}

/// `name{label}` summed over the lines of a Prometheus text exposition at `addr`.
pub async fn metric(addr: SocketAddr, name: &str, label: &str) -> i64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("serves /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as i64)
        .sum()
}

/// Counts (and acks) what reached the dead-letter subscription.
pub async fn drain_dead_letters(stack: &Stack) -> usize {
    let subscriber = shared::pubsub::subscriber(&stack.pubsub.settings)
        .await
        .unwrap();
    let mut stream = subscriber
        .subscribe(stack.pubsub.dead_letter_subscription_path())
        .build();
    let mut n = 0;
    while let Ok(Some(Ok((_, h)))) =
        tokio::time::timeout(Duration::from_secs(2), stream.next()).await
    {
        h.ack();
        n += 1;
    }
    n
}
