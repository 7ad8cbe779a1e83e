//! What an operator sees of the vote path, read the same way by the `ops status` CLI and by
//! events-svc's live view for the meeting console (`GET /v1/ops/live`): each service's
//! readiness, the live ingest instances and the mode each is in, counts per election not yet
//! sealed (`ops.live_votes()`, counts only), and counters out of a service's `/metrics`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// `None` when `{base}/readyz` answers 2xx, otherwise why not.
pub async fn readiness(http: &reqwest::Client, base: &str) -> Option<String> {
    match http
        .get(format!("{}/readyz", base.trim_end_matches('/')))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!(
            "{} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        )),
        Err(e) => Some(format!("no answer ({})", e.without_url())),
    }
}

/// A service's `/metrics` text, `None` when it does not answer.
pub async fn metrics_text(http: &reqwest::Client, base: &str) -> Option<String> {
    let reply = http
        .get(format!("{}/metrics", base.trim_end_matches('/')))
        .send()
        .await
        .ok()?;
    if !reply.status().is_success() {
        return None;
    }
    reply.text().await.ok()
}

/// The sum of every series of the metric `name` (all label sets) whose line contains each of
/// `labels` (e.g. `outcome="accepted"`) in Prometheus' text format.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One ingest instance with a heartbeat in the last minute.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct IngestInstance {
    pub instance_id: String,
    /// The mode it is in: `true` queue, `false` direct, `null` not reported yet.
    pub queue_mode: Option<bool>,
    /// When it last read the queue flag.
    pub queue_mode_read_at: Option<DateTime<Utc>>,
    pub heartbeat_at: DateTime<Utc>,
}

/// The live ingest instances (`ops.ingest_ledger`), by id.
pub async fn live_ingests(pool: &PgPool) -> Result<Vec<IngestInstance>, sqlx::Error> {
    sqlx::query_as!(
        IngestInstance,
        "SELECT instance_id, queue_mode, queue_mode_read_at, heartbeat_at FROM ops.ingest_ledger \
         WHERE heartbeat_at > now() - interval '60 seconds' ORDER BY instance_id",
    )
    .fetch_all(pool)
    .await
}

/// Counts for one election that is open, or closed and not sealed yet.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ElectionVotes {
    pub org_id: String,
    pub election_id: uuid::Uuid,
    /// `open`, or `closed` (waiting for its seal).
    pub status: String,
    pub closes_at: Option<DateTime<Utc>>,
    /// Queue-mode votes ingest accepted, as far as its ledger is flushed (direct-mode votes are
    /// recorded at once and are not in the ledger).
    pub accepted: i64,
    /// Accepted votes with no outcome yet, and the age of the oldest in seconds.
    pub undecided: i64,
    pub oldest_undecided_seconds: Option<f64>,
    /// Ballots in the election's ballot box (both modes).
    pub recorded: i64,
}

/// Per election not sealed yet (`ops.live_votes()`: a login that may execute it, events-svc's
/// or the owner's).
pub async fn live_votes(pool: &PgPool) -> Result<Vec<ElectionVotes>, sqlx::Error> {
    sqlx::query_as!(
        ElectionVotes,
        r#"SELECT org_id AS "org_id!", election_id AS "election_id!", status AS "status!",
                  closes_at, accepted AS "accepted!", undecided AS "undecided!",
                  oldest_undecided_seconds, recorded AS "recorded!"
           FROM ops.live_votes()"#,
    )
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_the_series_of_one_metric_only() {
        let text = "# HELP votes_total x\n\
                    votes_total{outcome=\"accepted\",mode=\"queue\"} 3\n\
                    votes_total{outcome=\"accepted\",mode=\"direct\"} 2\n\
                    votes_total{outcome=\"busy\"} 7\n\
                    votes_total_other 100\n\
                    worker_dead_letter_votes_total 4\n";
        assert_eq!(
            metric_sum(text, "votes_total", &["outcome=\"accepted\""]),
            5.0
        );
        assert_eq!(metric_sum(text, "votes_total", &[]), 12.0);
        assert_eq!(metric_sum(text, "worker_dead_letter_votes_total", &[]), 4.0);
        assert_eq!(metric_sum(text, "absent", &[]), 0.0);
    }
}
