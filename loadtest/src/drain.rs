//! `drain`: how fast queued votes become ballots, and what caps it.
//!
//! On a fresh topic and fresh databases — never the dev stack's:
//! 1. publish N votes, exactly as ingest would (`VoteMessage::encode`, the official
//!    publisher), to the topic while it has one subscription, A;
//! 2. **ack-only**: the official subscriber on subscription A with the worker's stream count
//!    and flow control, decoding and acking each vote and doing nothing else — what the
//!    emulator can deliver;
//! 3. **end to end**: subscription B is created, the same N votes are published again, and
//!    the real worker (`worker::startup::Application`, in this process) drains B into
//!    database 1; timed until its counter says every vote is recorded, then the database is
//!    checked. (Publishing twice, one subscription at a time, keeps the shared emulator from
//!    holding two copies of the backlog: about 2 KB of its 512 MB heap per queued message.)
//! 4. **batch writer alone**: the votes decoded in step 2 go straight into
//!    `worker::batch::commit` in batches, `WRITERS` at a time, on a pool of at most 3
//!    connections, against database 2 — no Pub/Sub at all;
//! 5. **raw-SQL ceilings** on database 2: the best batched INSERT/UPDATE for the same rows
//!    and the best single-vote transaction (what direct mode does), so the worker and direct
//!    mode are reported as fractions of what this PostgreSQL can do, in the same run.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde::Serialize;
use shared::config::Env;
use shared::config::PubSubSettings;
use shared::domain::TenantId;
use shared::vote::VoteMessage;
use testkit::Role;
use uuid::Uuid;

use crate::ceiling::{self, Batched, SingleCeiling};
use crate::machine::{self, CpuShare, CpuWatch};
use crate::scenario::{Check, Ui};

#[derive(Debug, Clone, Serialize)]
pub struct DrainSettings {
    pub votes: usize,
    /// StreamingPull streams (the worker's `STREAMS`), for the worker and the ack-only consumer.
    pub streams: usize,
    /// The worker's `BATCH_SIZE` and `WRITERS` for the end-to-end run.
    pub batch_size: usize,
    pub writers: usize,
    /// Messages leased per stream (the worker's `MAX_OUTSTANDING`).
    pub max_outstanding: i64,
    /// (batch size, writers) configurations for the batch writer and the batched ceiling.
    pub writer_configs: Vec<(usize, usize)>,
    /// Votes for the single-vote ceiling and the connection counts to try.
    pub single_votes: usize,
    pub single_connections: Vec<u32>,
    /// The connections direct mode may use (ingest's `DATABASE_MAX_CONNECTIONS`).
    pub direct_mode_connections: u32,
    /// Bound on each consumer's drain.
    pub timeout_secs: u64,
    /// Keep the databases, topic and subscriptions afterwards (for inspection).
    pub keep: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub messages: usize,
    pub seconds: f64,
    pub per_second: f64,
    /// Cumulative count over time (seconds from the start of the phase).
    pub progress: Vec<(f64, u64)>,
    pub cpu: CpuShare,
}

impl Throughput {
    fn new(messages: usize, elapsed: Duration, progress: Vec<(f64, u64)>, cpu: CpuShare) -> Self {
        Self {
            messages,
            seconds: elapsed.as_secs_f64(),
            per_second: messages as f64 / elapsed.as_secs_f64().max(1e-9),
            progress: thin(progress),
            cpu,
        }
    }
}

