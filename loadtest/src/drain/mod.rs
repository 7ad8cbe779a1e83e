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
//!
//! The Pub/Sub side lives in `pubsub`, the in-process worker in `worker`, the batch writer
//! and the raw-SQL ceilings in `bench`.

use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use shared::config::PubSubSettings;
use shared::domain::TenantId;
use shared::vote::VoteMessage;
use uuid::Uuid;

use crate::ceiling::{self, Batched, SingleCeiling};
use crate::machine::{CpuShare, CpuWatch};
use crate::scenario::{Check, Ui};

mod bench;
mod pubsub;
mod worker;

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

impl DrainSettings {
    /// Refuses settings the run cannot honour.
    fn check(&self) -> anyhow::Result<()> {
        if self.votes == 0 || self.votes > crate::schedule::MAX_REQUESTS {
            bail!(
                "--votes must be between 1 and {}",
                crate::schedule::MAX_REQUESTS
            );
        }
        if self.streams == 0 || self.streams > 16 || self.writers == 0 || self.writers > 3 {
            bail!("--streams must be 1..=16 and --writers 1..=3 (the worker's pool has 3 connections)");
        }
        for &(b, w) in &self.writer_configs {
            if b == 0 || b > 10_000 || w == 0 || w > 3 {
                bail!("a writer configuration is BATCHxWRITERS with a batch of 1..=10000 and 1..=3 writers");
            }
        }
        Ok(())
    }
}

pub async fn run(
    settings: &DrainSettings,
    cpu: &CpuWatch,
    quiet: bool,
) -> anyhow::Result<DrainReport> {
    let ui = Ui { quiet };
    settings.check()?;
    let host = pubsub::emulator_host()?;
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

    let phases = Phases {
        settings,
        tenant,
        election,
        ui,
        cpu,
        db_e2e: &db_e2e,
        db_bench: &db_bench,
    };
    let outcome = phases
        .measure(&topology, &ack_settings, &worker_settings)
        .await;

    if !settings.keep {
        let _ = ceiling::drop_database(db_e2e).await;
        let _ = ceiling::drop_database(db_bench).await;
        let _ = pubsub::delete_pubsub(&ack_settings, &topology, &[&worker_settings]).await;
    }
    outcome
}

/// What every phase of a drain run shares: its settings, the election the votes are for, and
/// the two fresh databases (end to end; the batch writer and the ceilings).
struct Phases<'a> {
    settings: &'a DrainSettings,
    tenant: TenantId,
    election: Uuid,
    ui: Ui,
    cpu: &'a CpuWatch,
    db_e2e: &'a testkit::TestDb,
    db_bench: &'a testkit::TestDb,
}

/// Publishing, the ack-only consumer and the worker end to end.
struct EndToEnd {
    publish: Throughput,
    ack_only: Throughput,
    /// The votes as the ack-only consumer decoded them, in arrival order.
    decoded: Vec<VoteMessage>,
    publish_again: Throughput,
    worker: WorkerRun,
    check: Check,
}

impl Phases<'_> {
    async fn measure(
        &self,
        topology: &shared::pubsub::Topology,
        ack_settings: &PubSubSettings,
        worker_settings: &PubSubSettings,
    ) -> anyhow::Result<DrainReport> {
        let votes = ceiling::synthetic_votes(&self.tenant, self.election, self.settings.votes);
        let hashes: Vec<Vec<u8>> = votes.iter().map(|v| v.token_hash.0.to_vec()).collect();
        ceiling::register(self.db_e2e, &self.tenant, self.election, &hashes).await?;
        let e2e = self
            .end_to_end(topology, ack_settings, worker_settings, &votes)
            .await?;
        let mut checks = vec![e2e.check];
        let (batch_writer, writer_checks) = self.batch_writer(&hashes, &e2e.decoded).await?;
        checks.extend(writer_checks);
        let (ceiling_batched, ceiling_checks) = self.ceiling_batched(&hashes, &e2e.decoded).await?;
        checks.extend(ceiling_checks);
        let ceiling_single = self.ceiling_single(&e2e.decoded).await?;
        let writer_over_ceiling = bench::writer_over_ceiling(&batch_writer, &ceiling_batched);
        Ok(DrainReport {
            settings: self.settings.clone(),
            end_to_end_over_ack_only: e2e.worker.throughput.per_second
                / e2e.ack_only.per_second.max(1e-9),
            publish: e2e.publish,
            publish_again: e2e.publish_again,
            ack_only: e2e.ack_only,
            worker_end_to_end: e2e.worker,
            batch_writer,
            ceiling_batched,
            ceiling_single,
            writer_over_ceiling,
            checks,
        })
    }

    async fn end_to_end(
        &self,
        topology: &shared::pubsub::Topology,
        ack_settings: &PubSubSettings,
        worker_settings: &PubSubSettings,
        votes: &[VoteMessage],
    ) -> anyhow::Result<EndToEnd> {
        let (settings, ui, cpu) = (self.settings, self.ui, self.cpu);
        let publish = pubsub::publish_all(ack_settings, votes, ui, cpu).await?;
        ui.say(format!(
            "published {} votes in {:.1} s ({:.0}/s)",
            publish.messages, publish.seconds, publish.per_second
        ));
        let (ack, decoded) = pubsub::ack_only(ack_settings, settings, ui, cpu).await?;
        ui.say(format!(
            "ack-only consumer ({} streams): {:.0} messages/s",
            settings.streams, ack.per_second
        ));
        // Subscription A is empty now; B gets the same votes.
        topology
            .ensure(worker_settings)
            .await
            .context("creating the worker's subscription")?;
        let publish_again = pubsub::publish_all(worker_settings, votes, ui, cpu).await?;
        let e2e =
            worker::worker_end_to_end(worker_settings, self.db_e2e, settings, ui, cpu).await?;
        ui.say(format!(
            "worker end to end ({} streams, batch {}, {} writers): {:.0} ballots/s",
            settings.streams, settings.batch_size, settings.writers, e2e.throughput.per_second
        ));
        Ok(EndToEnd {
            publish,
            ack_only: ack,
            decoded,
            publish_again,
            worker: e2e,
            check: self.recorded_once().await?,
        })
    }

    /// Every queued vote became one ballot, one used token and one recorded receipt.
    async fn recorded_once(&self) -> anyhow::Result<Check> {
        let (db, election) = (self.db_e2e, self.election);
        let stored = ceiling::count(db, ceiling::COUNT_BALLOTS, election).await?;
        let used = ceiling::count(
            db,
            "SELECT count(*) FROM elections.voting_tokens WHERE election_id = $1 AND used",
            election,
        )
        .await?;
        let receipts = ceiling::count(
            db,
            "SELECT count(*) FROM elections.receipts WHERE election_id = $1 AND status = 'recorded'",
            election,
        )
        .await?;
        let n = self.settings.votes as i64;
        Ok(Check::new(
            "end to end: every queued vote recorded once",
            stored == n && used == n && receipts == n,
            format!(
                "{n} published; {stored} ballots, {used} tokens used, {receipts} receipts recorded"
            ),
        ))
    }
}
