//! `ops canary` and `ops status`: what the person on duty runs before and during a meeting.
//!
//! The canary casts one vote end to end in an election of its own (created, opened, voted,
//! closed and sealed through the real services, as an admin of the tenant), times each hop and
//! names the first one that fails. The status shows every service's readiness, the queue flag
//! and what each ingest instance has seen of it, the votes still on their way, the elections
//! waiting for their seal, and the worker's dead-letter and undecodable counts.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};

use crate::target::call_json;

/// Where the services are.
#[derive(Debug, Clone)]
pub struct Urls {
    pub members: String,
    pub events: String,
    pub ingest: String,
    /// ingest's internal listener (its `/metrics` and the internal API).
    pub elections: String,
    pub worker: String,
}

/// One hop of the canary: its name, how long it took, and whether it passed.
#[derive(Debug, Clone)]
pub struct Hop {
    pub name: &'static str,
    pub took: Duration,
    pub error: Option<String>,
}

/// What the canary did; `failed()` names the first failing hop.
#[derive(Debug, Clone, Default)]
pub struct CanaryReport {
    pub hops: Vec<Hop>,
}

impl CanaryReport {
    pub fn failed(&self) -> Option<&Hop> {
        self.hops.iter().find(|h| h.error.is_some())
    }

    pub fn print(&self) {
        for hop in &self.hops {
            match &hop.error {
                None => println!("  ok    {:<44} {:>8.1} ms", hop.name, ms(hop.took)),
                Some(e) => println!("  FAIL  {:<44} {:>8.1} ms  {e}", hop.name, ms(hop.took)),
            }
        }
        match self.failed() {
            None => println!("canary: every hop passed"),
            Some(hop) => println!("canary: FAILED at {}", hop.name),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How long the canary waits for the asynchronous hops.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub recorded: Duration,
    pub sealed: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            recorded: Duration::from_secs(30),
            sealed: Duration::from_secs(90),
        }
    }
}

struct Api {
    http: reqwest::Client,
}

impl Api {
    async fn expect(
        &self,
        status: &[u16],
        method: Method,
        url: String,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (got, _, answer) = call_json(&self.http, method.clone(), &url, bearer, body).await?;
        if !status.contains(&got) {
            bail!("{method} {url}: {got} {answer}");
        }
        Ok(answer)
    }
}

/// Runs one hop; records its time and outcome. `Err` stops the canary.
async fn hop<T>(
    report: &mut CanaryReport,
    name: &'static str,
    step: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let outcome = step.await;
    report.hops.push(Hop {
        name,
        took: started.elapsed(),
        error: outcome.as_ref().err().map(|e| format!("{e:#}")),
    });
    outcome
}

/// Casts one vote end to end as `session` (an admin of the tenant). Never panics: a failing
/// hop ends the canary and is named in the report.
pub async fn canary(urls: &Urls, session: &str, patience: Patience) -> CanaryReport {
    let api = Api {
        http: crate::target::api_client(Duration::from_secs(15)),
    };
    let mut report = CanaryReport::default();
    let _ = run_canary(&api, &mut report, urls, session, patience).await;
    report
}

