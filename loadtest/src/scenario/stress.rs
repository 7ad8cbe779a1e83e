//! `stress`: step the rate up until p99 exceeds the limit or a request fails, in each mode.
//! A rate that misses is tried again (up to `tries_per_step` times) before the stepping stops,
//! so one pause of a shared machine does not end a mode. The queue is drained between steps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use super::firing::{fire_votes, summarise, Fired, Firing, ModeRun, Prep};
use super::{restoring_flag, Check, Common, Invariants, Mode, Probe, Ui};
use crate::fire::{self, Answer};
use crate::machine::CpuShare;
use crate::schedule::Schedule;
use crate::stats::Latency;
use crate::target::{ServerSide, Target};

#[derive(Debug, Clone, Serialize)]
pub struct StressSettings {
    pub start_rate: f64,
    pub factor: f64,
    pub step_seconds: f64,
    pub max_steps: usize,
    pub p99_limit_ms: f64,
    /// A rate counts as held if one of this many tries at it held; the stepping stops at the
    /// first rate where every try missed.
    pub tries_per_step: u32,
    /// Bound on one mode's steps (preparation and drains included).
    pub budget_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StressStep {
    pub rate: f64,
    pub sent: usize,
    pub accepted: usize,
    pub failed: usize,
    pub statuses: BTreeMap<String, usize>,
    pub latency: Latency,
    pub accepted_per_second: f64,
    pub drained_after_spike_ms: Option<f64>,
    pub cpu: CpuShare,
    pub server: ServerSide,
    /// p99 within the limit and no failed request.
    pub held: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StressMode {
    pub mode: Mode,
    pub election: Uuid,
    pub steps: Vec<StressStep>,
    /// The highest offered rate at which a try held (p99 within the limit, no errors); every
    /// lower rate held too.
    pub max_rate_held: Option<f64>,
    /// Why the stepping stopped.
    pub stopped: String,
    /// The highest accepted rate seen at any step.
    pub peak_accepted_per_second: f64,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StressReport {
    pub settings: StressSettings,
    pub modes: Vec<StressMode>,
    /// The raw single-vote transaction rate of this machine's PostgreSQL, measured in the same
    /// run (direct mode does one such transaction per vote).
    pub single_vote_ceiling: Option<crate::ceiling::SingleCeiling>,
    pub ceiling_note: Option<String>,
}

impl StressStep {
    fn new(rate: f64, run: ModeRun, held: bool) -> Self {
        Self {
            rate,
            sent: run.sent,
            accepted: run.accepted,
            failed: run.failed,
            statuses: run.statuses,
            latency: run.latency,
            accepted_per_second: run.accepted_per_second,
            drained_after_spike_ms: run.drained_after_spike_ms,
            cpu: run.cpu,
            server: run.server,
            held,
        }
    }
}

impl StressMode {
    fn new(
        mode: Mode,
        election: Uuid,
        steps: Vec<StressStep>,
        stopped: String,
        checks: Vec<Check>,
    ) -> Self {
        Self {
            mode,
            election,
            max_rate_held: steps
                .iter()
                .filter(|s| s.held)
                .map(|s| s.rate)
                .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r)))),
            peak_accepted_per_second: steps
                .iter()
                .map(|s| s.accepted_per_second)
                .fold(0.0, f64::max),
            steps,
            stopped,
            checks,
        }
    }
}

/// The stepping of one mode: the rate offered next and what the last try at it said.
#[derive(Debug)]
struct Ramp {
    rate: f64,
    tries_at_rate: u32,
    held: usize,
    factor: f64,
    tries_per_step: u32,
    max_steps: usize,
}

/// What comes after a try.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// It missed, and the rate has tries left: the same rate again.
    Again,
    /// It held: the next rate up.
    Up,
    /// Every try at this rate missed: the stepping stops.
    Missed,
    /// It held, and it was the last step.
    Last,
}

