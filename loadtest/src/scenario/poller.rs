//! The tally over time: polled while a run goes on, and the series the charts are drawn from.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::target::Target;

/// Polls the tally while a run goes on and until it holds every accepted vote.
pub(crate) struct Poller {
    samples: Arc<Mutex<Vec<(f64, u64)>>>,
    goal: Arc<AtomicI64>,
    spike_over: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

pub(crate) const DRAIN_POLL: Duration = Duration::from_millis(25);

impl Poller {
    pub(crate) fn start(
        target: Arc<Target>,
        election: Uuid,
        start: Instant,
        timeout: Duration,
    ) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let goal = Arc::new(AtomicI64::new(i64::MAX));
        let spike_over = Arc::new(AtomicBool::new(false));
        let handle = {
            let (samples, goal, spike_over) = (samples.clone(), goal.clone(), spike_over.clone());
            tokio::spawn(async move {
                let mut over_since: Option<Instant> = None;
                loop {
                    if let Ok(results) = target.results(election).await {
                        let t = start.elapsed().as_secs_f64();
                        samples
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((t, results.total.max(0) as u64));
                        if results.total >= goal.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                    let over = spike_over.load(Ordering::SeqCst);
                    if over {
                        let since = *over_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > timeout {
                            break;
                        }
                    }
                    tokio::time::sleep(if over {
                        DRAIN_POLL
                    } else {
                        Duration::from_millis(100)
                    })
                    .await;
                }
            })
        };
        Self {
            samples,
            goal,
            spike_over,
            handle,
        }
    }

    pub(crate) async fn finish(self, accepted: u64) -> Vec<(f64, u64)> {
        self.goal.store(accepted as i64, Ordering::SeqCst);
        self.spike_over.store(true, Ordering::SeqCst);
        let _ = self.handle.await;
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

pub(crate) fn count_by<T: ToString>(items: impl IntoIterator<Item = T>) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    for item in items {
        *map.entry(item.to_string()).or_default() += 1;
    }
    map
}

/// At most `max` points of a cumulative series (keeps the last).
pub(crate) fn thin<T: Copy>(series: Vec<(f64, T)>, max: usize) -> Vec<(f64, T)> {
    if series.len() <= max {
        return series;
    }
    let step = series.len().div_ceil(max);
    let last = series.last().copied();
    let mut out: Vec<(f64, T)> = series.into_iter().step_by(step).collect();
    if let Some(last) = last {
        out.push(last);
    }
    out
}

pub(crate) fn cumulative(mut times: Vec<f64>) -> Vec<(f64, u64)> {
    times.sort_by(f64::total_cmp);
    let series = times
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u64 + 1))
        .collect();
    thin(series, 400)
}
