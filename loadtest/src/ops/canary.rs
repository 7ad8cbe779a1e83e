//! `ops canary`: one vote end to end in an election of its own, each hop timed, the first
//! failing one named.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};

use super::Urls;
use crate::target::call_json;

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
    let election = open_election(api, report, events, session).await?;
    let receipt = vote(api, report, urls, session, &election).await?;
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

/// Creates and opens the canary election; returns its id.
async fn open_election(
    api: &Api,
    report: &mut CanaryReport,
    events: &str,
    session: &str,
) -> anyhow::Result<String> {
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
    Ok(election)
}

/// A voting token, and the vote cast with it; returns the vote's receipt.
async fn vote(
    api: &Api,
    report: &mut CanaryReport,
    urls: &Urls,
    session: &str,
    election: &str,
) -> anyhow::Result<String> {
    let (events, ingest) = (&urls.events, &urls.ingest);
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
    Ok(receipt)
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