fn thin(series: Vec<(f64, u64)>) -> Vec<(f64, u64)> {
    if series.len() <= 300 {
        return series;
    }
    let step = series.len().div_ceil(300);
    let last = series.last().copied();
    let mut out: Vec<(f64, u64)> = series.into_iter().step_by(step).collect();
    out.extend(last);
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerRun {
    #[serde(flatten)]
    pub throughput: Throughput,
    pub mean_batch_size: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WriterRun {
    pub batch_size: usize,
    pub writers: usize,
    /// The pool's size (the worker's `DATABASE_MAX_CONNECTIONS`).
    pub connections: u32,
    #[serde(flatten)]
    pub throughput: Throughput,
}

#[derive(Debug, Clone, Serialize)]
pub struct CeilingRun {
    pub method: Batched,
    pub batch_size: usize,
    pub writers: usize,
    #[serde(flatten)]
    pub throughput: Throughput,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub settings: DrainSettings,
    /// Filling subscription A (ack-only), then subscription B (worker).
    pub publish: Throughput,
    pub publish_again: Throughput,
    pub ack_only: Throughput,
    pub worker_end_to_end: WorkerRun,
    pub batch_writer: Vec<WriterRun>,
    pub ceiling_batched: Vec<CeilingRun>,
    pub ceiling_single: SingleCeiling,
    /// End-to-end worker rate / ack-only rate.
    pub end_to_end_over_ack_only: f64,
    /// Batch writer rate / best raw batched rate at the same batch size and writers.
    pub writer_over_ceiling: Vec<(String, f64)>,
    pub checks: Vec<Check>,
}

fn emulator_host() -> anyhow::Result<String> {
    let host = std::env::var("PUBSUB_EMULATOR_HOST")
        .context("PUBSUB_EMULATOR_HOST is not set (source infra/local/env.sh, or use infra/local/loadtest.sh)")?;
    crate::target::loopback(&format!("http://{host}"), "PUBSUB_EMULATOR_HOST")?;
    std::net::TcpStream::connect_timeout(
        &host
            .parse()
            .with_context(|| format!("PUBSUB_EMULATOR_HOST must be IP:PORT, got `{host}`"))?,
        Duration::from_secs(2),
    )
    .with_context(|| {
        format!("the Pub/Sub emulator does not answer at {host} (infra/local/up.sh)")
    })?;
    Ok(host)
}

async fn publish_all(
    ps: &PubSubSettings,
    votes: &[VoteMessage],
    ui: Ui,
    cpu: &CpuWatch,
) -> anyhow::Result<Throughput> {
    let publisher =
        shared::pubsub::publisher(ps, Duration::from_secs(60), Duration::from_millis(5)).await?;
    let bar = ui.bar(votes.len() as u64, "publishing the queued votes");
    let before = cpu.sample();
    let started = Instant::now();
    let correlation = shared::telemetry::CorrelationId::new();
    let done = AtomicUsize::new(0);
    let progress = Mutex::new(Vec::new());
    let failures: Vec<String> = futures::stream::iter(votes.iter().map(|v| {
        let publishing = publisher.publish(v.encode(&ceiling::run_vote_keys().1, &correlation.0));
        let (done, progress, bar) = (&done, &progress, &bar);
        async move {
            let outcome = publishing.await;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 500 == 0 || n == votes.len() {
                progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((started.elapsed().as_secs_f64(), n as u64));
            }
            bar.inc(1);
            outcome.err().map(|e| e.to_string())
        }
    }))
    .buffer_unordered(5000)
    .filter_map(|f| async move { f })
    .collect()
    .await;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    if let Some(first) = failures.first() {
        bail!("{} publishes failed (first: {first})", failures.len());
    }
    Ok(Throughput::new(
        votes.len(),
        elapsed,
        progress.into_inner().unwrap_or_else(|p| p.into_inner()),
        machine::share(&before, &cpu.sample()),
    ))
}

/// The ack-only consumer: returns its throughput and the decoded votes in arrival order.
async fn ack_only(
    ps: &PubSubSettings,
    settings: &DrainSettings,
    ui: Ui,
    cpu: &CpuWatch,
) -> anyhow::Result<(Throughput, Vec<VoteMessage>)> {
    let subscription = ps.subscription_path();
    let subscriber = shared::pubsub::subscriber(ps).await?;
    let n = settings.votes;
    let bar = ui.bar(n as u64, "ack-only consumer");
    let state = Arc::new(Mutex::new((
        HashSet::<String>::with_capacity(n),
        Vec::<VoteMessage>::with_capacity(n),
        Vec::<(f64, u64)>::new(),
    )));
    let finished = Arc::new(tokio::sync::Notify::new());
    let before = cpu.sample();
    let started = Instant::now();
    let mut tokens = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..settings.streams {
        let mut stream = subscriber
            .subscribe(subscription.clone())
            .set_max_outstanding_messages(settings.max_outstanding)
            .set_max_lease_extension(Duration::from_secs(10))
            .build();
        tokens.push(stream.shutdown_token());
        let (state, finished, bar) = (state.clone(), finished.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(Ok((message, handler))) = stream.next().await {
                let decoded = VoteMessage::decode(&ceiling::run_vote_keys().1, &message.data);
                handler.ack();
                let Ok(vote) = decoded else { continue };
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                if s.0.insert(vote.receipt.to_string()) {
                    s.1.push(vote);
                    bar.inc(1);
                    let count = s.1.len();
                    if count % 500 == 0 || count == n {
                        s.2.push((started.elapsed().as_secs_f64(), count as u64));
                    }
                    if count >= n {
                        finished.notify_one();
                    }
                }
            }
        }));
    }
    let timed_out = tokio::time::timeout(
        Duration::from_secs(settings.timeout_secs),
        finished.notified(),
    )
    .await
    .is_err();
    let elapsed = started.elapsed();
    let share = machine::share(&before, &cpu.sample());
    bar.finish_and_clear();
    for token in tokens {
        let _ = tokio::time::timeout(Duration::from_secs(5), token.shutdown()).await;
    }
    for task in tasks {
        task.abort();
    }
    let (_, votes, progress) =
        std::mem::take(&mut *state.lock().unwrap_or_else(|p| p.into_inner()));
    if timed_out {
        bail!(
            "the ack-only consumer got {} of {n} votes within {} s",
            votes.len(),
            settings.timeout_secs
        );
    }
    Ok((Throughput::new(n, elapsed, progress, share), votes))
}

