//! What runs beside a soak: each process's resident memory and CPU, and the database's size.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Sample;
use crate::machine::{self, CpuWatch};

/// Resident memory (MiB) of the named processes, this process (`loadtest`) and the Pub/Sub
/// emulator's JVM.
pub(super) fn rss(watch: &CpuWatch) -> BTreeMap<String, f64> {
    let of = |pid: &str| -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some((kib / 1024.0 * 10.0).round() / 10.0)
    };
    let mut out = BTreeMap::new();
    if let Some(m) = of("self") {
        out.insert("loadtest".to_owned(), m);
    }
    for (name, pid) in &watch.pids {
        if let Some(m) = of(&pid.to_string()) {
            out.insert(name.clone(), m);
        }
    }
    if let Some(pid) = machine::emulator_pid() {
        if let Some(m) = of(&pid.to_string()) {
            out.insert("pubsub-emulator".to_owned(), m);
        }
    }
    out
}

pub(super) async fn db_size(pool: Option<&sqlx::PgPool>) -> Option<i64> {
    sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(pool?)
        .await
        .ok()
}

/// Samples memory, CPU and the database size every `every` until dropped.
pub(super) struct Sampler {
    samples: Arc<std::sync::Mutex<Vec<Sample>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub(super) fn start(
        watch: CpuWatch,
        pool: Option<sqlx::PgPool>,
        start: Instant,
        every: Duration,
    ) -> Self {
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handle = {
            let samples = samples.clone();
            tokio::spawn(async move {
                let mut before = watch.sample();
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let now = watch.sample();
                    let share = machine::share(&before, &now);
                    before = now;
                    // `share` is of the whole machine; the report speaks in cores.
                    let cores = machine::describe().nproc.max(1) as f64;
                    let sample = Sample {
                        t_s: start.elapsed().as_secs_f64(),
                        rss_mib: rss(&watch),
                        cpu_pct_of_core: share
                            .by_process_pct
                            .into_iter()
                            .map(|(k, v)| (k, (v * cores * 10.0).round() / 10.0))
                            .collect(),
                        db_bytes: db_size(pool.as_ref()).await,
                    };
                    samples
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(sample);
                }
            })
        };
        Self { samples, handle }
    }

    pub(super) fn stop(self) -> Vec<Sample> {
        self.handle.abort();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
