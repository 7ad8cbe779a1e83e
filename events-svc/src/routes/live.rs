//! The meeting console's live view (platform operators only): what the person on duty needs to
//! see during a vote, read the way `ops status` reads it (`shared::ops_view`). Counts per
//! election come from the database through `ops.live_votes()` (counts only: events-svc's login
//! may read nothing else of the elections schema); ingest's and the worker's counters from their
//! `/metrics` (internal listeners the browser cannot reach, so the console asks here); every
//! service's readiness from its `/readyz`. The console polls this every second.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use shared::ops_view::{self, metric_sum, ElectionVotes, IngestInstance};

use super::{SESSION_401, SESSION_503};
use crate::auth::Caller;
use crate::error::EventsError;
use crate::state::AppState;

/// What the console shows live.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LiveView {
    /// Votes ingest accepted (202 or 201) since it started, and refused (any problem), from
    /// its metrics (`null` when they do not answer).
    pub votes_accepted: Option<f64>,
    pub votes_refused: Option<f64>,
    /// Readiness by service: `members-fn`, `events-svc`, `ingest`, `worker`.
    pub ready: BTreeMap<String, bool>,
    /// Per election that is open or closed and not sealed yet, from the database (`null` when
    /// it does not answer).
    pub elections: Option<Vec<ElectionVotes>>,
    /// The same figures over every election listed.
    pub totals: Option<Totals>,
    /// The live ingest instances and the queue mode each is in (their ledger heartbeats).
    pub ingests: Option<Vec<IngestInstance>>,
    /// The worker's own counters since it started (`null` when its metrics do not answer).
    pub worker: Option<WorkerCounters>,
}

/// Sums over the elections of the live view (database).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Totals {
    pub accepted: i64,
    pub undecided: i64,
    pub oldest_undecided_seconds: Option<f64>,
    pub recorded: i64,
}

/// What the worker instance at `WORKER_HEALTH_URL` counted since it started.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerCounters {
    /// Votes it recorded, and rejected (any reason but `recorded` and `duplicate`).
    pub recorded: f64,
    pub rejected: f64,
    /// Votes that reached it through the dead-letter subscription (recorded like any other:
    /// the database does not tell which votes were dead-lettered).
    pub dead_letter_votes: f64,
    /// Votes that failed to commit on their own and were redelivered.
    pub poison_votes: f64,
    /// Messages that are not votes it can read.
    pub undecodable: f64,
    /// Accept (ingest) → commit (worker): sum of seconds and count, so the console shows the
    /// mean over its own polling interval.
    pub commit_lag_seconds_sum: f64,
    pub commit_lag_count: f64,
}

impl WorkerCounters {
    fn from_metrics(text: &str) -> Self {
        let votes = |outcome: &str| {
            metric_sum(
                text,
                "worker_votes_total",
                &[&format!("outcome=\"{outcome}\"")],
            )
        };
        let recorded = votes("recorded");
        Self {
            recorded,
            rejected: metric_sum(text, "worker_votes_total", &[]) - recorded - votes("duplicate"),
            dead_letter_votes: metric_sum(text, "worker_dead_letter_votes_total", &[]),
            poison_votes: metric_sum(text, "worker_poison_votes_total", &[]),
            undecodable: metric_sum(text, "worker_undecodable_total", &[]),
            commit_lag_seconds_sum: metric_sum(text, "worker_queue_lag_seconds_sum", &[]),
            commit_lag_count: metric_sum(text, "worker_queue_lag_seconds_count", &[]),
        }
    }
}

fn totals(elections: &[ElectionVotes]) -> Totals {
    elections.iter().fold(Totals::default(), |mut t, e| {
        t.accepted += e.accepted;
        t.undecided += e.undecided;
        t.recorded += e.recorded;
        t.oldest_undecided_seconds = match (t.oldest_undecided_seconds, e.oldest_undecided_seconds)
        {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        t
    })
}

/// Live counters for the console (platform operators only): per election and in total,
/// accepted (ingest's ledger) vs recorded, undecided votes and the oldest's age; the worker's
/// commit lag and dead letters; ingest's vote counters; every service's readiness.
#[utoipa::path(get, path = "/v1/ops/live",
    security(("session" = [])),
    responses(
        (status = 401, description = SESSION_401, body = shared::Problem),
        (status = 200, description = "Counters (`null` where their source does not answer) and readiness", body = LiveView),
        (status = 403, description = "Not a platform operator (`not-platform-ops`)", body = shared::Problem),
        (status = 429, description = "Too many requests from this member or in total (`rate-limited`, Retry-After)", body = shared::Problem),
        (status = 503, description = SESSION_503, body = shared::Problem),
    ),
    tag = "ops")]
pub async fn live(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<LiveView>, EventsError> {
    caller.require_platform_ops(&state.settings.platform_org)?;
    let ingest = state.settings.elections_url.as_str();
    let worker = state.settings.worker_health_url.as_str();
    let members = state
        .settings
        .session_jwks_url
        .trim_end_matches("/.well-known/jwks.json");
    let probe = &state.probe;
    let (ingest_metrics, worker_metrics, ingest_ready, members_ready, worker_ready) = tokio::join!(
        ops_view::metrics_text(probe, ingest),
        ops_view::metrics_text(probe, worker),
        ops_view::readiness(probe, ingest),
        ops_view::readiness(probe, members),
        ops_view::readiness(probe, worker),
    );
    let (elections, ingests) = tokio::join!(
        ops_view::live_votes(&state.pool),
        ops_view::live_ingests(&state.pool)
    );
    let elections = elections.ok();
    let events_ready = sqlx::query!("SELECT 1 AS one")
        .fetch_one(&state.pool)
        .await
        .is_ok();
    let votes = |accepted: bool| {
        ingest_metrics.as_deref().map(|text| {
            let all = metric_sum(text, "votes_total", &[]);
            let ok = metric_sum(text, "votes_total", &["outcome=\"accepted\""]);
            if accepted {
                ok
            } else {
                all - ok
            }
        })
    };
    Ok(Json(LiveView {
        votes_accepted: votes(true),
        votes_refused: votes(false),
        ready: [
            ("members-fn".to_owned(), members_ready.is_none()),
            ("events-svc".to_owned(), events_ready),
            ("ingest".to_owned(), ingest_ready.is_none()),
            ("worker".to_owned(), worker_ready.is_none()),
        ]
        .into(),
        totals: elections.as_deref().map(totals),
        elections,
        ingests: ingests.ok(),
        worker: worker_metrics.as_deref().map(WorkerCounters::from_metrics),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_counters_come_from_its_metrics() {
        let text = "worker_votes_total{outcome=\"recorded\"} 10\n\
                    worker_votes_total{outcome=\"duplicate\"} 2\n\
                    worker_votes_total{outcome=\"closed\"} 3\n\
                    worker_dead_letter_votes_total 1\n\
                    worker_queue_lag_seconds_sum 1.5\n\
                    worker_queue_lag_seconds_count 10\n";
        let c = WorkerCounters::from_metrics(text);
        assert_eq!(
            (c.recorded, c.rejected, c.dead_letter_votes),
            (10.0, 3.0, 1.0)
        );
        assert_eq!((c.commit_lag_seconds_sum, c.commit_lag_count), (1.5, 10.0));
    }
}
