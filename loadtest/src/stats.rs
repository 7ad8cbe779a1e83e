//! Latency histograms (HDR, microseconds) and their summaries.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram of microseconds from 1 µs to one hour with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

pub fn record(h: &mut Histogram<u64>, latency: Duration) {
    h.saturating_record((latency.as_micros() as u64).max(1));
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: (h.mean() / 10.0).round() / 100.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    pub fn of_durations<'a>(latencies: impl IntoIterator<Item = &'a Duration>) -> Self {
        let mut h = histogram();
        for l in latencies {
            record(&mut h, *l);
        }
        Self::of(&h)
    }
}

/// The percentile spectrum of a histogram, for charts: (percentile, milliseconds).
pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    [
        0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99, 100.0,
    ]
    .iter()
    .map(|&p| (p, ms(h.value_at_percentile(p))))
    .collect()
}

/// A window of requests by scheduled send time.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub start_s: f64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Latency percentiles per window of `width` by scheduled time.
pub fn windows(samples: &[(Duration, Duration)], width: Duration) -> Vec<Window> {
    let width = width.max(Duration::from_millis(10));
    let mut buckets: Vec<Histogram<u64>> = Vec::new();
    for (scheduled, latency) in samples {
        let i = (scheduled.as_secs_f64() / width.as_secs_f64()) as usize;
        if buckets.len() <= i {
            buckets.resize_with(i + 1, histogram);
        }
        record(&mut buckets[i], *latency);
    }
    buckets
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.is_empty())
        .map(|(i, h)| Window {
            start_s: i as f64 * width.as_secs_f64(),
            requests: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises() {
        let l: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let s = Latency::of_durations(&l);
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
        let w = windows(
            &l.iter().map(|d| (*d, *d)).collect::<Vec<_>>(),
            Duration::from_millis(500),
        );
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].requests, 499);
    }
}
