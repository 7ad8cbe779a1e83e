//! Every service of the system for one test, in this process, over real HTTP on 127.0.0.1:
//! members-fn (login; dev login and the local OIDC provider), events-svc, ingest and a
//! worker, on a fresh database and a fresh topic and subscription on the emulator.

use std::time::Duration;

use serde_json::{json, Value};
use shared::session::SessionSigner;
use testkit::oidc_provider as provider;
use testkit::services::{self, Ingest, Running};
use testkit::{eventually, TcpProxy, TestDb, TestKeys, TestPubSub};
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
    _pubsub: TestPubSub,
    pub keys: TestKeys,
    pub members_url: String,
    pub events_url: String,
    pub ingest_url: String,
    /// events-svc reaches ingest's internal API through this proxy, so a test can cut it.
    pub elections_link: TcpProxy,
    pub session_signer_config: String,
    pub http: reqwest::Client,
    next_person: std::sync::atomic::AtomicU32,
    _services: (Running, Ingest, Running, Running),
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

        let mut env = services::members_env(&db, &session);
        env.extend([
            ("OIDC_ISSUER", oidc.issuer.clone()),
            ("OIDC_CLIENT_ID", oidc.client_id.clone()),
            ("OIDC_CLIENT_SECRET", oidc.client_secret.clone()),
            ("OIDC_REDIRECT_URI", oidc.redirect_uri.clone()),
            ("USAGE_FLUSH_MS", USAGE_FLUSH_MS.into()),
        ]);
        let members = services::spawn_members(&env).await;
        let members_url = members.url();

        let mut env = services::ingest_env(&db, &pubsub, &keys);
        env.extend([
            ("USAGE_FLUSH_MS", USAGE_FLUSH_MS.to_owned()),
            ("QUEUE_MODE_DEFAULT", queue_mode.to_string()),
        ]);
        let ingest = services::spawn_ingest(&env).await;
        let ingest_url = ingest.url.clone();

        let env = services::worker_env(&db, &pubsub, &keys);
        let worker = services::spawn_worker(services::worker_settings(&env)).await;

        let elections_link = TcpProxy::start(ingest.internal_addr).await;
        let mut env = services::events_env(
            &db,
            &keys,
            &format!("http://{}", elections_link.addr),
            &members_url,
        );
        env.extend([
            ("S2S_RETRY_BUDGET_MS", "1000".to_owned()),
            ("USAGE_FLUSH_MS", USAGE_FLUSH_MS.into()),
        ]);
        env.extend(events_env.iter().cloned());
        let events = services::spawn_events(&env).await;
        let events_url = events.url();

        Self {
            db,
            _pubsub: pubsub,
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
            _services: (members, ingest, worker, events),
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
        testkit::until_ingest_mode(
            &self.http,
            &self.ingest_url,
            self.keys.signer(TENANT),
            election,
            "yes",
            queue,
        )
        .await;
    }

    /// Polls the results (as `session`) until they are final.
    pub async fn final_results(&self, session: &str, election: Uuid) -> Value {
        eventually(Duration::from_secs(60), || async {
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
                Ok(answer.body)
            } else {
                Err(answer.body)
            }
        })
        .await
        .expect("the results became final")
    }

    /// Waits (up to 30 s) until the receipt has an outcome; returns its status.
    pub async fn wait_decided(&self, receipt: &str) -> String {
        eventually(Duration::from_secs(30), || async {
            sqlx::query_scalar::<_, String>(
                "SELECT status FROM elections.receipts WHERE receipt = $1",
            )
            .bind(receipt)
            .fetch_optional(&self.db.owner)
            .await
            .expect("read the receipt")
        })
        .await
        .expect("the vote was decided")
    }
}
