//! Every service of the system for one test, in this process, over real HTTP on 127.0.0.1:
//! members-fn (login; dev login and the local OIDC provider), events-svc, ingest and a
//! worker, on a fresh database and a fresh topic and subscription on the emulator.

#![allow(dead_code)]

#[path = "../../../members-fn/tests/support/provider.rs"]
pub mod provider;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::config::Env;
use shared::session::SessionSigner;
use shared::testkit::{Role, TcpProxy, TestDb, TestKeys, TestPubSub};
use uuid::Uuid;

pub const TENANT: &str = "party-a";
pub const OTHER_TENANT: &str = "party-b";
/// The platform organisation (events-svc's default `PLATFORM_ORG`): its `ops` members are the
/// platform operators.
pub const PLATFORM: &str = shared::domain::DEFAULT_PLATFORM_ORG;
/// Every service adds its usage counts this often (ms), so a test sees them soon.
pub const USAGE_FLUSH_MS: &str = "100";

pub struct World {
    pub db: TestDb,
    pub pubsub: TestPubSub,
    pub keys: TestKeys,
    pub members_url: String,
    pub events_url: String,
    pub ingest_url: String,
    /// events-svc reaches ingest's internal API through this proxy, so a test can cut it.
    pub elections_link: TcpProxy,
    pub session_signer_config: String,
    pub http: reqwest::Client,
    next_person: std::sync::atomic::AtomicU32,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn slug(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|t| t.rsplit('/').next())
            .unwrap_or_default()
    }
}

fn serve<F>(run: F)
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = run.await {
            panic!("service stopped: {e}");
        }
    });
}

impl World {
    pub async fn start(queue_mode: bool) -> Self {
        Self::start_with(queue_mode, &[]).await
    }

