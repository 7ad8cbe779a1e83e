//! The real worker, in this process, draining the run's subscription into a fresh database.

use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::ProgressBar;
use shared::config::{Env, PubSubSettings};
use testkit::Role;
use uuid::Uuid;

use super::{DrainSettings, Throughput, WorkerRun};
use crate::ceiling;
use crate::machine::{self, CpuWatch};
use crate::scenario::Ui;

/// The worker's settings for the run: `db`'s worker login, subscription `ps`, and the streams,
/// writers and batches of `settings`.
fn worker_env(ps: &PubSubSettings, db: &testkit::TestDb, settings: &DrainSettings) -> Env {
    Env::from_map([
        ("WORKER_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db.url(Role::Worker)),
        ("DATABASE_MAX_CONNECTIONS", "3".into()),
        (
            "PUBSUB_EMULATOR_HOST",
            ps.emulator_host.clone().unwrap_or_default(),
        ),
        ("PUBSUB_PROJECT_ID", ps.project.clone()),
        ("PUBSUB_TOPIC", ps.topic.clone()),
        ("PUBSUB_SUBSCRIPTION", ps.subscription.clone()),
        ("STREAMS", settings.streams.to_string()),
        ("WRITERS", settings.writers.to_string()),
        ("BATCH_SIZE", settings.batch_size.to_string()),
        ("MAX_OUTSTANDING", settings.max_outstanding.to_string()),
        (
            "WORKER_ID",
            format!("loadtest-drain-{}", Uuid::new_v4().simple()),
        ),
        ("SEAL_DELAY_MS", "600000".into()),
        ("VOTE_KEYS", ceiling::run_vote_keys().0.clone()),
    ])
}

/// The real worker, in this process, on `db`'s worker login and subscription B.
pub(super) async fn worker_end_to_end(
    ps: &PubSubSettings,
    db: &testkit::TestDb,
    settings: &DrainSettings,
    ui: Ui,
    cpu: &CpuWatch,
) -> anyhow::Result<WorkerRun> {
    let n = settings.votes;
    let env = worker_env(ps, db, settings);
    let bar = ui.bar(n as u64, "worker, end to end");
    let before = cpu.sample();
    let started = Instant::now();
    let app = worker::startup::Application::build(
        worker::configuration::Settings::from(env)
            .map_err(|e| anyhow::anyhow!("worker settings: {e}"))?,
    )
    .await?;
    let metrics_url = format!("http://{}/metrics", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let deadline = started + Duration::from_secs(settings.timeout_secs);
    let watched = watch(&metrics_url, n as u64, started, deadline, &bar).await?;
    let elapsed = started.elapsed();
    let share = machine::share(&before, &cpu.sample());
    bar.finish_and_clear();
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), running).await;
    if watched.recorded < n as u64 {
        bail!(
            "the worker recorded {} of {n} votes within {} s",
            watched.recorded,
            settings.timeout_secs
        );
    }
    Ok(WorkerRun {
        throughput: Throughput::new(n, elapsed, watched.progress, share),
        mean_batch_size: watched.batch_mean,
    })
}

/// What the worker's counters said while it drained.
struct Watched {
    recorded: u64,
    batch_mean: Option<f64>,
    progress: Vec<(f64, u64)>,
}

/// Reads the worker's `/metrics` every 50 ms until it has decided `n` votes or `deadline`
/// passed.
async fn watch(
    metrics_url: &str,
    n: u64,
    started: Instant,
    deadline: Instant,
    bar: &ProgressBar,
) -> anyhow::Result<Watched> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut watched = Watched {
        recorded: 0,
        batch_mean: None,
        progress: Vec::new(),
    };
    loop {
        if let Ok(text) = async { http.get(metrics_url).send().await?.text().await }.await {
            watched.recorded =
                crate::target::metric(&text, "worker_votes_total", "outcome=\"recorded\"")
                    .unwrap_or(0.0) as u64;
            // Every outcome (recorded, duplicate, rejections) is a decided vote.
            let decided = crate::target::metric_sum(&text, "worker_votes_total") as u64;
            bar.set_position(watched.recorded);
            watched
                .progress
                .push((started.elapsed().as_secs_f64(), watched.recorded));
            let sum = crate::target::metric(&text, "worker_batch_size_sum", "");
            let count = crate::target::metric(&text, "worker_batch_size_count", "");
            if let (Some(sum), Some(count)) = (sum, count) {
                if count > 0.0 {
                    watched.batch_mean = Some((sum / count * 10.0).round() / 10.0);
                }
            }
            if decided >= n {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(watched)
}
