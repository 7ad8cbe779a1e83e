//! The database side of a drain run, without Pub/Sub: the worker's batch writer alone and the
//! raw-SQL ceilings, each from a reset database.

use std::time::Duration;

use shared::vote::VoteMessage;
use testkit::Role;

use super::{CeilingRun, Phases, Throughput, WriterRun};
use crate::ceiling::{self, Batched, SingleCeiling};
use crate::machine;
use crate::scenario::Check;

impl Phases<'_> {
    /// The worker's batch writer alone, once per writer configuration.
    pub(super) async fn batch_writer(
        &self,
        hashes: &[Vec<u8>],
        decoded: &[VoteMessage],
    ) -> anyhow::Result<(Vec<WriterRun>, Vec<Check>)> {
        let (mut runs, mut checks) = (Vec::new(), Vec::new());
        for &(batch, writers) in &self.settings.writer_configs {
            let (run, check) = self.writer_run(hashes, decoded, batch, writers).await?;
            checks.push(check);
            self.ui.say(format!(
                "worker batch writer alone, batch {batch} x {writers} writers (pool of 3): {:.0} ballots/s",
                run.throughput.per_second
            ));
            runs.push(run);
        }
        Ok((runs, checks))
    }

    async fn writer_run(
        &self,
        hashes: &[Vec<u8>],
        decoded: &[VoteMessage],
        batch: usize,
        writers: usize,
    ) -> anyhow::Result<(WriterRun, Check)> {
        let (db, cpu, n) = (self.db_bench, self.cpu, self.settings.votes as i64);
        ceiling::reset(db, &self.tenant, self.election, hashes).await?;
        let pool = ceiling::warm_pool(db, Role::Worker, 3).await?;
        let bar = self.ui.bar(
            decoded.len() as u64,
            format!("batch writer {batch}x{writers}"),
        );
        let before = cpu.sample();
        let (elapsed, progress, recorded) =
            ceiling::worker_batches(&pool, decoded, batch, writers).await?;
        let share = machine::share(&before, &cpu.sample());
        bar.finish_and_clear();
        pool.close().await;
        let stored = ceiling::count(db, ceiling::COUNT_BALLOTS, self.election).await?;
        let check = Check::new(
            &format!("batch writer {batch}x{writers}: every vote recorded once"),
            recorded == decoded.len() && stored == n,
            format!("{recorded} recorded outcomes, {stored} ballots of {n}"),
        );
        let run = WriterRun {
            batch_size: batch,
            writers,
            connections: 3,
            throughput: Throughput::new(decoded.len(), elapsed, progress, share),
        };
        Ok((run, check))
    }

    /// The batched raw-SQL ceilings: every method for every writer configuration.
    pub(super) async fn ceiling_batched(
        &self,
        hashes: &[Vec<u8>],
        decoded: &[VoteMessage],
    ) -> anyhow::Result<(Vec<CeilingRun>, Vec<Check>)> {
        let (mut runs, mut checks) = (Vec::new(), Vec::new());
        for &(batch, writers) in &self.settings.writer_configs {
            for method in Batched::ALL {
                let (run, check) = self
                    .ceiling_run(hashes, decoded, method, batch, writers)
                    .await?;
                checks.push(check);
                self.ui.say(format!(
                    "raw SQL, {}, batch {batch} x {writers} connections: {:.0} rows/s",
                    method.name(),
                    run.throughput.per_second
                ));
                runs.push(run);
            }
        }
        Ok((runs, checks))
    }

    async fn ceiling_run(
        &self,
        hashes: &[Vec<u8>],
        decoded: &[VoteMessage],
        method: Batched,
        batch: usize,
        writers: usize,
    ) -> anyhow::Result<(CeilingRun, Check)> {
        let (db, cpu, n) = (self.db_bench, self.cpu, self.settings.votes as i64);
        ceiling::reset(db, &self.tenant, self.election, hashes).await?;
        let pool = ceiling::warm_pool(db, Role::Worker, writers as u32).await?;
        let before = cpu.sample();
        let (elapsed, progress) =
            ceiling::batched(&pool, method, &self.tenant, decoded, batch, writers).await?;
        let share = machine::share(&before, &cpu.sample());
        pool.close().await;
        let stored = ceiling::count(db, ceiling::COUNT_BALLOTS, self.election).await?;
        let check = Check::new(
            &format!(
                "raw SQL {} {batch}x{writers}: every row written",
                method.name()
            ),
            stored == n,
            format!("{stored} ballots of {n}"),
        );
        let run = CeilingRun {
            method,
            batch_size: batch,
            writers,
            throughput: Throughput::new(decoded.len(), elapsed, progress, share),
        };
        Ok((run, check))
    }

    /// The single-vote ceiling on the first `single_votes` of the decoded votes.
    pub(super) async fn ceiling_single(
        &self,
        decoded: &[VoteMessage],
    ) -> anyhow::Result<SingleCeiling> {
        let settings = self.settings;
        let single_votes = &decoded[..settings.single_votes.min(decoded.len())];
        let ceiling_single = ceiling::single_ceiling(
            self.db_bench,
            &self.tenant,
            self.election,
            single_votes,
            &settings.single_connections,
            settings.direct_mode_connections,
            Duration::from_secs(10),
        )
        .await?;
        for r in &ceiling_single.runs {
            self.ui.say(format!(
                "raw SQL single-vote transactions, {} on {} connection(s): {:.0}/s",
                r.variant.name(),
                r.connections,
                r.per_second
            ));
        }
        Ok(ceiling_single)
    }
}

/// Each batch writer configuration's rate over the best raw batched rate at the same batch
/// size and writers.
pub(super) fn writer_over_ceiling(
    batch_writer: &[WriterRun],
    ceiling_batched: &[CeilingRun],
) -> Vec<(String, f64)> {
    batch_writer
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
        .collect()
}