    /// With events-svc's settings changed by `events_env` (a name listed replaces its value).
    pub async fn start_with(queue_mode: bool, events_env: &[(&'static str, String)]) -> Self {
        let db = TestDb::create().await;
        let pubsub = TestPubSub::create().await;
        let keys = TestKeys::new(&[TENANT, OTHER_TENANT]);
        let session =
            SessionSigner::generate("s1", "ekklesia-members".into(), Duration::from_secs(900));
        let oidc = provider::Settings::from_env();

        let members = members_fn::Application::build(
            members_fn::Settings::from(Env::from_map([
                ("MEMBERS_ADDR", "127.0.0.1:0".to_owned()),
                ("DATABASE_URL", db.url(Role::Members)),
                ("EKKLESIA_PROFILE", "local".into()),
                ("DEV_LOGIN_ENABLED", "true".into()),
                ("SESSION_SIGNING_KEYS", session.config_entry()),
                ("LOGIN_RATE_PER_CLIENT", "1000".into()),
                ("OIDC_ISSUER", oidc.issuer.clone()),
                ("OIDC_CLIENT_ID", oidc.client_id.clone()),
                ("OIDC_CLIENT_SECRET", oidc.client_secret.clone()),
                ("OIDC_REDIRECT_URI", oidc.redirect_uri.clone()),
                ("USAGE_FLUSH_MS", USAGE_FLUSH_MS.into()),
            ]))
            .expect("members-fn settings"),
        )
        .await
        .expect("members-fn builds");
        let members_url = format!("http://{}", members.local_addr());
        serve(members.run_until(std::future::pending()));

        let ingest = ingest::startup::Application::build(
            ingest::configuration::Settings::from(Env::from_map([
                ("INGEST_ADDR", "127.0.0.1:0".to_owned()),
                ("INTERNAL_ADDR", "127.0.0.1:0".to_owned()),
                ("DATABASE_URL", db.url(Role::Ingest)),
                (
                    "PUBSUB_EMULATOR_HOST",
                    pubsub.settings.emulator_host.clone().unwrap(),
                ),
                ("PUBSUB_PROJECT_ID", pubsub.settings.project.clone()),
                ("PUBSUB_TOPIC", pubsub.settings.topic.clone()),
                ("PUBSUB_SUBSCRIPTION", pubsub.settings.subscription.clone()),
                ("VOTING_TOKEN_PUBLIC_KEYS", keys.public_keys_config()),
                ("RECEIPT_KEY", keys.receipt_key_b64.clone()),
                ("VOTE_KEYS", keys.vote_keys_config.clone()),
                ("S2S_KEYS", keys.s2s_config.clone()),
                ("AUDIT_KEY", keys.audit_key_b64.clone()),
                ("USAGE_FLUSH_MS", USAGE_FLUSH_MS.into()),
                ("QUEUE_MODE_DEFAULT", queue_mode.to_string()),
                ("QUEUE_MODE_POLL_MS", "200".into()),
                ("DEFINITION_REFRESH_MS", "200".into()),
            ]))
            .expect("ingest settings"),
        )
        .await
        .expect("ingest builds");
        let ingest_url = format!("http://{}", ingest.local_addr());
        let internal_addr = ingest.internal_addr().expect("ingest's internal API");
        serve(ingest.run_until(std::future::pending()));

        let worker = worker::startup::Application::build(
            worker::configuration::Settings::from(Env::from_map([
                ("WORKER_ADDR", "127.0.0.1:0".to_owned()),
                ("DATABASE_URL", db.url(Role::Worker)),
                (
                    "PUBSUB_EMULATOR_HOST",
                    pubsub.settings.emulator_host.clone().unwrap(),
                ),
                ("PUBSUB_PROJECT_ID", pubsub.settings.project.clone()),
                ("PUBSUB_TOPIC", pubsub.settings.topic.clone()),
                ("PUBSUB_SUBSCRIPTION", pubsub.settings.subscription.clone()),
                ("WORKER_ID", format!("w-{}", Uuid::new_v4().simple())),
                ("VOTE_KEYS", keys.vote_keys_config.clone()),
                ("IDLE_AFTER_MS", "300".into()),
                ("SEAL_DELAY_MS", "1000".into()),
            ]))
            .expect("worker settings"),
        )
        .await
        .expect("worker builds");
        serve(worker.run_until(std::future::pending()));

        let elections_link = TcpProxy::start(internal_addr).await;
        let signing_keys = keys
            .signers
            .iter()
            .map(|s| format!("{}:{}:{}", s.kid(), s.tenant(), s.seed()))
            .collect::<Vec<_>>()
            .join(",");
        let events_env = [
            ("EVENTS_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", db.url(Role::Events)),
            ("ELECTIONS_URL", format!("http://{}", elections_link.addr)),
            ("S2S_KEYS", keys.s2s_config.clone()),
            ("S2S_RETRY_BUDGET_MS", "1000".into()),
            ("VOTING_TOKEN_SIGNING_KEYS", signing_keys),
            ("TOKEN_SLOT_KEYS", keys.slot_keys_config.clone()),
            ("AUDIT_KEY", keys.audit_key_b64.clone()),
            ("USAGE_FLUSH_MS", USAGE_FLUSH_MS.into()),
            (
                "SESSION_JWKS_URL",
                format!("{members_url}/.well-known/jwks.json"),
            ),
        ]
        .into_iter()
        .chain(events_env.iter().cloned());
        let events = events_svc::Application::build(
            events_svc::Settings::from(Env::from_map(events_env)).expect("events-svc settings"),
        )
        .await
        .expect("events-svc builds");
        let events_url = format!("http://{}", events.local_addr());
        serve(events.run_until(std::future::pending()));

        Self {
            db,
            pubsub,
            keys,
            members_url,
            events_url,
            ingest_url,
            elections_link,
            session_signer_config: session.config_entry(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            next_person: std::sync::atomic::AtomicU32::new(1),
        }
    }

    /// A national id no other person of this world has (not put into any registry).
    pub fn national_id(&self) -> String {
        let n = self
            .next_person
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        members_fn::national_id::synthetic(n).as_str().to_owned()
    }

    /// A new person in `org`'s registry with `roles`; returns their national id.
    pub async fn person(&self, org: &str, roles: &[&str]) -> String {
        let national_id = self.national_id();
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        sqlx::query("INSERT INTO members.members (org_id, national_id, name, roles) VALUES ($1, $2, 'Test', $3)")
            .bind(org)
            .bind(&national_id)
            .bind(&roles)
            .execute(&self.db.owner)
            .await
            .expect("add member");
        national_id
    }

    /// Logs in through the local OIDC provider (authorization code + PKCE, started at
    /// members-fn and finished with its login cookie), as a voter's browser does.
    pub async fn login(&self, national_id: &str) -> String {
        let (status, session) = provider::login(&self.members_url, national_id, "").await;
        assert_eq!(status, 200, "login: {session}");
        session["session_token"].as_str().unwrap().to_owned()
    }

    /// Dev login (a test shortcut where the OIDC flow is not the point).
    pub async fn dev_login(&self, national_id: &str) -> String {
        let answer = self.dev_login_answer(national_id).await;
        assert_eq!(answer.status, 200, "dev login: {}", answer.body);
        answer.body["session_token"].as_str().unwrap().to_owned()
    }

    /// members-fn's whole answer to a dev login: the session and the member it is for, or
    /// the problem.
    pub async fn dev_login_answer(&self, national_id: &str) -> Answer {
        self.call(
            reqwest::Method::POST,
            &format!("{}/v1/auth/dev-login", self.members_url),
            None,
            Some(json!({ "national_id": national_id })),
        )
        .await
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.http.request(method, url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn events(
        &self,
        method: reqwest::Method,
        path: &str,
        session: &str,
        body: Option<Value>,
    ) -> Answer {
        self.call(
            method,
            &format!("{}{path}", self.events_url),
            Some(session),
            body,
        )
        .await
    }

    /// Creates and opens a single-choice election with options `yes`, `no`, `abstain`.
    pub async fn open_election(&self, admin: &str) -> Uuid {
        let created = self
            .events(
                reqwest::Method::POST,
                "/v1/elections",
                admin,
                Some(json!({
                    "title": "Motion 1", "question": "Adopt the budget?", "kind": "single",
                    "options": [{"id": "yes", "label": "Yes"}, {"id": "no", "label": "No"},
                                {"id": "abstain", "label": "Abstain"}],
                    "max_choices": 1,
                })),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let id: Uuid = created.body["id"].as_str().unwrap().parse().unwrap();
        let opened = self
            .events(
                reqwest::Method::POST,
                &format!("/v1/elections/{id}/open"),
                admin,
                None,
            )
            .await;
        assert_eq!(opened.status, 200, "{}", opened.body);
        id
    }

    pub async fn token(&self, session: &str, election: Uuid) -> Answer {
        self.events(
            reqwest::Method::POST,
            &format!("/v1/elections/{election}/token"),
            session,
            None,
        )
        .await
    }

    pub async fn vote(&self, token: &str, election: Uuid, choices: &[&str]) -> Answer {
        self.call(
            reqwest::Method::POST,
            &format!("{}/v1/elections/{election}/ballots", self.ingest_url),
            Some(token),
            Some(json!({ "choices": choices })),
        )
        .await
    }

    /// Waits until ingest answers votes on `election` (an open election of `TENANT`) in queue
    /// mode (202) or in direct mode: probes with tokens whose ids were never registered, which
    /// count nowhere (direct mode refuses them, `token-not-registered`; in queue mode the
    /// worker rejects them later).
    pub async fn until_ingest_mode(&self, election: Uuid, queue: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = chrono::Utc::now();
            let (probe, _) = self.keys.signer(TENANT).issue(
                election,
                now - chrono::Duration::seconds(60),
                now + chrono::Duration::minutes(5),
            );
            let answer = self.vote(&probe, election, &["yes"]).await;
            let in_queue_mode = match (answer.status, answer.slug()) {
                (202, _) => true,
                (403, "token-not-registered") => false,
                _ => panic!("probe vote: {} {}", answer.status, answer.body),
            };
            if in_queue_mode == queue {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ingest did not follow the queue flag in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the results (as `session`) until they are final.
    pub async fn final_results(&self, session: &str, election: Uuid) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self
                .events(
                    reqwest::Method::GET,
                    &format!("/v1/elections/{election}/results"),
                    session,
                    None,
                )
                .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            if answer.body["final"] == json!(true) {
                return answer.body;
            }
            assert!(
                Instant::now() < deadline,
                "results not final in time: {}",
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (up to 30 s) until the receipt has an outcome; returns its status.
    pub async fn wait_decided(&self, receipt: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM elections.receipts WHERE receipt = $1")
                    .bind(receipt)
                    .fetch_optional(&self.db.owner)
                    .await
                    .expect("read the receipt");
            if let Some(status) = status {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the vote was not decided in time"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
