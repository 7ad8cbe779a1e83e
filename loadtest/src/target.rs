//! The running services, as the harness uses them: an admin who creates, opens and closes
//! elections and a platform operator who flips the queue flag through events-svc; the events
//! side's bulk
//! path (sign voting tokens with the tenant's key, register their hashes over the signed S2S
//! API, exactly as events-svc does); members who log in (dev login) and ask events-svc for
//! their token; the elections side's tally; receipts; the worker's counters.
//!
//! Only loopback addresses are accepted: the harness never sends traffic elsewhere.
//!
//! The HTTP client and the JSON call live in [`crate::http`], the reading of the services'
//! metrics in [`crate::prometheus`]; both are re-exported here, where the harness and its
//! tests have always found them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use shared::domain::{Results, TenantId};
use shared::s2s::{Client, Keyring, RetrySettings};
use shared::telemetry::CorrelationId;
use shared::token::TokenSigner;
use uuid::Uuid;

use crate::stats::Latency;

pub use crate::http::{api_client, loopback};
pub(crate) use crate::http::{call_json, put_queue_mode};
pub use crate::prometheus::{metric, metric_sum, HistogramDelta, ServerSide, Snapshot};

/// Most token hashes the elections side accepts in one registration call.
pub const MAX_HASHES_PER_CALL: usize = 10_000;

#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub ingest_url: String,
    /// ingest's internal listener: the elections side's S2S API and ingest's `/metrics`.
    pub elections_url: String,
    pub events_url: String,
    pub members_url: String,
    /// The worker's `/metrics` base URL (for the duplicate counter), if reachable.
    pub worker_url: Option<String>,
    pub tenant: String,
    /// `VOTING_TOKEN_SIGNING_KEYS` (a secret: never printed).
    pub signing_keys: String,
    /// `S2S_KEYS` (a secret: never printed).
    pub s2s_keys: String,
    /// The admin in the tenant's member registry.
    pub admin_national_id: String,
    /// A platform operator (`ops` in the platform organisation's registry), for the queue flag.
    pub ops_national_id: String,
}

pub struct Target {
    pub ingest_url: String,
    pub elections_url: String,
    pub events_url: String,
    pub members_url: String,
    pub worker_url: Option<String>,
    pub tenant: TenantId,
    signer: Arc<TokenSigner>,
    s2s: Client,
    http: reqwest::Client,
    admin_national_id: String,
    admin: tokio::sync::Mutex<Option<(String, Instant)>>,
    ops_national_id: String,
    ops: tokio::sync::Mutex<Option<(String, Instant)>>,
    correlation: CorrelationId,
}

/// What preparing tokens through members-fn and events-svc cost (closed loop).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PrepThroughEvents {
    pub voters: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub login_latency: Latency,
    pub token_latency: Latency,
    pub login_retries_429: u64,
}

impl Target {
    pub fn new(config: TargetConfig) -> anyhow::Result<Self> {
        let tenant = TenantId::parse(&config.tenant).context("--tenant")?;
        let signer = shared::token::signers_from_config(&config.signing_keys)
            .map_err(|e| anyhow::anyhow!("VOTING_TOKEN_SIGNING_KEYS: {e}"))?
            .into_iter()
            .find(|s| s.tenant() == &tenant)
            .with_context(|| {
                format!("VOTING_TOKEN_SIGNING_KEYS has no key for tenant {tenant} (source the dev keys file)")
            })?;
        let keyring =
            Keyring::from_config(&config.s2s_keys).map_err(|e| anyhow::anyhow!("S2S_KEYS: {e}"))?;
        if keyring.current_for(&tenant).is_none() {
            bail!("S2S_KEYS has no key for tenant {tenant} (source the dev keys file)");
        }
        let ingest_url = loopback(&config.ingest_url, "--ingest-url")?;
        let elections_url = loopback(&config.elections_url, "--elections-url")?;
        let worker_url = config
            .worker_url
            .as_deref()
            .map(|u| loopback(u, "--worker-url"))
            .transpose()?;
        Ok(Self {
            s2s: Client::new(&elections_url, keyring, RetrySettings::default()),
            elections_url,
            events_url: loopback(&config.events_url, "--events-url")?,
            members_url: loopback(&config.members_url, "--members-url")?,
            ingest_url,
            worker_url,
            tenant,
            signer: Arc::new(signer),
            http: api_client(Duration::from_secs(15)),
            admin_national_id: config.admin_national_id,
            admin: tokio::sync::Mutex::new(None),
            ops_national_id: config.ops_national_id,
            ops: tokio::sync::Mutex::new(None),
            correlation: CorrelationId::new(),
        })
    }

