//! The services' Prometheus metrics: single samples, sums, and what a histogram saw between two
//! snapshots.

/// The value of the first sample of `name` whose labels contain `label` (Prometheus text).
pub fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| label.is_empty() || l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The sum of every sample of `name` (all label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    shared::ops_view::metric_sum(text, name, &[])
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

/// What one histogram saw between two snapshots: how many observations, and the bucket
/// bounds (ms) that hold the 50th and the 99th percentile of them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HistogramDelta {
    pub count: u64,
    pub p50_le_ms: Option<f64>,
    pub p99_le_ms: Option<f64>,
}

impl HistogramDelta {
    /// The difference of histogram `name` (samples whose labels contain `label`) between two
    /// `/metrics` texts; nothing when there is no later text or nothing was observed.
    pub fn between(before: Option<&str>, after: Option<&str>, name: &str, label: &str) -> Self {
        let Some(after) = after else {
            return Self::default();
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
            return Self::default();
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
        Self {
            count: total as u64,
            p50_le_ms: q(0.5),
            p99_le_ms: q(0.99),
        }
    }
}

impl ServerSide {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Self {
        let ingest = HistogramDelta::between(
            before.ingest.as_deref(),
            after.ingest.as_deref(),
            "http_request_duration_seconds",
            "route=\"/v1/elections/{id}/ballots\"",
        );
        let publish = HistogramDelta::between(
            before.ingest.as_deref(),
            after.ingest.as_deref(),
            "publish_latency_seconds",
            "",
        );
        let lag = HistogramDelta::between(
            before.worker.as_deref(),
            after.worker.as_deref(),
            "worker_queue_lag_seconds",
            "",
        );
        Self {
            ingest_requests: ingest.count,
            ingest_p50_le_ms: ingest.p50_le_ms,
            ingest_p99_le_ms: ingest.p99_le_ms,
            publishes: publish.count,
            publish_p50_le_ms: publish.p50_le_ms,
            publish_p99_le_ms: publish.p99_le_ms,
            committed: lag.count,
            queue_lag_p50_le_ms: lag.p50_le_ms,
            queue_lag_p99_le_ms: lag.p99_le_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let delta = HistogramDelta::between(
            Some(&h(10, 10, 10)),
            Some(&h(60, 109, 110)),
            "x",
            "route=\"r\"",
        );
        assert_eq!(
            delta,
            HistogramDelta {
                count: 100,
                p50_le_ms: Some(5.0),
                p99_le_ms: Some(10.0),
            }
        );
    }
}
