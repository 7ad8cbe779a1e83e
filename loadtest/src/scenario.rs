//! Scenarios against the running services: the same arrival schedule in queue mode and in
//! direct mode, one after the other in one invocation, then the invariant checks.
//!
//! For each mode: open a fresh election through events-svc, prepare one voting token per vote
//! (bulk path or through members-fn and events-svc), switch the live queue flag as ops and
//! wait until ingest follows (probe votes on a separate election answer 202 in queue mode and
//! 201 in direct mode), warm up, fire the schedule open-loop while polling the tally, wait
//! until every accepted vote is recorded, then check: accepted = recorded, the tally equals
//! what was sent, every receipt says recorded, a replayed token is not counted twice, and the
//! closed election's final (sealed) results agree. The flag is restored at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::fire::{self, Answer, RetryPolicy, TokenRequests, Votes};
use crate::machine::{self, CpuShare, CpuWatch};
use crate::schedule::Schedule;
use crate::stats::{self, Latency, Window};
use crate::target::{PrepThroughEvents, ServerSide, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Queue,
    Direct,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Direct => "direct",
        }
    }
    /// The status an accepted vote gets in this mode.
    pub fn accepted_status(self) -> u16 {
        match self {
            Self::Queue => 202,
            Self::Direct => 201,
        }
    }
}

/// Settings every scenario against the running services shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub modes: Vec<Mode>,
    /// Prepare tokens through members-fn dev login and events-svc instead of the bulk path.
    pub via_events: bool,
    /// Logins and token requests in flight at once while preparing through events-svc.
    pub events_concurrency: usize,
    pub policy: RetryPolicy,
    pub max_in_flight: usize,
    /// How long after the spike every accepted vote must be recorded.
    pub drain_timeout: Duration,
    /// Accepted tokens sent again afterwards (they must not count twice).
    pub replays: usize,
    /// At most this many receipts are looked up after the run.
    pub receipt_checks: usize,
    /// Close each election afterwards and check its final (sealed) results.
    pub close: bool,
    pub cpu: CpuWatch,
    pub quiet: bool,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            modes: vec![Mode::Queue, Mode::Direct],
            via_events: false,
            events_concurrency: 8,
            policy: RetryPolicy::default(),
            max_in_flight: 4096,
            drain_timeout: Duration::from_secs(60),
            replays: 10,
            receipt_checks: 5000,
            close: true,
            cpu: CpuWatch::default(),
            quiet: false,
        }
    }
}

/// One invariant or validity check; a failed one makes the run exit non-zero.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            ok,
            detail: detail.into(),
        }
    }
}

/// Progress on stderr (hidden when quiet or not a terminal).
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
}

impl Ui {
    pub fn bar(&self, len: u64, message: impl Into<String>) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {msg:<34} [{bar:30}] {pos}/{len} {per_sec:>10} {elapsed_precise}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    pub fn say(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", line.as_ref());
        }
    }
}

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

/// A separate election whose votes confirm the mode ingest is in (202 or 201) and warm it up.
pub struct Probe {
    election: Uuid,
    tokens: Vec<String>,
}

impl Probe {
    pub async fn new(target: &Target) -> anyhow::Result<Self> {
        let election = target
            .open_election("Load test probe (mode confirmation and warm-up)")
            .await?;
        Ok(Self {
            election,
            tokens: target.bulk_tokens(election, 200).await?,
        })
    }

    async fn token(&mut self, target: &Target) -> anyhow::Result<String> {
        if self.tokens.is_empty() {
            self.tokens = target.bulk_tokens(self.election, 200).await?;
        }
        self.tokens.pop().context("no probe token")
    }

