//! members-fn for one test: a fresh database, the service on 127.0.0.1 port 0, helpers to
//! fill the registry, and two identity providers: the certified `oidc-provider` the local
//! stack runs (`testkit::oidc_provider`) and an issuer the test controls completely
//! (`fake_issuer`), for the tokens a real provider would never send.

pub mod fake_issuer;
// Used by the log-capture binaries (tests/log_lines.rs, tests/page_login.rs), not by `it`.
#[allow(dead_code)]
pub mod logs;

use shared::session::SessionSigner;
use testkit::services::{self, Running};
use testkit::TestDb;

pub struct Members {
    pub db: TestDb,
    pub url: String,
    pub http: reqwest::Client,
    pub signer_config: String,
    _running: Running,
}

/// A valid person's kennitala for `n` (distinct `n`, distinct ids).
pub fn kennitala(n: u32) -> String {
    members_fn::national_id::synthetic(n).as_str().to_owned()
}

impl Members {
    /// Starts members-fn with dev login enabled, the given extra settings on top.
    pub async fn start(extra: &[(&str, String)]) -> Self {
        let db = TestDb::create().await;
        let signer = SessionSigner::generate(
            "s1",
            "ekklesia-members".into(),
            std::time::Duration::from_secs(900),
        );
        let mut env = services::members_env(&db, &signer);
        env.extend(extra.iter().cloned());
        let running = services::spawn_members(&env).await;
        Self {
            db,
            url: running.url(),
            http: reqwest::Client::new(),
            signer_config: signer.config_entry(),
            _running: running,
        }
    }

    /// Puts a person into a tenant's registry (as the schema owner, as an import would).
    pub async fn add_member(&self, org: &str, national_id: &str, roles: &[&str]) -> uuid::Uuid {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        sqlx::query_scalar(
            "INSERT INTO members.members (org_id, national_id, name, roles) VALUES ($1, $2, 'Test', $3) RETURNING id",
        )
        .bind(org)
        .bind(national_id)
        .bind(&roles)
        .fetch_one(&self.db.owner)
        .await
        .expect("insert member")
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("members-fn answers");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }
}
