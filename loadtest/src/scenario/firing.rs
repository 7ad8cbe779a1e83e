//! One mode's firing of a schedule: the tokens prepared for it, the votes sent open-loop while
//! the tally is polled, and the summary of what happened (everything but the checks).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use super::poller::{count_by, cumulative, thin, Poller, DRAIN_POLL};
use super::{Check, Common, Mode, Ui};
use crate::fire::{self, Answer, Votes};
use crate::machine::{self, CpuShare};
use crate::schedule::Schedule;
use crate::stats::{self, Latency, Window};
use crate::target::{PrepThroughEvents, ServerSide, Target};

/// How the tokens of a run were prepared.
#[derive(Debug, Clone, Serialize)]
pub struct Prep {
    /// `bulk` (signed with the tenant's key, hashes registered over S2S) or `events`
    /// (members-fn dev login + events-svc token issuance).
    pub path: String,
    pub tokens: usize,
    pub seconds: f64,
    pub events: Option<PrepThroughEvents>,
}

/// Cumulative counts over time, for the charts (seconds from the start of the run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub sent: Vec<(f64, u64)>,
    pub accepted: Vec<(f64, u64)>,
    pub recorded: Vec<(f64, u64)>,
}

/// One mode's run of a schedule.
#[derive(Debug, Clone, Serialize)]
pub struct ModeRun {
    pub mode: Mode,
    pub election: Uuid,
    pub prep: Prep,
    pub schedule: Schedule,
    pub sent: usize,
    pub accepted: usize,
    /// Requests that did not end accepted (after client retries).
    pub failed: usize,
    /// Final statuses ("0" = no answer).
    pub statuses: BTreeMap<String, usize>,
    /// Problem types (or transport error kinds) of the failed requests.
    pub problems: BTreeMap<String, usize>,
    /// Client retries, by the status that was retried ("0" = transport error).
    pub retries: BTreeMap<String, usize>,
    pub votes_retried: usize,
    /// Every request, from its scheduled time to its final answer.
    pub latency: Latency,
    /// Accepted requests only.
    pub latency_accepted: Latency,
    /// From the first scheduled send to the last answer.
    pub spike_seconds: f64,
    pub accepted_per_second: f64,
    /// From the last answer until the tally held every accepted vote (`None`: not within
    /// the drain timeout).
    pub drained_after_spike_ms: Option<f64>,
    /// Poll interval after the spike: the resolution of `drained_after_spike_ms`.
    pub drain_poll_ms: u64,
    pub recorded: u64,
    pub spectrum: Vec<(f64, f64)>,
    /// Latency per window of time: by scheduled send time, or for a burst (everything due
    /// at once) by answer time.
    pub windows: Vec<Window>,
    pub windows_by: WindowsBy,
    pub timeline: Timeline,
    pub cpu: CpuShare,
    /// The services' own histograms over the run.
    pub server: ServerSide,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowsBy {
    Scheduled,
    Answer,
}

/// Prepares `n` tokens for `election` by the configured path.
pub async fn prepare(
    target: &Target,
    common: &Common,
    election: Uuid,
    n: usize,
) -> anyhow::Result<(Vec<String>, Prep)> {
    let started = std::time::Instant::now();
    if common.via_events {
        let voters: Vec<u32> = (1..=n as u32).collect();
        let (tokens, events) = target
            .tokens_via_events(election, &voters, common.events_concurrency)
            .await?;
        Ok((
            tokens,
            Prep {
                path: "events".into(),
                tokens: n,
                seconds: started.elapsed().as_secs_f64(),
                events: Some(events),
            },
        ))
    } else {
        let tokens = target.bulk_tokens(election, n).await?;
        Ok((
            tokens,
            Prep {
                path: "bulk".into(),
                tokens: n,
                seconds: started.elapsed().as_secs_f64(),
                events: None,
            },
        ))
    }
}

/// What one firing of a schedule produced (before the checks).
pub struct Fired {
    pub answers: Vec<Answer>,
    pub samples: Vec<(f64, u64)>,
    pub cpu: CpuShare,
    pub spike_end: f64,
    pub server: ServerSide,
}

/// Where a firing's votes go, and what came before them in the same election.
pub struct Firing<'a> {
    pub target: &'a Arc<Target>,
    pub common: &'a Common,
    pub http: &'a reqwest::Client,
    pub election: Uuid,
    /// Ballots the election held before this firing (earlier steps of the same run).
    pub already_recorded: u64,
    /// The run's index of this firing's first vote.
    pub first_index: usize,
}

impl<'a> Firing<'a> {
    /// The first firing in `election`.
    pub fn first(
        target: &'a Arc<Target>,
        common: &'a Common,
        http: &'a reqwest::Client,
        election: Uuid,
    ) -> Self {
        Self {
            target,
            common,
            http,
            election,
            already_recorded: 0,
            first_index: 0,
        }
    }
}