impl Ramp {
    fn new(settings: &StressSettings) -> Self {
        Self {
            rate: settings.start_rate,
            tries_at_rate: 0,
            held: 0,
            factor: settings.factor,
            tries_per_step: settings.tries_per_step,
            max_steps: settings.max_steps,
        }
    }

    /// The rate of the next try, in whole votes per second.
    fn offered(&self) -> f64 {
        self.rate.round()
    }

    fn next(&mut self, held: bool) -> Next {
        self.tries_at_rate += 1;
        if !held {
            return if self.tries_at_rate < self.tries_per_step {
                Next::Again
            } else {
                Next::Missed
            };
        }
        self.held += 1;
        if self.held >= self.max_steps {
            return Next::Last;
        }
        self.rate *= self.factor;
        self.tries_at_rate = 0;
        Next::Up
    }
}

/// Why the stepping stopped at `rate` after every try there missed.
fn missed(failed: usize, p99: f64, limit_ms: f64, rate: f64) -> String {
    if failed > 0 {
        format!("{failed} failed requests at {rate:.0}/s")
    } else {
        format!("p99 {p99:.1} ms > {limit_ms} ms at {rate:.0}/s")
    }
}

pub async fn stress(
    target: Arc<Target>,
    common: &Common,
    settings: &StressSettings,
) -> anyhow::Result<StressReport> {
    if common.via_events {
        bail!("stress prepares thousands of tokens per step: use the bulk path (no --via-events)");
    }
    let http = fire::voter_client();
    let modes = restoring_flag(&target, async {
        let mut probe = Probe::new(&target).await?;
        let stepper = Stepper {
            target: &target,
            common,
            http: &http,
            settings,
            ui: Ui {
                quiet: common.quiet,
            },
        };
        let mut runs = Vec::new();
        for &mode in &common.modes {
            runs.push(stepper.mode(&mut probe, mode).await?);
        }
        Ok(runs)
    })
    .await?;
    Ok(StressReport {
        settings: settings.clone(),
        modes,
        single_vote_ceiling: None,
        ceiling_note: None,
    })
}

/// What a mode's steps sent so far, for the checks at the end: every step's answers
/// (re-indexed after the earlier steps' tokens), the tokens and the ballots recorded.
#[derive(Default)]
struct Sent {
    answers: Vec<Answer>,
    tokens: Vec<String>,
    recorded: u64,
}

impl Sent {
    fn add(&mut self, answers: Vec<Answer>, tokens: Vec<String>, accepted: usize) {
        self.recorded += accepted as u64;
        let base = self.tokens.len();
        self.answers.extend(answers.into_iter().map(|mut a| {
            a.index += base;
            a
        }));
        self.tokens.extend(tokens);
    }
}

/// What every step of a stress run shares.
struct Stepper<'a> {
    target: &'a Arc<Target>,
    common: &'a Common,
    http: &'a reqwest::Client,
    settings: &'a StressSettings,
    ui: Ui,
}