    async fn call(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Option<Duration>, Value)> {
        call_json(&self.http, method, url, bearer, body).await
    }

    /// Dev login at members-fn (honours 429 + Retry-After a few times). Returns the session.
    pub async fn login(&self, national_id: &str) -> anyhow::Result<(String, u64)> {
        let mut retries = 0;
        loop {
            let (status, retry_after, body) = self
                .call(
                    Method::POST,
                    &format!("{}/v1/auth/dev-login", self.members_url),
                    None,
                    Some(json!({ "national_id": national_id })),
                )
                .await?;
            match status {
                200 => {
                    return Ok((
                        body["session_token"]
                            .as_str()
                            .context("dev login answered without a session")?
                            .to_owned(),
                        retries,
                    ))
                }
                429 if retries < 20 => {
                    retries += 1;
                    tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1))).await;
                }
                403 => bail!(
                    "dev login: member {} is not in the registry; import the members first: \
                     loadtest members-csv --voters N | members-import --org {} -",
                    redact_national_id(national_id),
                    self.tenant
                ),
                404 => bail!("dev login is disabled at {} (DEV_LOGIN_ENABLED=true and EKKLESIA_PROFILE=local are needed)", self.members_url),
                _ => bail!("dev login answered {status}: {}", body["detail"]),
            }
        }
    }

    async fn admin_session(&self) -> anyhow::Result<String> {
        self.cached_session(&self.admin, &self.admin_national_id, "the admin")
            .await
    }

    async fn ops_session(&self) -> anyhow::Result<String> {
        self.cached_session(&self.ops, &self.ops_national_id, "the platform operator")
            .await
    }

    /// A session of `national_id`, logged in again once it is 10 minutes old.
    async fn cached_session(
        &self,
        cache: &tokio::sync::Mutex<Option<(String, Instant)>>,
        national_id: &str,
        who: &str,
    ) -> anyhow::Result<String> {
        let mut cached = cache.lock().await;
        if let Some((session, at)) = cached.as_ref() {
            if at.elapsed() < Duration::from_secs(600) {
                return Ok(session.clone());
            }
        }
        let (session, _) = self
            .login(national_id)
            .await
            .with_context(|| format!("logging in as {who}"))?;
        *cached = Some((session.clone(), Instant::now()));
        Ok(session)
    }

    async fn as_admin(
        &self,
        expect: u16,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let session = self.admin_session().await?;
        let url = format!("{}{path}", self.events_url);
        let (status, _, answer) = self
            .call(method.clone(), &url, Some(&session), body)
            .await?;
        if status != expect {
            bail!(
                "{method} {path} at events-svc: expected {expect}, got {status}: {}",
                answer["detail"]
            );
        }
        Ok(answer)
    }

    /// Creates and opens a single-choice election (yes / no / abstain) through events-svc,
    /// which pushes it to the elections side before it commits.
    pub async fn open_election(&self, question: &str) -> anyhow::Result<Uuid> {
        let options: Vec<Value> = crate::OPTIONS
            .iter()
            .map(|o| json!({"id": o, "label": o}))
            .collect();
        let created = self
            .as_admin(
                201,
                Method::POST,
                "/v1/elections",
                Some(
                    json!({"title": "Load test", "question": question, "kind": "single",
                            "options": options, "max_choices": 1}),
                ),
            )
            .await?;
        let id: Uuid = created["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("events-svc created an election without an id")?;
        self.as_admin(200, Method::POST, &format!("/v1/elections/{id}/open"), None)
            .await?;
        Ok(id)
    }

    pub async fn close_election(&self, id: Uuid) -> anyhow::Result<()> {
        self.as_admin(
            200,
            Method::POST,
            &format!("/v1/elections/{id}/close"),
            None,
        )
        .await?;
        Ok(())
    }

    /// The results as events-svc passes them on (admin).
    pub async fn results_via_events(&self, id: Uuid) -> anyhow::Result<Results> {
        let body = self
            .as_admin(
                200,
                Method::GET,
                &format!("/v1/elections/{id}/results"),
                None,
            )
            .await?;
        Ok(serde_json::from_value(body)?)
    }

    /// The live queue flag (`None` while ops never set it).
    pub async fn queue_mode(&self) -> anyhow::Result<Option<bool>> {
        let session = self.ops_session().await?;
        let url = format!("{}/v1/ops/queue-mode", self.events_url);
        let (status, _, state) = self.call(Method::GET, &url, Some(&session), None).await?;
        if status != 200 {
            bail!(
                "GET /v1/ops/queue-mode at events-svc: expected 200, got {status}: {}",
                state["detail"]
            );
        }
        Ok(state["enabled"].as_bool())
    }

    /// Flips the live queue flag as a platform operator (audited by events-svc).
    pub async fn set_queue_mode(&self, enabled: bool) -> anyhow::Result<()> {
        let session = self.ops_session().await?;
        put_queue_mode(&self.http, &self.events_url, &session, enabled).await?;
        Ok(())
    }

    /// The elections side's tally (signed S2S call, as events-svc makes it).
    pub async fn results(&self, election: Uuid) -> anyhow::Result<Results> {
        let reply = self
            .s2s
            .call(
                &self.tenant,
                Method::GET,
                &format!("/internal/v1/elections/{election}/results"),
                None,
                None,
                &self.correlation,
            )
            .await
            .map_err(|e| anyhow::anyhow!("reading results: {e}"))?;
        reply
            .json()
            .map_err(|e| anyhow::anyhow!("reading results: {e}"))
    }

    /// `GET /v1/receipts/{receipt}`: (HTTP status, receipt status).
    pub async fn receipt(&self, receipt: &str) -> anyhow::Result<(u16, String)> {
        let (status, _, body) = self
            .call(
                Method::GET,
                &format!("{}/v1/receipts/{receipt}", self.ingest_url),
                None,
                None,
            )
            .await?;
        Ok((status, body["status"].as_str().unwrap_or("").to_owned()))
    }

    /// A worker counter `worker_votes_total{outcome=...}`, if the worker's metrics answer.
    pub async fn worker_votes(&self, outcome: &str) -> Option<f64> {
        let url = format!("{}/metrics", self.worker_url.as_ref()?);
        let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
        Some(
            metric(
                &text,
                "worker_votes_total",
                &format!("outcome=\"{outcome}\""),
            )
            .unwrap_or(0.0),
        )
    }

    /// The text of a service's `/metrics` (`None` when it does not answer).
    pub async fn metrics_text(&self, base: Option<&str>) -> Option<String> {
        let url = format!("{}/metrics", base?);
        self.http.get(url).send().await.ok()?.text().await.ok()
    }

    /// Snapshots of ingest's and the worker's metrics.
    pub async fn snapshot(&self) -> Snapshot {
        Snapshot {
            ingest: self.metrics_text(Some(&self.elections_url)).await,
            worker: self.metrics_text(self.worker_url.as_deref()).await,
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Voting tokens: the bulk path (signed here, hashes registered over S2S) and the voter's path
/// (dev login at members-fn, then a token from events-svc).
impl Target {
    /// The bulk path: signs `n` voting tokens with the tenant's key and registers their
    /// hashes with the elections side in calls of at most 10,000, over the same signed S2S
    /// API events-svc uses. Tokens are valid from a minute ago for two hours.
    pub async fn bulk_tokens(&self, election: Uuid, n: usize) -> anyhow::Result<Vec<String>> {
        let now = chrono::Utc::now();
        let (nbf, exp) = (
            now - chrono::Duration::seconds(60),
            now + chrono::Duration::hours(2),
        );
        // Signing is CPU work: keep it off the async workers.
        let signer = self.signer.clone();
        let issued = tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|_| signer.issue(election, nbf, exp))
                .collect::<Vec<_>>()
        })
        .await?;
        let batch = Uuid::new_v4();
        for (k, chunk) in issued.chunks(MAX_HASHES_PER_CALL).enumerate() {
            let hashes: Vec<String> = chunk.iter().map(|(_, h)| h.to_hex()).collect();
            self.s2s
                .call(
                    &self.tenant,
                    Method::POST,
                    &format!("/internal/v1/elections/{election}/tokens"),
                    Some(&json!({ "token_hashes": hashes })),
                    Some(&format!("tokens-{election}-{batch}-{k}")),
                    &self.correlation,
                )
                .await
                .map_err(|e| anyhow::anyhow!("registering voting tokens: {e}"))?;
        }
        Ok(issued.into_iter().map(|(t, _)| t).collect())
    }

    /// Logs members `voters` in (dev login), `concurrency` at a time.
    pub async fn sessions(
        &self,
        voters: &[u32],
        concurrency: usize,
    ) -> anyhow::Result<(Vec<String>, Vec<Duration>, u64)> {
        let answers: Vec<anyhow::Result<(String, Duration, u64)>> =
            futures::stream::iter(voters.iter().map(|&n| async move {
                let id = members_fn::national_id::synthetic(n);
                let started = Instant::now();
                let (session, retries) = self.login(id.as_str()).await?;
                Ok((session, started.elapsed(), retries))
            }))
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let mut sessions = Vec::with_capacity(voters.len());
        let mut latencies = Vec::with_capacity(voters.len());
        let mut retries = 0;
        for answer in answers {
            let (s, l, r) = answer?;
            sessions.push(s);
            latencies.push(l);
            retries += r;
        }
        Ok((sessions, latencies, retries))
    }

    /// The path a voter takes: dev login at members-fn, then `POST /v1/elections/{id}/token`
    /// at events-svc (which signs a token whose hash the elections side already holds).
    pub async fn tokens_via_events(
        &self,
        election: Uuid,
        voters: &[u32],
        concurrency: usize,
    ) -> anyhow::Result<(Vec<String>, PrepThroughEvents)> {
        let started = Instant::now();
        let (sessions, login_latencies, login_retries) = self.sessions(voters, concurrency).await?;
        let url = format!("{}/v1/elections/{election}/token", self.events_url);
        let answers: Vec<anyhow::Result<(String, Duration)>> =
            futures::stream::iter(sessions.iter().map(|session| {
                let url = url.clone();
                async move {
                    let t = Instant::now();
                    let (status, _, body) =
                        self.call(Method::POST, &url, Some(session), None).await?;
                    if status != 201 {
                        bail!("token request answered {status}: {}", body["detail"]);
                    }
                    let token = body["token"]
                        .as_str()
                        .context("token answer without a token")?
                        .to_owned();
                    Ok((token, t.elapsed()))
                }
            }))
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let mut tokens = Vec::with_capacity(voters.len());
        let mut token_latencies = Vec::with_capacity(voters.len());
        for answer in answers {
            let (t, l) = answer?;
            tokens.push(t);
            token_latencies.push(l);
        }
        Ok((
            tokens,
            PrepThroughEvents {
                voters: voters.len(),
                concurrency,
                seconds: started.elapsed().as_secs_f64(),
                login_latency: Latency::of_durations(&login_latencies),
                token_latency: Latency::of_durations(&token_latencies),
                login_retries_429: login_retries,
            },
        ))
    }

    /// A member asks again for a token they already got (must be 409).
    pub async fn second_token_request(&self, election: Uuid, session: &str) -> anyhow::Result<u16> {
        let url = format!("{}/v1/elections/{election}/token", self.events_url);
        Ok(self.call(Method::POST, &url, Some(session), None).await?.0)
    }
}

/// A national id shown in a message: its last digits only.
fn redact_national_id(id: &str) -> String {
    format!("…{}", &id[id.len().saturating_sub(4)..])
}
