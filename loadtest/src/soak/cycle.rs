//! One soak cycle: an election of its own, tokens through events-svc (and the bulk path for
//! the rest), the trickle and the burst while the admin reads the results, then the checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use uuid::Uuid;

use super::sampler::{db_size, rss};
use super::{Cycle, SoakSettings};
use crate::fire::{self, Answer, Votes};
use crate::scenario::{Check, Common, Invariants, Mode, Probe, Ui};
use crate::stats::Latency;
use crate::target::{PrepThroughEvents, Target};

/// What every cycle of a soak run shares.
pub(super) struct Soaker<'a> {
    pub target: &'a Arc<Target>,
    pub common: &'a Common,
    pub settings: &'a SoakSettings,
    pub http: &'a reqwest::Client,
    /// When each vote of a cycle is due.
    pub offsets: &'a [Duration],
    /// The members who log in in each cycle.
    pub voters: &'a [u32],
    pub run_start: Instant,
    pub pool: Option<&'a sqlx::PgPool>,
}

/// A cycle's votes and the admin's reads beside them.
struct Fired {
    answers: Vec<Answer>,
    drained_after_ms: Option<f64>,
    reads: Reads,
}

impl Soaker<'_> {
    /// Every cycle, each starting on its own schedule, the modes alternating.
    pub(super) async fn cycles(&self) -> anyhow::Result<Vec<Cycle>> {
        let ui = Ui {
            quiet: self.common.quiet,
        };
        let mut probe = Probe::new(self.target).await?;
        let mut cycles = Vec::new();
        for index in 0..self.settings.cycles() {
            let cycle_start =
                self.run_start + Duration::from_secs_f64(index as f64 * self.settings.cycle_secs);
            tokio::time::sleep_until(cycle_start.into()).await;
            let mode = self.common.modes[index % self.common.modes.len()];
            let cycle = self.cycle(&mut probe, index, mode).await?;
            ui.say(format!(
                "cycle {} ({}): {} sent, {} accepted, burst p99 {:.1} ms, {} logins, {} results reads; checks {}",
                index + 1,
                mode.name(),
                cycle.sent,
                cycle.accepted,
                cycle.burst.p99_ms,
                cycle.tokens_via_events.voters,
                cycle.results_reads,
                if cycle.checks.iter().all(|c| c.ok) { "pass" } else { "FAIL" }
            ));
            cycles.push(cycle);
        }
        Ok(cycles)
    }

    async fn cycle(&self, probe: &mut Probe, index: usize, mode: Mode) -> anyhow::Result<Cycle> {
        let started = Instant::now();
        let election = self
            .target
            .open_election(&format!("Soak cycle {} ({})", index + 1, mode.name()))
            .await?;
        let (tokens, via_events) = self.tokens(election).await?;
        probe.switch(self.target, self.http, mode).await?;
        let fired = self.fire(election, &tokens).await;
        let invariants = Invariants {
            target: self.target,
            common: self.common,
            http: self.http,
            mode,
            election,
        };
        let mut checks = invariants.check(&fired.answers, &tokens).await?;
        let (results_reads, results_read_failures, read_latencies) = fired.reads;
        checks.push(Check::new(
            "no tally visible while the election was open",
            results_read_failures == 0,
            format!(
                "{results_reads} results reads, {results_read_failures} failed or showed a tally"
            ),
        ));
        let answers = &fired.answers;
        let accepted = answers.iter().filter(|a| a.ok()).count();
        Ok(Cycle {
            index: index + 1,
            mode,
            election,
            started_s: started.duration_since(self.run_start).as_secs_f64(),
            seconds: started.elapsed().as_secs_f64(),
            sent: answers.len(),
            accepted,
            failed: answers.len() - accepted,
            statuses: statuses(answers),
            burst: self.latency(answers, true),
            trickle: self.latency(answers, false),
            tokens_via_events: via_events,
            results_reads,
            results_read_failures,
            results_latency: Latency::of_durations(&read_latencies),
            drained_after_ms: fired.drained_after_ms.map(|ms| (ms * 10.0).round() / 10.0),
            db_bytes_after: db_size(self.pool).await,
            rss_mib_after: rss(&self.common.cpu),
            checks,
        })
    }

    /// Members log in and fetch their tokens as they would at the meeting; the rest of the
    /// cycle's tokens come through the bulk path (the registry is not that large).
    async fn tokens(&self, election: Uuid) -> anyhow::Result<(Vec<String>, PrepThroughEvents)> {
        let (mut tokens, via_events) = self
            .target
            .tokens_via_events(election, self.voters, self.common.events_concurrency)
            .await?;
        let bulk = self.offsets.len().saturating_sub(tokens.len());
        if bulk > 0 {
            tokens.extend(self.target.bulk_tokens(election, bulk).await?);
        }
        tokens.truncate(self.offsets.len());
        Ok((tokens, via_events))
    }

    /// Fires the cycle's votes on schedule while the admin reads the results, and waits until
    /// the tally holds every accepted vote.
    async fn fire(&self, election: Uuid, tokens: &[String]) -> Fired {
        let (target, common) = (self.target, self.common);
        let stop_reads = Arc::new(tokio::sync::Notify::new());
        let reads = read_results(
            target.clone(),
            election,
            Duration::from_secs_f64(self.settings.results_every_secs),
            stop_reads.clone(),
        );
        let shot = Arc::new(Votes::new(&target.ingest_url, election, tokens.to_vec()));
        let fired_at = tokio::time::Instant::now() + Duration::from_millis(50);
        let answers = fire::fire(
            self.http,
            shot,
            &self.offsets[..tokens.len()],
            &common.policy,
            common.max_in_flight,
            fired_at,
            &ProgressBar::hidden(),
        )
        .await;
        let accepted = answers.iter().filter(|a| a.ok()).count() as i64;
        let last_answer = fired_at.into_std()
            + answers
                .iter()
                .map(|a| a.done)
                .max()
                .unwrap_or(Duration::ZERO);
        let drained_after_ms = wait_recorded(target, election, accepted, common.drain_timeout)
            .await
            .map(|at| at.saturating_duration_since(last_answer).as_secs_f64() * 1000.0);
        stop_reads.notify_one();
        Fired {
            answers,
            drained_after_ms,
            reads: reads.await.unwrap_or_default(),
        }
    }

    /// The latency of the burst's votes (`burst`) or of the trickle's.
    fn latency(&self, answers: &[Answer], burst: bool) -> Latency {
        Latency::of_durations(
            answers
                .iter()
                .filter(|a| self.settings.in_burst(a.scheduled) == burst)
                .map(|a: &Answer| &a.latency),
        )
    }
}

fn statuses(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        *m.entry(a.status.to_string()).or_default() += 1;
    }
    m
}

/// The admin's results reads while a cycle runs: (reads, failures, latencies).
type Reads = (usize, usize, Vec<Duration>);

fn read_results(
    target: Arc<Target>,
    election: Uuid,
    every: Duration,
    stop: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<Reads> {
    tokio::spawn(async move {
        let (mut reads, mut failures, mut latencies) = (0, 0, Vec::new());
        loop {
            let started = Instant::now();
            match target.results_via_events(election).await {
                Ok(r) if r.tally.is_empty() => latencies.push(started.elapsed()),
                // A tally while the election is open is a secrecy failure, counted as one.
                _ => failures += 1,
            }
            reads += 1;
            tokio::select! {
                _ = stop.notified() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        (reads, failures, latencies)
    })
}

/// Polls the tally until it holds `accepted` ballots; `None` if it did not within `timeout`.
async fn wait_recorded(
    target: &Target,
    election: Uuid,
    accepted: i64,
    timeout: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if matches!(target.results(election).await, Ok(r) if r.total >= accepted) {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