async fn run_canary(
    api: &Api,
    report: &mut CanaryReport,
    urls: &Urls,
    session: &str,
    patience: Patience,
) -> anyhow::Result<()> {
    let (events, ingest) = (&urls.events, &urls.ingest);
    let title = format!("canary {}", chrono::Utc::now().format("%Y-%m-%d %H:%M:%S"));
    let created = hop(
        report,
        "events-svc: create the canary election",
        api.expect(
            &[201],
            Method::POST,
            format!("{events}/v1/elections"),
            Some(session),
            Some(json!({
                "title": title, "question": "Canary", "kind": "single",
                "options": [{"id": "canary-yes", "label": "Yes"}, {"id": "canary-no", "label": "No"}],
                "max_choices": 1,
            })),
        ),
    )
    .await?;
    let election = created["id"].as_str().context("no election id")?.to_owned();
    hop(
        report,
        "events-svc → elections side: open it",
        api.expect(
            &[200],
            Method::POST,
            format!("{events}/v1/elections/{election}/open"),
            Some(session),
            None,
        ),
    )
    .await?;
    let issued = hop(
        report,
        "events-svc: a voting token",
        api.expect(
            &[201],
            Method::POST,
            format!("{events}/v1/elections/{election}/token"),
            Some(session),
            None,
        ),
    )
    .await?;
    let token = issued["token"].as_str().context("no token")?.to_owned();
    let accepted = hop(
        report,
        "ingest: the vote is accepted",
        api.expect(
            &[201, 202],
            Method::POST,
            format!("{ingest}/v1/elections/{election}/ballots"),
            Some(&token),
            Some(json!({"choices": ["canary-yes"]})),
        ),
    )
    .await?;
    let receipt = accepted["receipt"]
        .as_str()
        .context("no receipt")?
        .to_owned();
    hop(
        report,
        "worker: the vote is recorded",
        wait_recorded(&api.http, ingest, &receipt, patience.recorded),
    )
    .await?;
    hop(
        report,
        "events-svc → elections side: close it",
        api.expect(
            &[200],
            Method::POST,
            format!("{events}/v1/elections/{election}/close"),
            Some(session),
            None,
        ),
    )
    .await?;
    let url = format!("{events}/v1/elections/{election}/results");
    hop(
        report,
        "worker: sealed, final tally of one vote",
        wait_final(&api.http, &url, session, patience.sealed),
    )
    .await?;
    Ok(())
}

