//! `soak`: a meeting-like pattern for a long time (30 minutes before a large meeting), to find
//! what only time shows: memory that keeps growing, latency that drifts, a database that grows
//! faster than the votes it holds.
//!
//! The run is a series of cycles, one election each, alternating the modes. In a cycle members
//! log in and fetch their voting tokens through members-fn and events-svc, votes trickle in at
//! a steady rate with one burst in the middle, an admin reads the results every few seconds,
//! and at the end every invariant is checked (the same checks as `meeting`: accepted =
//! recorded, one distinct receipt per vote, receipts say recorded, replays refused, the final
//! tally after the close equals what was sent). Beside it a sampler records each service's
//! resident memory and CPU and the database's size.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::ProgressBar;
use serde::Serialize;
use uuid::Uuid;

use crate::fire::{self, Answer, Votes};
use crate::machine::{self, CpuWatch};
use crate::scenario::{self, Check, Common, Invariants, Mode, Probe, Ui};
use crate::stats::Latency;
use crate::target::{PrepThroughEvents, Target};

#[derive(Debug, Clone, Serialize)]
pub struct SoakSettings {
    pub minutes: f64,
    /// One cycle (one election, one burst) every this many seconds.
    pub cycle_secs: f64,
    /// Votes per second between the bursts.
    pub trickle_rate: f64,
    pub burst_rate: f64,
    pub burst_secs: f64,
    /// Members who log in and fetch their token through events-svc in each cycle.
    pub logins_per_cycle: u32,
    /// How often the admin reads the results while a cycle runs.
    pub results_every_secs: f64,
    /// How often memory, CPU and the database size are sampled.
    pub sample_every_secs: f64,
}

impl SoakSettings {
    pub fn check(&self) -> anyhow::Result<()> {
        let ok = self.minutes > 0.0
            && self.minutes <= 24.0 * 60.0
            && self.cycle_secs >= 10.0
            && self.trickle_rate >= 0.0
            && self.burst_rate >= 0.0
            && self.burst_secs >= 0.0
            && self.burst_secs <= self.firing_secs()
            && self.results_every_secs >= 0.5
            && self.sample_every_secs >= 1.0;
        if !ok {
            bail!("soak needs 0 < --minutes ≤ 1440, --cycle-secs ≥ 10, rates ≥ 0, a burst that fits in the cycle's firing window, --results-every-secs ≥ 0.5 and --sample-every-secs ≥ 1");
        }
        if self.votes_per_cycle() > crate::schedule::MAX_REQUESTS {
            bail!(
                "one soak cycle may send at most {} votes",
                crate::schedule::MAX_REQUESTS
            );
        }
        Ok(())
    }

    /// The cycles the run holds (at least one).
    pub fn cycles(&self) -> usize {
        ((self.minutes * 60.0 / self.cycle_secs).floor() as usize).max(1)
    }

    /// The part of a cycle votes are sent in; the rest is for preparing the next election and
    /// the checks (token registration, the close, the seal).
    pub fn firing_secs(&self) -> f64 {
        (self.cycle_secs * 0.75).max(5.0)
    }

    fn votes_per_cycle(&self) -> usize {
        self.offsets().len()
    }

    /// When each vote of a cycle is due: the trickle over the firing window and the burst in
    /// its middle, in order.
    pub fn offsets(&self) -> Vec<Duration> {
        let window = self.firing_secs();
        let mut due: Vec<f64> = Vec::new();
        if self.trickle_rate > 0.0 {
            let n = (self.trickle_rate * window).floor() as usize;
            due.extend((0..n).map(|i| i as f64 / self.trickle_rate));
        }
        let burst_start = (window - self.burst_secs) / 2.0;
        if self.burst_rate > 0.0 {
            let n = (self.burst_rate * self.burst_secs).round() as usize;
            due.extend((0..n).map(|i| burst_start + i as f64 / self.burst_rate));
        }
        due.sort_by(f64::total_cmp);
        due.into_iter().map(Duration::from_secs_f64).collect()
    }

    fn in_burst(&self, offset: Duration) -> bool {
        let start = (self.firing_secs() - self.burst_secs) / 2.0;
        let t = offset.as_secs_f64();
        self.burst_rate > 0.0 && t >= start && t < start + self.burst_secs
    }
}