    async fn vote(&mut self, target: &Target, http: &reqwest::Client) -> anyhow::Result<u16> {
        let token = self.token(target).await?;
        let response = http
            .post(format!(
                "{}/v1/elections/{}/ballots",
                target.ingest_url, self.election
            ))
            .bearer_auth(&token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(Votes::body(0))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .context("probe vote: ingest does not answer")?;
        Ok(response.status().as_u16())
    }

    /// Switches the live flag as ops and waits until ingest answers in `mode`, then sends a
    /// few concurrent warm-up votes (connections, pools, publisher).
    pub async fn switch(
        &mut self,
        target: &Target,
        http: &reqwest::Client,
        mode: Mode,
    ) -> anyhow::Result<Duration> {
        target.set_queue_mode(mode == Mode::Queue).await?;
        // From the change: the PUT may have waited out the flag's change interval.
        let started = Instant::now();
        let deadline = started + Duration::from_secs(15);
        loop {
            let status = self.vote(target, http).await?;
            if status == mode.accepted_status() {
                break;
            }
            if !matches!(status, 201 | 202 | 503) {
                bail!("probe vote answered {status}");
            }
            if Instant::now() > deadline {
                bail!(
                    "ingest did not follow the queue flag ({}) within 15 s",
                    mode.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let followed = started.elapsed();
        for _ in 0..3 {
            let mut warm = Vec::new();
            for _ in 0..8 {
                warm.push(self.token(target).await?);
            }
            let url = format!(
                "{}/v1/elections/{}/ballots",
                target.ingest_url, self.election
            );
            futures::future::join_all(warm.iter().map(|t| {
                http.post(&url)
                    .bearer_auth(t)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(Votes::body(1))
                    .timeout(Duration::from_secs(10))
                    .send()
            }))
            .await;
        }
        Ok(followed)
    }
}

/// Polls the tally while a run goes on and until it holds every accepted vote.
struct Poller {
    samples: Arc<Mutex<Vec<(f64, u64)>>>,
    goal: Arc<AtomicI64>,
    spike_over: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

const DRAIN_POLL: Duration = Duration::from_millis(25);

impl Poller {
    fn start(target: Arc<Target>, election: Uuid, start: Instant, timeout: Duration) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let goal = Arc::new(AtomicI64::new(i64::MAX));
        let spike_over = Arc::new(AtomicBool::new(false));
        let handle = {
            let (samples, goal, spike_over) = (samples.clone(), goal.clone(), spike_over.clone());
            tokio::spawn(async move {
                let mut over_since: Option<Instant> = None;
                loop {
                    if let Ok(results) = target.results(election).await {
                        let t = start.elapsed().as_secs_f64();
                        samples
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((t, results.total.max(0) as u64));
                        if results.total >= goal.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                    let over = spike_over.load(Ordering::SeqCst);
                    if over {
                        let since = *over_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > timeout {
                            break;
                        }
                    }
                    tokio::time::sleep(if over {
                        DRAIN_POLL
                    } else {
                        Duration::from_millis(100)
                    })
                    .await;
                }
            })
        };
        Self {
            samples,
            goal,
            spike_over,
            handle,
        }
    }

    async fn finish(self, accepted: u64) -> Vec<(f64, u64)> {
        self.goal.store(accepted as i64, Ordering::SeqCst);
        self.spike_over.store(true, Ordering::SeqCst);
        let _ = self.handle.await;
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn count_by<T: ToString>(items: impl IntoIterator<Item = T>) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    for item in items {
        *map.entry(item.to_string()).or_default() += 1;
    }
    map
}

/// At most `max` points of a cumulative series (keeps the last).
fn thin<T: Copy>(series: Vec<(f64, T)>, max: usize) -> Vec<(f64, T)> {
    if series.len() <= max {
        return series;
    }
    let step = series.len().div_ceil(max);
    let last = series.last().copied();
    let mut out: Vec<(f64, T)> = series.into_iter().step_by(step).collect();
    if let Some(last) = last {
        out.push(last);
    }
    out
}

fn cumulative(mut times: Vec<f64>) -> Vec<(f64, u64)> {
    times.sort_by(f64::total_cmp);
    let series = times
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u64 + 1))
        .collect();
    thin(series, 400)
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

/// Fires `tokens` on `schedule` (vote `i` is the run's vote `first_index + i`) while polling
/// the tally; returns once the tally holds `already_recorded + accepted` or the drain timeout
/// passed.
#[allow(clippy::too_many_arguments)]
pub async fn fire_votes(
    target: &Arc<Target>,
    common: &Common,
    http: &reqwest::Client,
    election: Uuid,
    tokens: Vec<String>,
    schedule: &Schedule,
    already_recorded: u64,
    first_index: usize,
    label: &str,
) -> Fired {
    let offsets = schedule.offsets();
    let mut votes = Votes::new(&target.ingest_url, election, tokens);
    votes.offset = first_index;
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
        http,
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
    let samples = poller.finish(already_recorded + accepted).await;
    Fired {
        answers,
        samples,
        cpu,
        spike_end,
        server: ServerSide::between(&snapshot, &target.snapshot().await),
    }
}

/// Summarises a firing of one mode (everything but the checks).
fn summarise(
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
    let first = answers
        .iter()
        .map(|a| a.scheduled.as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let spike = (fired.spike_end - first.min(fired.spike_end)).max(1e-3);
    let goal = accepted.len() as u64;
    let recorded_at = fired
        .samples
        .iter()
        .find(|(_, total)| *total >= goal)
        .map(|(t, _)| *t);
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
        drained_after_spike_ms: recorded_at
            .map(|t| ((t - fired.spike_end).max(0.0) * 1000.0 * 10.0).round() / 10.0),
        drain_poll_ms: DRAIN_POLL.as_millis() as u64,
        recorded: fired.samples.last().map_or(0, |s| s.1),
        spectrum: stats::spectrum(&all),
        windows: stats::windows(&by_time, width),
        windows_by: if burst {
            WindowsBy::Answer
        } else {
            WindowsBy::Scheduled
        },
        timeline: Timeline {
            sent: cumulative(answers.iter().map(|a| a.scheduled.as_secs_f64()).collect()),
            accepted: cumulative(accepted.iter().map(|a| a.done.as_secs_f64()).collect()),
            recorded: thin(fired.samples.clone(), 400),
        },
        cpu: fired.cpu.clone(),
        server: fired.server.clone(),
        checks: Vec::new(),
    }
}

/// The checks after a mode's run. `tokens` are the run's tokens by index.
#[allow(clippy::too_many_arguments)]
pub async fn check(
    target: &Target,
    common: &Common,
    http: &reqwest::Client,
    mode: Mode,
    election: Uuid,
    answers: &[Answer],
    tokens: &[String],
    checks: &mut Vec<Check>,
) -> anyhow::Result<()> {
    let accepted: Vec<&Answer> = answers.iter().filter(|a| a.ok()).collect();
    let expected = mode.accepted_status();
    let wrong_mode = accepted.iter().filter(|a| a.status != expected).count();
    checks.push(Check::new(
        "answers match the mode",
        wrong_mode == 0,
        format!(
            "{} accepted votes answered {expected} ({wrong_mode} answered otherwise)",
            accepted.len() - wrong_mode
        ),
    ));

    let results = target.results(election).await?;
    let goal = accepted.len() as i64;
    checks.push(Check::new(
        "accepted = recorded",
        results.total == goal,
        format!(
            "{} accepted, {} ballots recorded (after waiting up to {} s)",
            goal,
            results.total,
            common.drain_timeout.as_secs()
        ),
    ));
    let mut sent_tally: BTreeMap<String, i64> =
        crate::OPTIONS.iter().map(|o| (o.to_string(), 0)).collect();
    for a in &accepted {
        *sent_tally
            .entry(crate::OPTIONS[crate::choice_of(a.index)].to_owned())
            .or_default() += 1;
    }
    // The tally is checked against what was sent once the election is sealed (below); while it
    // is open nobody may see one.
    checks.push(Check::new(
        "no tally while the election is open",
        results.tally.is_empty() && !results.is_final,
        format!("tally {:?}, final {}", results.tally, results.is_final),
    ));

    let receipts: Vec<&str> = accepted.iter().filter_map(|a| a.kept.as_deref()).collect();
    let distinct: std::collections::HashSet<&str> = receipts.iter().copied().collect();
    checks.push(Check::new(
        "one receipt per accepted vote, all distinct",
        receipts.len() == accepted.len() && distinct.len() == receipts.len(),
        format!(
            "{} receipts, {} distinct, {} accepted",
            receipts.len(),
            distinct.len(),
            accepted.len()
        ),
    ));
    let sample: Vec<&str> = receipts
        .iter()
        .copied()
        .take(common.receipt_checks)
        .collect();
    let statuses: Vec<anyhow::Result<(u16, String)>> =
        futures::stream::iter(sample.iter().map(|r| target.receipt(r)))
            .buffer_unordered(16)
            .collect()
            .await;
    let not_recorded = statuses
        .iter()
        .filter(|s| !matches!(s, Ok((200, status)) if status == "recorded"))
        .count();
    checks.push(Check::new(
        "receipts say recorded",
        not_recorded == 0,
        format!(
            "{} of {} receipts looked up say recorded",
            sample.len() - not_recorded,
            sample.len()
        ),
    ));

    // Replays: the same tokens again, with fresh Idempotency-Keys (not a client retry): each is
    // a submission of its own, refused at once in direct mode, rejected by the worker in queue
    // mode under its own receipt.
    let replay: Vec<&Answer> = accepted.iter().copied().take(common.replays).collect();
    if !replay.is_empty() {
        let rejected_before = target.worker_votes("token_already_used").await;
        let shot = Arc::new(Votes::new(
            &target.ingest_url,
            election,
            replay.iter().map(|a| tokens[a.index].clone()).collect(),
        ));
        let again = fire::fire(
            http,
            shot,
            &vec![Duration::ZERO; replay.len()],
            &common.policy,
            common.max_in_flight,
            Instant::now(),
            &ProgressBar::hidden(),
        )
        .await;
        let (expect, what) = match mode {
            Mode::Queue => (202, "202 with a receipt of their own"),
            Mode::Direct => (409, "409 token already used"),
        };
        let as_expected = again
            .iter()
            .filter(|b| {
                b.status == expect
                    && (mode == Mode::Direct
                        || (b.kept.is_some()
                            && b.kept.as_deref() != replay[b.index].kept.as_deref()))
            })
            .count();
        // In queue mode the worker must see and reject them before the tally means anything;
        // its counter says when (without it, wait a little).
        if mode == Mode::Queue {
            match rejected_before {
                Some(before) => {
                    let deadline = Instant::now() + Duration::from_secs(15);
                    while Instant::now() < deadline {
                        let now = target
                            .worker_votes("token_already_used")
                            .await
                            .unwrap_or(before);
                        if now - before >= as_expected as f64 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                None => tokio::time::sleep(Duration::from_secs(3)).await,
            }
        }
        let after = target.results(election).await?;
        // Each replay's own receipt says it was not counted (queue mode).
        let mut rejected = 0;
        for b in &again {
            if let (Mode::Queue, Some(receipt)) = (mode, b.kept.as_deref()) {
                if matches!(target.receipt(receipt).await, Ok((200, s)) if s == "rejected") {
                    rejected += 1;
                }
            }
        }
        let receipts_ok = mode == Mode::Direct || rejected == replay.len();
        checks.push(Check::new(
            "no token counted twice",
            after.total == goal && as_expected == replay.len() && receipts_ok,
            format!(
                "{} accepted tokens sent again: {as_expected} answered {what}{}; ballots {} → {}",
                replay.len(),
                if mode == Mode::Queue {
                    format!(", {rejected} of their receipts say rejected")
                } else {
                    String::new()
                },
                results.total,
                after.total
            ),
        ));
    }

    if common.close {
        target.close_election(election).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let final_results = loop {
            let r = target.results_via_events(election).await?;
            if r.is_final || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        checks.push(Check::new(
            "final results after the close agree",
            final_results.is_final
                && final_results.total == goal
                && final_results.tally == sent_tally,
            format!(
                "final: {}, {} ballots, tally {:?}",
                final_results.is_final, final_results.total, final_results.tally
            ),
        ));
    }
    Ok(())
}

/// `meeting`, `burst` and `custom`: `schedule` in each mode, side by side.
#[derive(Debug, Clone, Serialize)]
pub struct VotesReport {
    pub schedule: Schedule,
    pub modes: Vec<ModeRun>,
}

/// Runs `body` with the queue flag restored afterwards, whatever happens.
pub async fn restoring_flag<T>(
    target: &Target,
    body: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let original = target.queue_mode().await?;
    let outcome = body.await;
    let restored = target.set_queue_mode(original.unwrap_or(true)).await;
    let value = outcome?;
    restored.context("restoring the queue flag")?;
    Ok(value)
}

pub async fn votes(
    target: Arc<Target>,
    common: &Common,
    schedule: &Schedule,
) -> anyhow::Result<VotesReport> {
    let ui = Ui {
        quiet: common.quiet,
    };
    let http = fire::voter_client();
    let modes = restoring_flag(&target, async {
        let mut probe = Probe::new(&target).await?;
        let mut runs = Vec::new();
        for &mode in &common.modes {
            let election = target
                .open_election(&format!("Load test: {} ({})", schedule.describe(), mode.name()))
                .await?;
            let (tokens, prep) = prepare(&target, common, election, schedule.requests()).await?;
            ui.say(format!(
                "{} mode: election {election}, {} tokens prepared ({}) in {:.1} s",
                mode.name(),
                prep.tokens,
                prep.path,
                prep.seconds
            ));
            let followed = probe.switch(&target, &http, mode).await?;
            ui.say(format!(
                "{} mode: ingest followed the flag after {:.1} s; warmed up",
                mode.name(),
                followed.as_secs_f64()
            ));
            let fired = fire_votes(
                &target,
                common,
                &http,
                election,
                tokens.clone(),
                schedule,
                0,
                0,
                &format!("{}: {}", mode.name(), schedule.describe()),
            )
            .await;
            let mut run = summarise(mode, election, prep, schedule, &fired);
            check(
                &target,
                common,
                &http,
                mode,
                election,
                &fired.answers,
                &tokens,
                &mut run.checks,
            )
            .await?;
            ui.say(format!(
                "{} mode: {} sent, {} accepted, p99 {:.1} ms, drained {} after the spike; checks {}",
                mode.name(),
                run.sent,
                run.accepted,
                run.latency.p99_ms,
                run.drained_after_spike_ms
                    .map_or("NOT".into(), |ms| format!("{ms:.0} ms")),
                if run.checks.iter().all(|c| c.ok) { "pass" } else { "FAIL" }
            ));
            runs.push(run);
        }
        Ok(runs)
    })
    .await?;
    Ok(VotesReport {
        schedule: schedule.clone(),
        modes,
    })
}

// ---------------------------------------------------------------------------------------------
// stress

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

pub async fn stress(
    target: Arc<Target>,
    common: &Common,
    settings: &StressSettings,
) -> anyhow::Result<StressReport> {
    if common.via_events {
        bail!("stress prepares thousands of tokens per step: use the bulk path (no --via-events)");
    }
    let ui = Ui {
        quiet: common.quiet,
    };
    let http = fire::voter_client();
    let modes = restoring_flag(&target, async {
        let mut probe = Probe::new(&target).await?;
        let mut runs = Vec::new();
        for &mode in &common.modes {
            let began = Instant::now();
            let election = target
                .open_election(&format!("Load test: stress ({})", mode.name()))
                .await?;
            probe.switch(&target, &http, mode).await?;
            let mut steps = Vec::new();
            let mut all_answers: Vec<Answer> = Vec::new();
            let mut all_tokens: Vec<String> = Vec::new();
            let mut recorded = 0u64;
            let mut stopped = format!("reached the last step ({})", settings.max_steps);
            let mut rate = settings.start_rate;
            let mut tries_at_rate = 0;
            for _ in 0..settings.max_steps * settings.tries_per_step as usize {
                if began.elapsed().as_secs_f64() > settings.budget_seconds {
                    stopped = format!("time budget of {} s spent", settings.budget_seconds);
                    break;
                }
                let schedule = Schedule::constant(rate.round(), settings.step_seconds)?;
                let tokens = target.bulk_tokens(election, schedule.requests()).await?;
                let fired = fire_votes(
                    &target,
                    common,
                    &http,
                    election,
                    tokens.clone(),
                    &schedule,
                    recorded,
                    all_tokens.len(),
                    &format!("{} at {:.0}/s", mode.name(), rate.round()),
                )
                .await;
                let run = summarise(
                    mode,
                    election,
                    Prep {
                        path: "bulk".into(),
                        tokens: tokens.len(),
                        seconds: 0.0,
                        events: None,
                    },
                    &schedule,
                    &Fired {
                        answers: fired.answers.clone(),
                        samples: fired
                            .samples
                            .iter()
                            .map(|(t, n)| (*t, n.saturating_sub(recorded)))
                            .collect(),
                        cpu: fired.cpu.clone(),
                        spike_end: fired.spike_end,
                        server: fired.server.clone(),
                    },
                );
                let (p99, failed) = (run.latency.p99_ms, run.failed);
                let held = failed == 0 && p99 <= settings.p99_limit_ms;
                ui.say(format!(
                    "{} at {:>5.0}/s: {} sent, {} failed, p99 {:.1} ms, {:.0} accepted/s, {}",
                    mode.name(),
                    rate.round(),
                    run.sent,
                    run.failed,
                    run.latency.p99_ms,
                    run.accepted_per_second,
                    run.cpu.describe()
                ));
                steps.push(StressStep {
                    rate: rate.round(),
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
                });
                recorded += run.accepted as u64;
                // Re-index this step's answers after the earlier steps' tokens.
                let base = all_tokens.len();
                all_answers.extend(fired.answers.into_iter().map(|mut a| {
                    a.index += base;
                    a
                }));
                all_tokens.extend(tokens);
                tries_at_rate += 1;
                if !held && tries_at_rate < settings.tries_per_step {
                    ui.say(format!(
                        "{} at {:>5.0}/s missed; trying the same rate again",
                        mode.name(),
                        rate.round()
                    ));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                if !held {
                    stopped = if failed > 0 {
                        format!("{failed} failed requests at {:.0}/s", rate.round())
                    } else {
                        format!(
                            "p99 {:.1} ms > {} ms at {:.0}/s",
                            p99,
                            settings.p99_limit_ms,
                            rate.round()
                        )
                    };
                    break;
                }
                if steps.iter().filter(|s| s.held).count() >= settings.max_steps {
                    break;
                }
                rate *= settings.factor;
                tries_at_rate = 0;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let mut checks = Vec::new();
            check(
                &target,
                common,
                &http,
                mode,
                election,
                &all_answers,
                &all_tokens,
                &mut checks,
            )
            .await?;
            runs.push(StressMode {
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
            });
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

// ---------------------------------------------------------------------------------------------
// tokens (issue 4: token issuance must hold 50 requests/s with p99 under 100 ms)

#[derive(Debug, Clone, Serialize)]
pub struct TokensReport {
    pub rate: f64,
    pub seconds: f64,
    pub election: Uuid,
    pub logins: usize,
    pub login_seconds: f64,
    pub login_latency: Latency,
    pub login_retries_429: u64,
    pub requested: usize,
    pub issued: usize,
    pub statuses: BTreeMap<String, usize>,
    pub latency: Latency,
    pub spectrum: Vec<(f64, f64)>,
    pub windows: Vec<Window>,
    pub timeline: Timeline,
    pub cpu: CpuShare,
    /// The issued tokens, cast at once in queue mode: they must all count.
    pub vote: Option<ModeRun>,
    pub checks: Vec<Check>,
}

pub async fn tokens(
    target: Arc<Target>,
    common: &Common,
    schedule: &Schedule,
    vote_with_them: bool,
) -> anyhow::Result<TokensReport> {
    let ui = Ui {
        quiet: common.quiet,
    };
    let n = schedule.requests();
    let election = target
        .open_election(&format!(
            "Load test: token issuance, {}",
            schedule.describe()
        ))
        .await?;
    let voters: Vec<u32> = (1..=n as u32).collect();
    let login_started = std::time::Instant::now();
    let (sessions, login_latencies, login_retries) =
        target.sessions(&voters, common.events_concurrency).await?;
    let login_seconds = login_started.elapsed().as_secs_f64();
    ui.say(format!(
        "{n} members logged in (dev login) in {login_seconds:.1} s; now {}",
        schedule.describe()
    ));
    let shot = Arc::new(TokenRequests {
        url: format!("{}/v1/elections/{election}/token", target.events_url),
        sessions: sessions.clone(),
    });
    let offsets = schedule.offsets();
    let bar = ui.bar(n as u64, "token requests");
    let before = common.cpu.sample();
    let answers = fire::fire(
        target.http(),
        shot,
        &offsets,
        &common.policy,
        common.max_in_flight,
        Instant::now() + Duration::from_millis(50),
        &bar,
    )
    .await;
    let cpu = machine::share(&before, &common.cpu.sample());
    bar.finish_and_clear();
    let mut all = stats::histogram();
    for a in &answers {
        stats::record(&mut all, a.latency);
    }
    let issued: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    let tokens: Vec<String> = issued.iter().filter_map(|a| a.kept.clone()).collect();
    let distinct: std::collections::HashSet<&String> = tokens.iter().collect();
    let mut checks = vec![Check::new(
        "one distinct token per member",
        tokens.len() == n && distinct.len() == n,
        format!(
            "{} of {n} requests answered 201 with a token, {} distinct",
            tokens.len(),
            distinct.len()
        ),
    )];
    let mut second = Vec::new();
    for session in sessions.iter().take(5) {
        second.push(target.second_token_request(election, session).await?);
    }
    checks.push(Check::new(
        "a second request is refused",
        second.iter().all(|s| *s == 409),
        format!("second requests answered {second:?}"),
    ));
    let mut report = TokensReport {
        rate: n as f64 / schedule.span().as_secs_f64().max(1e-3),
        seconds: schedule.span().as_secs_f64(),
        election,
        logins: n,
        login_seconds,
        login_latency: Latency::of_durations(&login_latencies),
        login_retries_429: login_retries,
        requested: answers.len(),
        issued: issued.len(),
        statuses: count_by(answers.iter().map(|a| a.status)),
        latency: Latency::of(&all),
        spectrum: stats::spectrum(&all),
        windows: stats::windows(
            &answers
                .iter()
                .map(|a| (a.scheduled, a.latency))
                .collect::<Vec<_>>(),
            Duration::from_millis(500),
        ),
        timeline: Timeline {
            sent: cumulative(answers.iter().map(|a| a.scheduled.as_secs_f64()).collect()),
            accepted: cumulative(issued.iter().map(|a| a.done.as_secs_f64()).collect()),
            recorded: Vec::new(),
        },
        cpu,
        vote: None,
        checks,
    };
    if vote_with_them && !tokens.is_empty() {
        let http = fire::voter_client();
        let burst = Schedule::burst(tokens.len())?;
        let run = restoring_flag(&target, async {
            let mut probe = Probe::new(&target).await?;
            probe.switch(&target, &http, Mode::Queue).await?;
            let fired = fire_votes(
                &target,
                common,
                &http,
                election,
                tokens.clone(),
                &burst,
                0,
                0,
                "votes with the issued tokens",
            )
            .await;
            let prep = Prep {
                path: "events".into(),
                tokens: tokens.len(),
                seconds: login_seconds + schedule.span().as_secs_f64(),
                events: None,
            };
            let mut run = summarise(Mode::Queue, election, prep, &burst, &fired);
            check(
                &target,
                common,
                &http,
                Mode::Queue,
                election,
                &fired.answers,
                &tokens,
                &mut run.checks,
            )
            .await?;
            Ok(run)
        })
        .await?;
        report.vote = Some(run);
    }
    Ok(report)
}

/// Where reports go by default: `target/loadtest/<scenario>-<UTC timestamp>/`.
pub fn default_out(scenario: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("loadtest").join(format!(
        "{scenario}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ))
}
