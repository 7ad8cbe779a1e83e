//! `ops status`: every service's readiness, the queue flag and what each ingest instance has
//! seen of it, the votes still on their way, the elections waiting for their seal, and the
//! worker's dead-letter and undecodable counts.

use std::time::Duration;

use anyhow::Context;

use super::Urls;
use crate::target::metric_sum;

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
    let mut status = Status {
        services: readiness(&http, urls).await,
        ..Status::default()
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url)
        .await
        .context("the database does not answer")?;
    read_database(&pool, &mut status).await?;
    pool.close().await;
    if let Some(text) = shared::ops_view::metrics_text(&http, &urls.worker).await {
        status.worker_counters = Some((
            metric_sum(&text, "worker_dead_letter_votes_total"),
            metric_sum(&text, "worker_undecodable_total"),
            metric_sum(&text, "worker_votes_after_seal_total"),
        ));
    }
    Ok(status)
}

/// Each service's `/readyz`: `None` when ready, else why not.
async fn readiness(http: &reqwest::Client, urls: &Urls) -> Vec<(&'static str, Option<String>)> {
    let mut services = Vec::new();
    for (name, base) in [
        ("members-fn", &urls.members),
        ("events-svc", &urls.events),
        ("ingest (vote path)", &urls.ingest),
        ("ingest (internal)", &urls.elections),
        ("worker", &urls.worker),
    ] {
        let error = shared::ops_view::readiness(http, base).await;
        services.push((name, error));
    }
    services
}

/// The flag, the live ingest instances, the undecided votes and the elections awaiting their
/// seal, as the database holds them.
async fn read_database(pool: &sqlx::PgPool, status: &mut Status) -> anyhow::Result<()> {
    status.flag = sqlx::query_as(
        "SELECT enabled, changed_at, changed_by FROM ops.queue_mode WHERE singleton",
    )
    .fetch_optional(pool)
    .await?;
    status.ingests = shared::ops_view::live_ingests(pool)
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
    .fetch_all(pool)
    .await?;
    status.awaiting_seal =
        sqlx::query_as("SELECT org_id, id, closed_at FROM elections.awaiting_seal() ORDER BY 3")
            .fetch_all(pool)
            .await?;
    Ok(())
}