/// One sample of the machine: resident memory and CPU (since the previous sample) per
/// process, and the database's size.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub rss_mib: BTreeMap<String, f64>,
    /// % of one core since the previous sample.
    pub cpu_pct_of_core: BTreeMap<String, f64>,
    pub db_bytes: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cycle {
    pub index: usize,
    pub mode: Mode,
    pub election: Uuid,
    pub started_s: f64,
    pub seconds: f64,
    pub sent: usize,
    pub accepted: usize,
    pub failed: usize,
    pub statuses: BTreeMap<String, usize>,
    /// Latency of the burst's votes and of the trickle's.
    pub burst: Latency,
    pub trickle: Latency,
    /// Logins and token requests through members-fn and events-svc.
    pub tokens_via_events: PrepThroughEvents,
    pub results_reads: usize,
    pub results_read_failures: usize,
    pub results_latency: Latency,
    /// From the last vote's answer until the tally held every accepted vote.
    pub drained_after_ms: Option<f64>,
    /// Database size after the cycle's checks.
    pub db_bytes_after: Option<i64>,
    /// Resident memory per process after the cycle's checks (a steady point: no load).
    pub rss_mib_after: BTreeMap<String, f64>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub settings: SoakSettings,
    pub cycles: Vec<Cycle>,
    pub samples: Vec<Sample>,
    pub db_bytes_before: Option<i64>,
    pub db_bytes_after: Option<i64>,
    /// Where the database size came from, or why there is none.
    pub db_note: String,
    /// Whole-run checks (memory settles).
    pub checks: Vec<Check>,
}

impl SoakReport {
    /// The burst p99 of the first and the last cycle of `mode`.
    pub fn drift(&self, mode: Mode) -> Option<(f64, f64)> {
        let of_mode: Vec<&Cycle> = self.cycles.iter().filter(|c| c.mode == mode).collect();
        let (first, last) = (of_mode.first()?, of_mode.last()?);
        Some((first.burst.p99_ms, last.burst.p99_ms))
    }

    pub fn votes_recorded(&self) -> usize {
        self.cycles.iter().map(|c| c.accepted).sum()
    }
}