/// Fires `tokens` on `schedule` (vote `i` is the run's vote `first_index + i`) while polling
/// the tally; returns once the tally holds `already_recorded + accepted` or the drain timeout
/// passed.
pub async fn fire_votes(
    firing: &Firing<'_>,
    tokens: Vec<String>,
    schedule: &Schedule,
    label: &str,
) -> Fired {
    let (target, common, election) = (firing.target, firing.common, firing.election);
    let offsets = schedule.offsets();
    let mut votes = Votes::new(&target.ingest_url, election, tokens);
    votes.offset = firing.first_index;
    let shot = Arc::new(votes);
    let snapshot = target.snapshot().await;
    let start = Instant::now() + Duration::from_millis(50);
    let poller = Poller::start(target.clone(), election, start, common.drain_timeout);
    let ui = Ui {
        quiet: common.quiet,
    };
    let bar = ui.bar(offsets.len() as u64, label);
    let before = common.cpu.sample();
    let answers = fire::fire(
        firing.http,
        shot,
        &offsets,
        &common.policy,
        common.max_in_flight,
        start,
        &bar,
    )
    .await;
    let cpu = machine::share(&before, &common.cpu.sample());
    bar.finish_and_clear();
    let accepted = answers.iter().filter(|a| a.ok()).count() as u64;
    let spike_end = answers
        .iter()
        .map(|a| a.done.as_secs_f64())
        .fold(0.0, f64::max);
    let samples = poller.finish(firing.already_recorded + accepted).await;
    Fired {
        answers,
        samples,
        cpu,
        spike_end,
        server: ServerSide::between(&snapshot, &target.snapshot().await),
    }
}

/// Summarises a firing of one mode (everything but the checks).
pub(crate) fn summarise(
    mode: Mode,
    election: Uuid,
    prep: Prep,
    schedule: &Schedule,
    fired: &Fired,
) -> ModeRun {
    let answers = &fired.answers;
    let accepted: Vec<&Answer> = answers.iter().filter(|a| a.ok()).collect();
    let mut all = stats::histogram();
    for a in answers {
        stats::record(&mut all, a.latency);
    }
    let spike = spike_seconds(fired);
    let burst = schedule.span().is_zero();
    ModeRun {
        mode,
        election,
        prep,
        schedule: schedule.clone(),
        sent: answers.len(),
        accepted: accepted.len(),
        failed: answers.len() - accepted.len(),
        statuses: count_by(answers.iter().map(|a| a.status)),
        problems: count_by(answers.iter().filter_map(|a| a.problem.clone())),
        retries: count_by(answers.iter().flat_map(|a| a.retried.iter().copied())),
        votes_retried: answers.iter().filter(|a| !a.retried.is_empty()).count(),
        latency: Latency::of(&all),
        latency_accepted: Latency::of_durations(accepted.iter().map(|a| &a.latency)),
        spike_seconds: spike,
        accepted_per_second: accepted.len() as f64 / spike,
        drained_after_spike_ms: drained_after_spike_ms(fired, accepted.len() as u64),
        drain_poll_ms: DRAIN_POLL.as_millis() as u64,
        recorded: fired.samples.last().map_or(0, |s| s.1),
        spectrum: stats::spectrum(&all),
        windows: windows(answers, schedule, spike),
        windows_by: if burst {
            WindowsBy::Answer
        } else {
            WindowsBy::Scheduled
        },
        timeline: timeline(fired, &accepted),
        cpu: fired.cpu.clone(),
        server: fired.server.clone(),
        checks: Vec::new(),
    }
}

/// From the first scheduled send to the last answer.
fn spike_seconds(fired: &Fired) -> f64 {
    let first = fired
        .answers
        .iter()
        .map(|a| a.scheduled.as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    (fired.spike_end - first.min(fired.spike_end)).max(1e-3)
}

/// From the last answer until the tally held `goal` ballots (`None`: it never did).
fn drained_after_spike_ms(fired: &Fired, goal: u64) -> Option<f64> {
    let recorded_at = fired
        .samples
        .iter()
        .find(|(_, total)| *total >= goal)
        .map(|(t, _)| *t);
    recorded_at.map(|t| ((t - fired.spike_end).max(0.0) * 1000.0 * 10.0).round() / 10.0)
}

/// Latency per window: by scheduled send time, or for a burst by answer time.
fn windows(answers: &[Answer], schedule: &Schedule, spike: f64) -> Vec<Window> {
    let burst = schedule.span().is_zero();
    let width = Duration::from_secs_f64(if burst {
        (spike / 25.0).max(0.005)
    } else {
        (schedule.span().as_secs_f64() / 25.0).max(0.1)
    });
    let by_time: Vec<(Duration, Duration)> = answers
        .iter()
        .map(|a| (if burst { a.done } else { a.scheduled }, a.latency))
        .collect();
    stats::windows(&by_time, width)
}

fn timeline(fired: &Fired, accepted: &[&Answer]) -> Timeline {
    Timeline {
        sent: cumulative(
            fired
                .answers
                .iter()
                .map(|a| a.scheduled.as_secs_f64())
                .collect(),
        ),
        accepted: cumulative(accepted.iter().map(|a| a.done.as_secs_f64()).collect()),
        recorded: thin(fired.samples.clone(), 400),
    }
}
