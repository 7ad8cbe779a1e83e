//! `tokens`: token issuance through members-fn and events-svc, open loop (the goal: 50
//! requests/s with p99 under 100 ms); then the issued tokens vote at once in queue mode.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use super::firing::{fire_votes, summarise, Firing, ModeRun, Prep, Timeline};
use super::poller::{count_by, cumulative};
use super::{restoring_flag, Check, Common, Invariants, Mode, Probe, Ui};
use crate::fire::{self, Answer, TokenRequests};
use crate::machine::{self, CpuShare};
use crate::schedule::Schedule;
use crate::stats::{self, Latency, Window};
use crate::target::Target;

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

/// The members' sessions (dev login) and what logging in cost.
struct Logins {
    sessions: Vec<String>,
    latencies: Vec<Duration>,
    retries_429: u64,
    seconds: f64,
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
    let logins = log_in(&target, common, n).await?;
    ui.say(format!(
        "{n} members logged in (dev login) in {:.1} s; now {}",
        logins.seconds,
        schedule.describe()
    ));
    let (answers, cpu) = request_tokens(&target, common, schedule, election, &logins).await;
    let tokens: Vec<String> = answers
        .iter()
        .filter(|a| a.status == 201)
        .filter_map(|a| a.kept.clone())
        .collect();
    let checks = vec![
        one_token_each(&tokens, n),
        second_request_refused(&target, election, &logins.sessions).await?,
    ];
    let mut report = report(schedule, election, &logins, &answers, cpu, checks);
    if vote_with_them && !tokens.is_empty() {
        let run = vote_with(&target, common, schedule, election, tokens, logins.seconds).await?;
        report.vote = Some(run);
    }
    Ok(report)
}

/// Members 1..=n log in (dev login), `events_concurrency` at a time.
async fn log_in(target: &Target, common: &Common, n: usize) -> anyhow::Result<Logins> {
    let voters: Vec<u32> = (1..=n as u32).collect();
    let started = std::time::Instant::now();
    let (sessions, latencies, retries_429) =
        target.sessions(&voters, common.events_concurrency).await?;
    Ok(Logins {
        sessions,
        latencies,
        retries_429,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Each session asks events-svc for its token on `schedule`, open loop.
async fn request_tokens(
    target: &Target,
    common: &Common,
    schedule: &Schedule,
    election: Uuid,
    logins: &Logins,
) -> (Vec<Answer>, CpuShare) {
    let ui = Ui {
        quiet: common.quiet,
    };
    let shot = Arc::new(TokenRequests {
        url: format!("{}/v1/elections/{election}/token", target.events_url),
        sessions: logins.sessions.clone(),
    });
    let offsets = schedule.offsets();
    let bar = ui.bar(schedule.requests() as u64, "token requests");
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
    (answers, cpu)
}

fn one_token_each(tokens: &[String], n: usize) -> Check {
    let distinct: HashSet<&String> = tokens.iter().collect();
    Check::new(
        "one distinct token per member",
        tokens.len() == n && distinct.len() == n,
        format!(
            "{} of {n} requests answered 201 with a token, {} distinct",
            tokens.len(),
            distinct.len()
        ),
    )
}

/// The first five members ask again: each must be refused.
async fn second_request_refused(
    target: &Target,
    election: Uuid,
    sessions: &[String],
) -> anyhow::Result<Check> {
    let mut second = Vec::new();
    for session in sessions.iter().take(5) {
        second.push(target.second_token_request(election, session).await?);
    }
    Ok(Check::new(
        "a second request is refused",
        second.iter().all(|s| *s == 409),
        format!("second requests answered {second:?}"),
    ))
}

fn report(
    schedule: &Schedule,
    election: Uuid,
    logins: &Logins,
    answers: &[Answer],
    cpu: CpuShare,
    checks: Vec<Check>,
) -> TokensReport {
    let n = logins.sessions.len();
    let issued: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    let mut all = stats::histogram();
    for a in answers {
        stats::record(&mut all, a.latency);
    }
    TokensReport {
        rate: n as f64 / schedule.span().as_secs_f64().max(1e-3),
        seconds: schedule.span().as_secs_f64(),
        election,
        logins: n,
        login_seconds: logins.seconds,
        login_latency: Latency::of_durations(&logins.latencies),
        login_retries_429: logins.retries_429,
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
    }
}

/// The issued tokens, cast all at once in queue mode, then the checks: they must all count.
async fn vote_with(
    target: &Arc<Target>,
    common: &Common,
    schedule: &Schedule,
    election: Uuid,
    tokens: Vec<String>,
    login_seconds: f64,
) -> anyhow::Result<ModeRun> {
    let http = fire::voter_client();
    let burst = Schedule::burst(tokens.len())?;
    restoring_flag(target, async {
        let mut probe = Probe::new(target).await?;
        probe.switch(target, &http, Mode::Queue).await?;
        let firing = Firing::first(target, common, &http, election);
        let fired = fire_votes(
            &firing,
            tokens.clone(),
            &burst,
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
        let invariants = Invariants {
            target,
            common,
            http: &http,
            mode: Mode::Queue,
            election,
        };
        run.checks = invariants.check(&fired.answers, &tokens).await?;
        Ok(run)
    })
    .await
}
