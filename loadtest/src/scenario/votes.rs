//! `meeting`, `burst` and `custom`: one schedule in each mode, side by side.

use std::sync::Arc;

use serde::Serialize;

use super::firing::{fire_votes, prepare, summarise, Firing, ModeRun};
use super::{restoring_flag, Common, Invariants, Mode, Probe, Ui};
use crate::fire;
use crate::schedule::Schedule;
use crate::target::Target;

/// `meeting`, `burst` and `custom`: `schedule` in each mode, side by side.
#[derive(Debug, Clone, Serialize)]
pub struct VotesReport {
    pub schedule: Schedule,
    pub modes: Vec<ModeRun>,
}

pub async fn votes(
    target: Arc<Target>,
    common: &Common,
    schedule: &Schedule,
) -> anyhow::Result<VotesReport> {
    let http = fire::voter_client();
    let modes = restoring_flag(&target, async {
        let mut probe = Probe::new(&target).await?;
        let mut runs = Vec::new();
        for &mode in &common.modes {
            runs.push(one_mode(&target, common, &http, &mut probe, schedule, mode).await?);
        }
        Ok(runs)
    })
    .await?;
    Ok(VotesReport {
        schedule: schedule.clone(),
        modes,
    })
}

/// `schedule` in `mode`, on an election of its own, then the checks.
async fn one_mode(
    target: &Arc<Target>,
    common: &Common,
    http: &reqwest::Client,
    probe: &mut Probe,
    schedule: &Schedule,
    mode: Mode,
) -> anyhow::Result<ModeRun> {
    let ui = Ui {
        quiet: common.quiet,
    };
    let election = target
        .open_election(&format!(
            "Load test: {} ({})",
            schedule.describe(),
            mode.name()
        ))
        .await?;
    let (tokens, prep) = prepare(target, common, election, schedule.requests()).await?;
    ui.say(format!(
        "{} mode: election {election}, {} tokens prepared ({}) in {:.1} s",
        mode.name(),
        prep.tokens,
        prep.path,
        prep.seconds
    ));
    let followed = probe.switch(target, http, mode).await?;
    ui.say(format!(
        "{} mode: ingest followed the flag after {:.1} s; warmed up",
        mode.name(),
        followed.as_secs_f64()
    ));
    let firing = Firing::first(target, common, http, election);
    let label = format!("{}: {}", mode.name(), schedule.describe());
    let fired = fire_votes(&firing, tokens.clone(), schedule, &label).await;
    let mut run = summarise(mode, election, prep, schedule, &fired);
    let invariants = Invariants {
        target,
        common,
        http,
        mode,
        election,
    };
    run.checks = invariants.check(&fired.answers, &tokens).await?;
    ui.say(format!(
        "{} mode: {} sent, {} accepted, p99 {:.1} ms, drained {} after the spike; checks {}",
        mode.name(),
        run.sent,
        run.accepted,
        run.latency.p99_ms,
        run.drained_after_spike_ms
            .map_or("NOT".into(), |ms| format!("{ms:.0} ms")),
        if run.checks.iter().all(|c| c.ok) {
            "pass"
        } else {
            "FAIL"
        }
    ));
    Ok(run)
}