/// The real worker, in this process, on `db`'s worker login and subscription B.
async fn worker_end_to_end(
    ps: &PubSubSettings,
    db: &testkit::TestDb,
    settings: &DrainSettings,
    ui: Ui,
    cpu: &CpuWatch,
) -> anyhow::Result<WorkerRun> {
    let n = settings.votes;
    let env = Env::from_map([
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
    ]);
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
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut progress = Vec::new();
    let deadline = started + Duration::from_secs(settings.timeout_secs);
    let (mut recorded, mut batch_mean) = (0u64, None);
    loop {
        if let Ok(text) = async { http.get(&metrics_url).send().await?.text().await }.await {
            recorded = crate::target::metric(&text, "worker_votes_total", "outcome=\"recorded\"")
                .unwrap_or(0.0) as u64;
            // Every outcome (recorded, duplicate, rejections) is a decided vote.
            let decided = crate::target::metric_sum(&text, "worker_votes_total") as u64;
            bar.set_position(recorded);
            progress.push((started.elapsed().as_secs_f64(), recorded));
            let sum = crate::target::metric(&text, "worker_batch_size_sum", "");
            let count = crate::target::metric(&text, "worker_batch_size_count", "");
            if let (Some(sum), Some(count)) = (sum, count) {
                if count > 0.0 {
                    batch_mean = Some((sum / count * 10.0).round() / 10.0);
                }
            }
            if decided >= n as u64 {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let share = machine::share(&before, &cpu.sample());
    bar.finish_and_clear();
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), running).await;
    if recorded < n as u64 {
        bail!(
            "the worker recorded {recorded} of {n} votes within {} s",
            settings.timeout_secs
        );
    }
    Ok(WorkerRun {
        throughput: Throughput::new(n, elapsed, progress, share),
        mean_batch_size: batch_mean,
    })
}

pub async fn run(
    settings: &DrainSettings,
    cpu: &CpuWatch,
    quiet: bool,
) -> anyhow::Result<DrainReport> {
    let ui = Ui { quiet };
    if settings.votes == 0 || settings.votes > crate::schedule::MAX_REQUESTS {
        bail!(
            "--votes must be between 1 and {}",
            crate::schedule::MAX_REQUESTS
        );
    }
    if settings.streams == 0
        || settings.streams > 16
        || settings.writers == 0
        || settings.writers > 3
    {
        bail!("--streams must be 1..=16 and --writers 1..=3 (the worker's pool has 3 connections)");
    }
    for &(b, w) in &settings.writer_configs {
        if b == 0 || b > 10_000 || w == 0 || w > 3 {
            bail!("a writer configuration is BATCHxWRITERS with a batch of 1..=10000 and 1..=3 writers");
        }
    }
    let host = emulator_host()?;
    let tenant = TenantId::parse("drain-party")?;
    let election = Uuid::new_v4();

    ui.say("drain: fresh topic, fresh databases (nothing touches the dev stack)");
    let topic = format!("loadtest-drain-{}", Uuid::new_v4().simple());
    let ack_settings = PubSubSettings {
        emulator_host: Some(host),
        project: std::env::var("PUBSUB_PROJECT_ID").unwrap_or_else(|_| "ekklesia-local".into()),
        topic: topic.clone(),
        subscription: format!("{topic}-ackonly"),
    };
    let worker_settings = PubSubSettings {
        subscription: format!("{topic}-worker"),
        ..ack_settings.clone()
    };
    let mut topology = shared::pubsub::Topology::for_settings(&ack_settings);
    // Many delivery attempts: nothing here should ever be dead-lettered.
    topology.max_delivery_attempts = 100;
    topology
        .ensure(&ack_settings)
        .await
        .context("creating the topic and the ack-only subscription")?;
    let db_e2e = ceiling::fresh_database().await?;
    let db_bench = ceiling::fresh_database().await?;

    let outcome = async {
        let votes = ceiling::synthetic_votes(&tenant, election, settings.votes);
        let hashes: Vec<Vec<u8>> = votes.iter().map(|v| v.token_hash.0.to_vec()).collect();
        ceiling::register(&db_e2e, &tenant, election, &hashes).await?;

        let publish = publish_all(&ack_settings, &votes, ui, cpu).await?;
        ui.say(format!(
            "published {} votes in {:.1} s ({:.0}/s)",
            publish.messages, publish.seconds, publish.per_second
        ));
        let (ack, decoded) = ack_only(&ack_settings, settings, ui, cpu).await?;
        ui.say(format!(
            "ack-only consumer ({} streams): {:.0} messages/s",
            settings.streams, ack.per_second
        ));
        // Subscription A is empty now; B gets the same votes.
        topology
            .ensure(&worker_settings)
            .await
            .context("creating the worker's subscription")?;
        let publish_again = publish_all(&worker_settings, &votes, ui, cpu).await?;
        let e2e = worker_end_to_end(&worker_settings, &db_e2e, settings, ui, cpu).await?;
        ui.say(format!(
            "worker end to end ({} streams, batch {}, {} writers): {:.0} ballots/s",
            settings.streams, settings.batch_size, settings.writers, e2e.throughput.per_second
        ));
        let mut checks = Vec::new();
        let stored = ceiling::count(&db_e2e, ceiling::COUNT_BALLOTS, election).await?;
        let used = ceiling::count(
            &db_e2e,
            "SELECT count(*) FROM elections.voting_tokens WHERE election_id = $1 AND used",
            election,
        )
        .await?;
        let receipts = ceiling::count(
            &db_e2e,
            "SELECT count(*) FROM elections.receipts WHERE election_id = $1 AND status = 'recorded'",
            election,
        )
        .await?;
        let n = settings.votes as i64;
        checks.push(Check::new(
            "end to end: every queued vote recorded once",
            stored == n && used == n && receipts == n,
            format!("{n} published; {stored} ballots, {used} tokens used, {receipts} receipts recorded"),
        ));

        let mut batch_writer = Vec::new();
        for &(batch, writers) in &settings.writer_configs {
            ceiling::reset(&db_bench, &tenant, election, &hashes).await?;
            let pool = ceiling::warm_pool(&db_bench, Role::Worker, 3).await?;
            let bar = ui.bar(decoded.len() as u64, format!("batch writer {batch}x{writers}"));
            let before = cpu.sample();
            let (elapsed, progress, recorded) =
                ceiling::worker_batches(&pool, &decoded, batch, writers).await?;
            let share = machine::share(&before, &cpu.sample());
            bar.finish_and_clear();
            pool.close().await;
            let stored = ceiling::count(&db_bench, ceiling::COUNT_BALLOTS, election).await?;
            checks.push(Check::new(
                &format!("batch writer {batch}x{writers}: every vote recorded once"),
                recorded == decoded.len() && stored == n,
                format!("{recorded} recorded outcomes, {stored} ballots of {n}"),
            ));
            let run = WriterRun {
                batch_size: batch,
                writers,
                connections: 3,
                throughput: Throughput::new(decoded.len(), elapsed, progress, share),
            };
            ui.say(format!(
                "worker batch writer alone, batch {batch} x {writers} writers (pool of 3): {:.0} ballots/s",
                run.throughput.per_second
            ));
            batch_writer.push(run);
        }

        let mut ceiling_batched = Vec::new();
        for &(batch, writers) in &settings.writer_configs {
            for method in Batched::ALL {
                ceiling::reset(&db_bench, &tenant, election, &hashes).await?;
                let pool = ceiling::warm_pool(&db_bench, Role::Worker, writers as u32).await?;
                let before = cpu.sample();
                let (elapsed, progress) =
                    ceiling::batched(&pool, method, &tenant, &decoded, batch, writers).await?;
                let share = machine::share(&before, &cpu.sample());
                pool.close().await;
                let stored = ceiling::count(&db_bench, ceiling::COUNT_BALLOTS, election).await?;
                checks.push(Check::new(
                    &format!("raw SQL {} {batch}x{writers}: every row written", method.name()),
                    stored == n,
                    format!("{stored} ballots of {n}"),
                ));
                let run = CeilingRun {
                    method,
                    batch_size: batch,
                    writers,
                    throughput: Throughput::new(decoded.len(), elapsed, progress, share),
                };
                ui.say(format!(
                    "raw SQL, {}, batch {batch} x {writers} connections: {:.0} rows/s",
                    method.name(),
                    run.throughput.per_second
                ));
                ceiling_batched.push(run);
            }
        }

        let single_votes = &decoded[..settings.single_votes.min(decoded.len())];
        let ceiling_single = ceiling::single_ceiling(
            &db_bench,
            &tenant,
            election,
            single_votes,
            &settings.single_connections,
            settings.direct_mode_connections,
            Duration::from_secs(10),
        )
        .await?;
        for r in &ceiling_single.runs {
            ui.say(format!(
                "raw SQL single-vote transactions, {} on {} connection(s): {:.0}/s",
                r.variant.name(),
                r.connections,
                r.per_second
            ));
        }

        let writer_over_ceiling = batch_writer
            .iter()
            .map(|w| {
                let best = ceiling_batched
                    .iter()
                    .filter(|c| c.batch_size == w.batch_size && c.writers == w.writers)
                    .map(|c| c.throughput.per_second)
                    .fold(0.0, f64::max);
                (
                    format!("{}x{}", w.batch_size, w.writers),
                    w.throughput.per_second / best.max(1e-9),
                )
            })
            .collect();
        anyhow::Ok(DrainReport {
            settings: settings.clone(),
            end_to_end_over_ack_only: e2e.throughput.per_second / ack.per_second.max(1e-9),
            publish,
            publish_again,
            ack_only: ack,
            worker_end_to_end: e2e,
            batch_writer,
            ceiling_batched,
            ceiling_single,
            writer_over_ceiling,
            checks,
        })
    }
    .await;

    if !settings.keep {
        let _ = ceiling::drop_database(db_e2e).await;
        let _ = ceiling::drop_database(db_bench).await;
        let _ = delete_pubsub(&ack_settings, &topology, &[&worker_settings]).await;
    }
    outcome
}

/// Removes the run's subscriptions and topics from the emulator (it keeps them in memory).
async fn delete_pubsub(
    ps: &PubSubSettings,
    topology: &shared::pubsub::Topology,
    more: &[&PubSubSettings],
) -> anyhow::Result<()> {
    let subscriptions = shared::pubsub::subscription_admin(ps).await?;
    let topics = shared::pubsub::topic_admin(ps).await?;
    let mut subs = vec![
        ps.subscription_path(),
        format!(
            "projects/{}/subscriptions/{}",
            ps.project, topology.dead_letter_subscription
        ),
    ];
    subs.extend(more.iter().map(|m| m.subscription_path()));
    for sub in subs {
        let _ = subscriptions
            .delete_subscription()
            .set_subscription(sub)
            .send()
            .await;
    }
    for topic in [
        ps.topic_path(),
        format!(
            "projects/{}/topics/{}",
            ps.project, topology.dead_letter_topic
        ),
    ] {
        let _ = topics.delete_topic().set_topic(topic).send().await;
    }
    Ok(())
}
