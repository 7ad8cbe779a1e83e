//! The running services, as the harness uses them: an admin who creates, opens and closes
//! elections and a platform operator who flips the queue flag through events-svc; the events
//! side's bulk
//! path (sign voting tokens with the tenant's key, register their hashes over the signed S2S
//! API, exactly as events-svc does); members who log in (dev login) and ask events-svc for
//! their token; the elections side's tally; receipts; the worker's counters.
//!
//! Only loopback addresses are accepted: the harness never sends traffic elsewhere.

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

/// A client for the services' APIs. Idle connections are dropped after 4 s: every service closes
/// a connection that sends no request within `HTTP_HEADER_READ_TIMEOUT_MS` (5 s by default), and
/// a request sent on one just as the server closes it gets no answer at all (seen when a caller
/// waits out a 5 s `Retry-After`).
pub fn api_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(4))
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// Refuses anything but a loopback http URL.
pub fn loopback(url: &str, what: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{what}: not a URL: `{url}`"))?;
    let host = parsed.host_str().unwrap_or_default();
    if parsed.scheme() != "http" || !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        bail!("{what}: the load test only talks to http://127.0.0.1 or http://localhost (got `{url}`)");
    }
    Ok(url.trim_end_matches('/').to_owned())
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

/// The value of the first sample of `name` whose labels contain `label` (Prometheus text).
pub fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| label.is_empty() || l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Metrics of ingest and the worker at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ingest: Option<String>,
    pub worker: Option<String>,
}

/// The services' own view of a run, from their Prometheus histograms (the difference of two
/// snapshots). Values are bucket upper bounds: "p99 ≤ 25 ms" means the bucket ending at 25 ms.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServerSide {
    /// ingest's `POST /v1/elections/{id}/ballots` latency, from request to response.
    pub ingest_requests: u64,
    pub ingest_p50_le_ms: Option<f64>,
    pub ingest_p99_le_ms: Option<f64>,
    /// ingest's wait for Pub/Sub to acknowledge a publish (queue mode).
    pub publishes: u64,
    pub publish_p50_le_ms: Option<f64>,
    pub publish_p99_le_ms: Option<f64>,
    /// The worker's accept (ingest) → commit lag (queue mode).
    pub committed: u64,
    pub queue_lag_p50_le_ms: Option<f64>,
    pub queue_lag_p99_le_ms: Option<f64>,
}

/// Cumulative bucket counts `(le, count)` of histogram `name` whose labels contain `label`.
fn buckets(text: &str, name: &str, label: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix) && (label.is_empty() || l.contains(label)))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// (count, p50 bound, p99 bound) in ms of the difference between two histograms.
fn delta_quantiles(
    before: Option<&str>,
    after: Option<&str>,
    name: &str,
    label: &str,
) -> (u64, Option<f64>, Option<f64>) {
    let Some(after) = after else {
        return (0, None, None);
    };
    let after = buckets(after, name, label);
    let before = before.map(|b| buckets(b, name, label)).unwrap_or_default();
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - b)
        })
        .collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    if total <= 0.0 {
        return (0, None, None);
    }
    let q = |q: f64| {
        delta.iter().find(|(_, n)| *n >= q * total).map(|(le, _)| {
            if le.is_finite() {
                le * 1000.0
            } else {
                f64::INFINITY
            }
        })
    };
    (total as u64, q(0.5), q(0.99))
}

impl ServerSide {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Self {
        let (ingest_requests, ingest_p50_le_ms, ingest_p99_le_ms) = delta_quantiles(
            before.ingest.as_deref(),
            after.ingest.as_deref(),
            "http_request_duration_seconds",
            "route=\"/v1/elections/{id}/ballots\"",
        );
        let (publishes, publish_p50_le_ms, publish_p99_le_ms) = delta_quantiles(
            before.ingest.as_deref(),
            after.ingest.as_deref(),
            "publish_latency_seconds",
            "",
        );
        let (committed, queue_lag_p50_le_ms, queue_lag_p99_le_ms) = delta_quantiles(
            before.worker.as_deref(),
            after.worker.as_deref(),
            "worker_queue_lag_seconds",
            "",
        );
        Self {
            ingest_requests,
            ingest_p50_le_ms,
            ingest_p99_le_ms,
            publishes,
            publish_p50_le_ms,
            publish_p99_le_ms,
            committed,
            queue_lag_p50_le_ms,
            queue_lag_p99_le_ms,
        }
    }
}

/// The sum of every sample of `name` (all label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A national id shown in a message: its last digits only.
fn redact_national_id(id: &str) -> String {
    format!("…{}", &id[id.len().saturating_sub(4)..])
}

/// One JSON request to a service: its status, its `Retry-After` (seconds) if any, and its body
/// (`null` when it is not JSON).
/// Switches the live queue flag through events-svc as the platform operator `session`. The
/// flag changes at most once per interval, platform-wide: a 429 is waited out (Retry-After).
pub(crate) async fn put_queue_mode(
    http: &reqwest::Client,
    events_url: &str,
    session: &str,
    enabled: bool,
) -> anyhow::Result<Value> {
    let url = format!("{events_url}/v1/ops/queue-mode");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, retry_after, answer) = call_json(
            http,
            Method::PUT,
            &url,
            Some(session),
            Some(json!({ "enabled": enabled })),
        )
        .await?;
        match status {
            200 => return Ok(answer),
            429 if Instant::now() < deadline => {
                tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1))).await;
            }
            _ => bail!(
                "PUT /v1/ops/queue-mode at events-svc: expected 200, got {status}: {}",
                answer["detail"]
            ),
        }
    }
}

pub(crate) async fn call_json(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Option<Duration>, Value)> {
    let mut request = http.request(method.clone(), url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {url}: no answer (is the service running?)"))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok((
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(loopback("http://127.0.0.1:8080/", "x").is_ok());
        assert!(loopback("http://localhost:1", "x").is_ok());
        assert!(loopback("http://example.com", "x").is_err());
        assert!(loopback("https://127.0.0.1", "x").is_err());
        assert!(loopback("nonsense", "x").is_err());
    }

    #[test]
    fn reads_prometheus_samples() {
        let text = "# HELP x\nworker_votes_total{outcome=\"recorded\",service=\"worker\"} 12\n\
                    worker_votes_total{outcome=\"duplicate\",service=\"worker\"} 3\n";
        assert_eq!(
            metric(text, "worker_votes_total", "outcome=\"duplicate\""),
            Some(3.0)
        );
        assert_eq!(metric(text, "worker_votes_total", "outcome=\"nope\""), None);
    }

    #[test]
    fn reads_histogram_deltas() {
        let h = |a: u32, b: u32, c: u32| {
            format!(
                "x_bucket{{route=\"r\",le=\"0.005\"}} {a}\nx_bucket{{route=\"r\",le=\"0.01\"}} {b}\n\
                 x_bucket{{route=\"r\",le=\"+Inf\"}} {c}\nx_bucket{{route=\"other\",le=\"0.005\"}} 99\n"
            )
        };
        let (n, p50, p99) = delta_quantiles(
            Some(&h(10, 10, 10)),
            Some(&h(60, 109, 110)),
            "x",
            "route=\"r\"",
        );
        assert_eq!(n, 100);
        assert_eq!(p50, Some(5.0));
        assert_eq!(p99, Some(10.0));
    }
}