/// Resident memory (MiB) of the named processes, this process (`loadtest`) and the Pub/Sub
/// emulator's JVM.
fn rss(watch: &CpuWatch) -> BTreeMap<String, f64> {
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

async fn db_size(pool: Option<&sqlx::PgPool>) -> Option<i64> {
    sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(pool?)
        .await
        .ok()
}

/// Samples memory, CPU and the database size every `every` until dropped.
struct Sampler {
    samples: Arc<std::sync::Mutex<Vec<Sample>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(watch: CpuWatch, pool: Option<sqlx::PgPool>, start: Instant, every: Duration) -> Self {
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

    fn stop(self) -> Vec<Sample> {
        self.handle.abort();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
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

/// Memory settles: after the first half of the cycles, no process's resident memory at a
/// cycle's end exceeds its first-half peak by more than 25 % + 32 MiB. A leak that grows with
/// the votes handled breaks that over a long run; warm-up (pools, caches, allocator arenas) and
/// noise do not.
pub fn memory_settles(cycles: &[Cycle]) -> Check {
    if cycles.len() < 4 {
        return Check::new(
            "memory settles",
            true,
            format!(
                "{} cycles: too short to tell (4 or more needed)",
                cycles.len()
            ),
        );
    }
    let half = cycles.len() / 2;
    let mut grew = Vec::new();
    let mut seen = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        cycles.iter().flat_map(|c| c.rss_mib_after.keys()).collect();
    for name in names {
        let peak = |part: &[Cycle]| {
            part.iter()
                .filter_map(|c| c.rss_mib_after.get(name).copied())
                .fold(f64::NAN, f64::max)
        };
        let (first, second) = (peak(&cycles[..half]), peak(&cycles[half..]));
        if first.is_nan() || second.is_nan() {
            continue;
        }
        seen.push(format!("{name} {first:.0} → {second:.0} MiB"));
        if second > first * 1.25 + 32.0 {
            grew.push(name.clone());
        }
    }
    Check::new(
        "memory settles",
        grew.is_empty(),
        format!(
            "peak resident memory, first half → second half of the cycles: {}{}",
            seen.join(", "),
            if grew.is_empty() {
                String::new()
            } else {
                format!("; still growing: {}", grew.join(", "))
            }
        ),
    )
}

pub async fn run(
    target: Arc<Target>,
    common: &Common,
    settings: &SoakSettings,
    database_url: Option<&str>,
) -> anyhow::Result<SoakReport> {
    settings.check()?;
    if common.modes.is_empty() {
        bail!("soak needs at least one mode");
    }
    let ui = Ui {
        quiet: common.quiet,
    };
    let http = fire::voter_client();
    let (pool, db_note) = match database_url {
        Some(url) => match sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
        {
            Ok(pool) => (
                Some(pool),
                "pg_database_size of the services' database".to_owned(),
            ),
            Err(e) => (
                None,
                format!(
                    "not measured: cannot reach the database ({})",
                    shared::db::redact(&e)
                ),
            ),
        },
        None => (
            None,
            "not measured: no database URL (EKKLESIA_ADMIN_DATABASE_URL)".to_owned(),
        ),
    };
    let start = Instant::now();
    let db_bytes_before = db_size(pool.as_ref()).await;
    let sampler = Sampler::start(
        common.cpu.clone(),
        pool.clone(),
        start,
        Duration::from_secs_f64(settings.sample_every_secs),
    );
    let offsets = settings.offsets();
    let voters: Vec<u32> = (1..=settings.logins_per_cycle).collect();
    let outcome = scenario::restoring_flag(&target, async {
        let mut probe = Probe::new(&target).await?;
        let mut cycles = Vec::new();
        for index in 0..settings.cycles() {
            let cycle_start = start + Duration::from_secs_f64(index as f64 * settings.cycle_secs);
            tokio::time::sleep_until(cycle_start.into()).await;
            let mode = common.modes[index % common.modes.len()];
            let cycle = one_cycle(
                &target, common, settings, &http, &mut probe, index, mode, &offsets, &voters,
                start, pool.as_ref(),
            )
            .await?;
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
    })
    .await;
    let samples = sampler.stop();
    let cycles = outcome?;
    let checks = vec![memory_settles(&cycles)];
    Ok(SoakReport {
        settings: settings.clone(),
        db_bytes_after: db_size(pool.as_ref()).await,
        db_bytes_before,
        db_note,
        cycles,
        samples,
        checks,
    })
}

#[allow(clippy::too_many_arguments)]
async fn one_cycle(
    target: &Arc<Target>,
    common: &Common,
    settings: &SoakSettings,
    http: &reqwest::Client,
    probe: &mut Probe,
    index: usize,
    mode: Mode,
    offsets: &[Duration],
    voters: &[u32],
    run_start: Instant,
    pool: Option<&sqlx::PgPool>,
) -> anyhow::Result<Cycle> {
    let started = Instant::now();
    let election = target
        .open_election(&format!("Soak cycle {} ({})", index + 1, mode.name()))
        .await?;
    // Members log in and fetch their tokens as they would at the meeting; the rest of the
    // cycle's tokens come through the bulk path (the registry is not that large).
    let (mut tokens, via_events) = target
        .tokens_via_events(election, voters, common.events_concurrency)
        .await?;
    let bulk = offsets.len().saturating_sub(tokens.len());
    if bulk > 0 {
        tokens.extend(target.bulk_tokens(election, bulk).await?);
    }
    tokens.truncate(offsets.len());
    probe.switch(target, http, mode).await?;

    let stop_reads = Arc::new(tokio::sync::Notify::new());
    let reads = read_results(
        target.clone(),
        election,
        Duration::from_secs_f64(settings.results_every_secs),
        stop_reads.clone(),
    );
    let shot = Arc::new(Votes::new(&target.ingest_url, election, tokens.clone()));
    let fired_at = tokio::time::Instant::now() + Duration::from_millis(50);
    let answers = fire::fire(
        http,
        shot,
        &offsets[..tokens.len()],
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
    let (results_reads, results_read_failures, read_latencies) = reads.await.unwrap_or_default();

    let invariants = Invariants {
        target,
        common,
        http,
        mode,
        election,
    };
    let mut checks = invariants.check(&answers, &tokens).await?;
    checks.push(Check::new(
        "no tally visible while the election was open",
        results_read_failures == 0,
        format!("{results_reads} results reads, {results_read_failures} failed or showed a tally"),
    ));

    let latency = |burst: bool| {
        Latency::of_durations(
            answers
                .iter()
                .filter(|a| settings.in_burst(a.scheduled) == burst)
                .map(|a: &Answer| &a.latency),
        )
    };
    Ok(Cycle {
        index: index + 1,
        mode,
        election,
        started_s: started.duration_since(run_start).as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
        sent: answers.len(),
        accepted: accepted as usize,
        failed: answers.len() - accepted as usize,
        statuses: {
            let mut m = BTreeMap::new();
            for a in &answers {
                *m.entry(a.status.to_string()).or_default() += 1;
            }
            m
        },
        burst: latency(true),
        trickle: latency(false),
        tokens_via_events: via_events,
        results_reads,
        results_read_failures,
        results_latency: Latency::of_durations(&read_latencies),
        drained_after_ms: drained_after_ms.map(|ms| (ms * 10.0).round() / 10.0),
        db_bytes_after: db_size(pool).await,
        rss_mib_after: rss(&common.cpu),
        checks,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SoakSettings {
        SoakSettings {
            minutes: 30.0,
            cycle_secs: 180.0,
            trickle_rate: 3.0,
            burst_rate: 300.0,
            burst_secs: 5.0,
            logins_per_cycle: 100,
            results_every_secs: 2.0,
            sample_every_secs: 10.0,
        }
    }

    #[test]
    fn a_cycle_is_a_trickle_with_one_burst_in_the_middle() {
        let s = settings();
        s.check().expect("valid");
        assert_eq!(s.cycles(), 10);
        let offsets = s.offsets();
        // 135 s of trickle at 3/s and 5 s at 300/s.
        assert_eq!(offsets.len(), 405 + 1500);
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "in order");
        let in_burst = offsets.iter().filter(|o| s.in_burst(**o)).count();
        // The burst's own 1,500 and the trickle's 15 that fall inside it.
        assert_eq!(in_burst, 1515);
        assert!(s.in_burst(Duration::from_secs_f64(65.0)));
        assert!(!s.in_burst(Duration::from_secs_f64(60.0)));
    }

    #[test]
    fn settings_that_cannot_run_are_refused() {
        let mut s = settings();
        s.burst_secs = 200.0;
        assert!(s.check().is_err());
        let mut s = settings();
        s.cycle_secs = 5.0;
        assert!(s.check().is_err());
        let mut s = settings();
        s.minutes = 0.0;
        assert!(s.check().is_err());
    }

    fn cycle(rss: f64) -> Cycle {
        Cycle {
            index: 1,
            mode: Mode::Queue,
            election: Uuid::nil(),
            started_s: 0.0,
            seconds: 0.0,
            sent: 0,
            accepted: 0,
            failed: 0,
            statuses: BTreeMap::new(),
            burst: Latency::default(),
            trickle: Latency::default(),
            tokens_via_events: PrepThroughEvents::default(),
            results_reads: 0,
            results_read_failures: 0,
            results_latency: Latency::default(),
            drained_after_ms: None,
            db_bytes_after: None,
            rss_mib_after: BTreeMap::from([("ingest".to_owned(), rss)]),
            checks: Vec::new(),
        }
    }

    #[test]
    fn memory_that_keeps_growing_fails_the_check_and_warm_up_does_not() {
        let leak: Vec<Cycle> = (0..10).map(|i| cycle(40.0 + 20.0 * i as f64)).collect();
        let check = memory_settles(&leak);
        assert!(!check.ok, "{}", check.detail);
        assert!(check.detail.contains("still growing: ingest"));
        let warm: Vec<Cycle> = [20.0, 45.0, 50.0, 52.0, 51.0, 53.0, 52.0, 54.0]
            .into_iter()
            .map(cycle)
            .collect();
        assert!(memory_settles(&warm).ok);
        assert!(memory_settles(&leak[..3]).ok, "too short to judge");
    }
}
