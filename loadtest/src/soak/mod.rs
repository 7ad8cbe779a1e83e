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
//!
//! The sampler lives in `sampler`, a cycle's run and checks in `cycle`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use uuid::Uuid;

use crate::fire;
use crate::scenario::{self, Check, Common, Mode};
use crate::stats::Latency;
use crate::target::{PrepThroughEvents, Target};

mod cycle;
mod sampler;

use cycle::Soaker;
use sampler::{db_size, Sampler};

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
    let http = fire::voter_client();
    let (pool, db_note) = open_database(database_url).await;
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
    let soaker = Soaker {
        target: &target,
        common,
        settings,
        http: &http,
        offsets: &offsets,
        voters: &voters,
        run_start: start,
        pool: pool.as_ref(),
    };
    let outcome = scenario::restoring_flag(&target, soaker.cycles()).await;
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

/// The services' database (read-only, for its size), and where the size comes from or why
/// there is none.
async fn open_database(database_url: Option<&str>) -> (Option<sqlx::PgPool>, String) {
    match database_url {
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
