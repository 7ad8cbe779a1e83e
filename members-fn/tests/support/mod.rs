//! members-fn for one test: a fresh database, the service on 127.0.0.1 port 0, helpers to
//! fill the registry, and two identity providers: the certified `oidc-provider` the local
//! stack runs (`provider`) and an issuer the test controls completely (`fake_issuer`), for
//! the tokens a real provider would never send.

#![allow(dead_code)]

pub mod fake_issuer;
pub mod logs;
pub mod provider;

use shared::config::Env;
use shared::session::SessionSigner;
use shared::testkit::{Role, TestDb};

pub struct Members {
    pub db: TestDb,
    pub url: String,
    pub http: reqwest::Client,
    pub signer_config: String,
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
        let mut env: Vec<(String, String)> = vec![
            ("MEMBERS_ADDR".into(), "127.0.0.1:0".into()),
            ("DATABASE_URL".into(), db.url(Role::Members)),
            ("EKKLESIA_PROFILE".into(), "local".into()),
            ("DEV_LOGIN_ENABLED".into(), "true".into()),
            ("SESSION_SIGNING_KEYS".into(), signer.config_entry()),
            ("LOGIN_RATE_PER_CLIENT".into(), "1000".into()),
        ];
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.clone()));
        }
        let settings = members_fn::Settings::from(Env::from_map(env)).expect("members settings");
        let app = members_fn::Application::build(settings)
            .await
            .expect("members-fn builds");
        let url = format!("http://{}", app.local_addr());
        tokio::spawn(app.run_until(std::future::pending()));
        Self {
            db,
            url,
            http: reqwest::Client::new(),
            signer_config: signer.config_entry(),
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