async fn wait_recorded(
    http: &reqwest::Client,
    ingest: &str,
    receipt: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let (status, _, body) = call_json(
            http,
            Method::POST,
            &format!("{ingest}/v1/receipts:lookup"),
            None,
            Some(json!({ "receipt": receipt })),
        )
        .await?;
        match (status, body["status"].as_str()) {
            (200, Some("recorded")) => return Ok(()),
            (200, Some("rejected")) => bail!("the vote was rejected: {}", body["reason"]),
            _ if Instant::now() >= deadline => bail!(
                "the vote was accepted but not recorded within {} s (is the worker running and \
                 reaching the database and Pub/Sub?)",
                within.as_secs()
            ),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn wait_final(
    http: &reqwest::Client,
    url: &str,
    session: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let (status, _, body) = call_json(http, Method::GET, url, Some(session), None).await?;
        if status == 200 && body["final"] == json!(true) {
            if body["total"] != json!(1) || body["tally"]["canary-yes"] != json!(1) {
                bail!("the final tally is not the one vote cast: {body}");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the results were not final within {} s: {status} {body}",
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A session by dev login (local profile only).
pub async fn dev_login(members: &str, national_id: &str) -> anyhow::Result<String> {
    let http = crate::target::api_client(Duration::from_secs(15));
    let (status, _, body) = call_json(
        &http,
        Method::POST,
        &format!("{members}/v1/auth/dev-login"),
        None,
        Some(json!({ "national_id": national_id })),
    )
    .await?;
    if status != 200 {
        bail!("dev login: {status} {body}");
    }
    Ok(body["session_token"]
        .as_str()
        .context("no session token")?
        .to_owned())
}

type At = chrono::DateTime<chrono::Utc>;

/// One live ingest instance: its id, the mode it is in, when it last read the flag, its heartbeat.
pub type IngestView = (String, Option<bool>, Option<At>, At);

/// Everything `ops status` shows.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// (service, readiness: `None` ready, `Some(why not)`).
    pub services: Vec<(&'static str, Option<String>)>,
    /// The flag as stored: (enabled, changed at, changed by).
    pub flag: Option<(bool, chrono::DateTime<chrono::Utc>, String)>,
    /// Each live ingest: (instance, mode it is in, when it last read the flag, heartbeat).
    pub ingests: Vec<IngestView>,
    /// Votes accepted without an outcome: (tenant, count, oldest accepted at).
    pub undecided: Vec<(String, i64, chrono::DateTime<chrono::Utc>)>,
    /// Closed elections not sealed yet: (tenant, election, closed at).
    pub awaiting_seal: Vec<(String, uuid::Uuid, Option<chrono::DateTime<chrono::Utc>>)>,
    /// The worker's counters: dead-lettered votes, undecodable messages, votes after a seal.
    pub worker_counters: Option<(f64, f64, f64)>,
}

impl Status {
    pub fn healthy(&self) -> bool {
        self.services.iter().all(|(_, e)| e.is_none())
    }

    pub fn print(&self) {
        println!("services:");
        for (name, error) in &self.services {
            match error {
                None => println!("  ready      {name}"),
                Some(e) => println!("  NOT READY  {name}: {e}"),
            }
        }
        match &self.flag {
            Some((enabled, at, by)) => println!(
                "queue flag: {} (changed {at} by {by})",
                if *enabled {
                    "ON (queue mode)"
                } else {
                    "OFF (direct mode)"
                }
            ),
            None => println!("queue flag: never set (each ingest runs on QUEUE_MODE_DEFAULT)"),
        }
        println!("ingest instances ({} live):", self.ingests.len());
        for (id, mode, read_at, heartbeat) in &self.ingests {
            let mode = match mode {
                Some(true) => "queue",
                Some(false) => "direct",
                None => "?",
            };
            let read = read_at.map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
            println!("  {id}: {mode} mode, flag read {read}, heartbeat {heartbeat}");
        }
        let now = chrono::Utc::now();
        if self.undecided.is_empty() {
            println!("undecided votes: none");
        }
        for (tenant, n, oldest) in &self.undecided {
            println!(
                "undecided votes: {tenant}: {n}, oldest accepted {} s ago",
                (now - *oldest).num_seconds()
            );
        }
        if self.awaiting_seal.is_empty() {
            println!("elections awaiting their seal: none");
        }
        for (tenant, election, closed) in &self.awaiting_seal {
            let since = closed.map_or(0, |c| (now - c).num_seconds());
            println!("awaiting seal: {tenant} {election}, closed {since} s ago");
        }
        match self.worker_counters {
            Some((dead, undecodable, after_seal)) => println!(
                "worker: {dead} dead-lettered votes, {undecodable} undecodable messages, {after_seal} votes after a seal (since it started)"
            ),
            None => println!("worker: its /metrics did not answer"),
        }
    }
}

/// Reads the status from the services and the database (`database_url`: a login that may read
/// `ops.*` and run the elections functions, e.g. the owner's).
pub async fn status(urls: &Urls, database_url: &str) -> anyhow::Result<Status> {
    let http = crate::target::api_client(Duration::from_secs(5));
    let mut status = Status::default();
    for (name, base) in [
        ("members-fn", &urls.members),
        ("events-svc", &urls.events),
        ("ingest (vote path)", &urls.ingest),
        ("ingest (internal)", &urls.elections),
        ("worker", &urls.worker),
    ] {
        let error = shared::ops_view::readiness(&http, base).await;
        status.services.push((name, error));
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url)
        .await
        .context("the database does not answer")?;
    status.flag = sqlx::query_as(
        "SELECT enabled, changed_at, changed_by FROM ops.queue_mode WHERE singleton",
    )
    .fetch_optional(&pool)
    .await?;
    status.ingests = shared::ops_view::live_ingests(&pool)
        .await?
        .into_iter()
        .map(|i| {
            (
                i.instance_id,
                i.queue_mode,
                i.queue_mode_read_at,
                i.heartbeat_at,
            )
        })
        .collect();
    status.undecided = sqlx::query_as(
        "SELECT org_id, undecided, oldest FROM elections.undecided_votes() ORDER BY 1",
    )
    .fetch_all(&pool)
    .await?;
    status.awaiting_seal =
        sqlx::query_as("SELECT org_id, id, closed_at FROM elections.awaiting_seal() ORDER BY 3")
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    if let Some(text) = shared::ops_view::metrics_text(&http, &urls.worker).await {
        let sum = |name: &str| shared::ops_view::metric_sum(&text, name, &[]);
        status.worker_counters = Some((
            sum("worker_dead_letter_votes_total"),
            sum("worker_undecodable_total"),
            sum("worker_votes_after_seal_total"),
        ));
    }
    Ok(status)
}