impl Stepper<'_> {
    /// One mode's stepping on an election of its own, then the checks over every step's votes.
    async fn mode(&self, probe: &mut Probe, mode: Mode) -> anyhow::Result<StressMode> {
        let settings = self.settings;
        let began = Instant::now();
        let election = self
            .target
            .open_election(&format!("Load test: stress ({})", mode.name()))
            .await?;
        probe.switch(self.target, self.http, mode).await?;
        let mut steps = Vec::new();
        let mut sent = Sent::default();
        let mut ramp = Ramp::new(settings);
        let mut stopped = format!("reached the last step ({})", settings.max_steps);
        for _ in 0..settings.max_steps * settings.tries_per_step as usize {
            if began.elapsed().as_secs_f64() > settings.budget_seconds {
                stopped = format!("time budget of {} s spent", settings.budget_seconds);
                break;
            }
            let rate = ramp.offered();
            let step = self.step(mode, election, rate, &mut sent).await?;
            let (held, failed, p99) = (step.held, step.failed, step.latency.p99_ms);
            steps.push(step);
            match ramp.next(held) {
                Next::Again => {
                    self.ui.say(format!(
                        "{} at {rate:>5.0}/s missed; trying the same rate again",
                        mode.name()
                    ));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Next::Up => tokio::time::sleep(Duration::from_millis(500)).await,
                Next::Missed => {
                    stopped = missed(failed, p99, settings.p99_limit_ms, rate);
                    break;
                }
                Next::Last => break,
            }
        }
        let invariants = Invariants {
            target: self.target,
            common: self.common,
            http: self.http,
            mode,
            election,
        };
        let checks = invariants.check(&sent.answers, &sent.tokens).await?;
        Ok(StressMode::new(mode, election, steps, stopped, checks))
    }

    /// One try at `rate`: fresh tokens, fired while the tally is polled, summarised.
    async fn step(
        &self,
        mode: Mode,
        election: Uuid,
        rate: f64,
        sent: &mut Sent,
    ) -> anyhow::Result<StressStep> {
        let schedule = Schedule::constant(rate, self.settings.step_seconds)?;
        let tokens = self
            .target
            .bulk_tokens(election, schedule.requests())
            .await?;
        let firing = Firing {
            target: self.target,
            common: self.common,
            http: self.http,
            election,
            already_recorded: sent.recorded,
            first_index: sent.tokens.len(),
        };
        let label = format!("{} at {rate:.0}/s", mode.name());
        let fired = fire_votes(&firing, tokens.clone(), &schedule, &label).await;
        let prep = Prep {
            path: "bulk".into(),
            tokens: tokens.len(),
            seconds: 0.0,
            events: None,
        };
        let run = summarise(
            mode,
            election,
            prep,
            &schedule,
            &this_step(&fired, sent.recorded),
        );
        let held = run.failed == 0 && run.latency.p99_ms <= self.settings.p99_limit_ms;
        self.ui.say(format!(
            "{} at {rate:>5.0}/s: {} sent, {} failed, p99 {:.1} ms, {:.0} accepted/s, {}",
            mode.name(),
            run.sent,
            run.failed,
            run.latency.p99_ms,
            run.accepted_per_second,
            run.cpu.describe()
        ));
        sent.add(fired.answers, tokens, run.accepted);
        Ok(StressStep::new(rate, run, held))
    }
}

/// A step's firing with the tally counted from the ballots the earlier steps left.
fn this_step(fired: &Fired, recorded: u64) -> Fired {
    Fired {
        answers: fired.answers.clone(),
        samples: fired
            .samples
            .iter()
            .map(|(t, n)| (*t, n.saturating_sub(recorded)))
            .collect(),
        cpu: fired.cpu.clone(),
        spike_end: fired.spike_end,
        server: fired.server.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(tries_per_step: u32, max_steps: usize) -> Ramp {
        Ramp::new(&StressSettings {
            start_rate: 100.0,
            factor: 1.5,
            step_seconds: 3.0,
            max_steps,
            p99_limit_ms: 100.0,
            tries_per_step,
            budget_seconds: 240.0,
        })
    }

    #[test]
    fn a_held_rate_steps_up_and_a_miss_is_tried_again_before_the_stepping_stops() {
        let mut r = ramp(2, 12);
        assert_eq!(r.offered(), 100.0);
        assert_eq!(r.next(true), Next::Up);
        assert_eq!(r.offered(), 150.0);
        assert_eq!(r.next(false), Next::Again);
        assert_eq!(r.offered(), 150.0, "the same rate again");
        assert_eq!(r.next(true), Next::Up);
        assert_eq!(r.offered(), 225.0);
        assert_eq!(r.next(false), Next::Again);
        assert_eq!(r.next(false), Next::Missed);
        assert_eq!(r.offered(), 225.0, "stopped at the rate that missed");
    }

    #[test]
    fn the_stepping_ends_after_max_steps_held_and_one_try_means_no_retry() {
        let mut r = ramp(1, 2);
        assert_eq!(r.next(true), Next::Up);
        assert_eq!(r.next(true), Next::Last);
        let mut r = ramp(1, 12);
        assert_eq!(r.next(false), Next::Missed);
    }
}
