//! The goals from the issues each kind of run is measured against, and where this run stands
//! (reported, never asserted).

use super::{goal, pct, run_of, Body, Goal};
use crate::drain::DrainReport;
use crate::scenario::{Mode, StressReport, TokensReport, VotesReport};
use crate::soak::SoakReport;

pub(super) fn targets(scenario: &str, body: &Body) -> Vec<Goal> {
    match body {
        Body::Soak(s) => soak(s),
        Body::Votes(v) => votes(scenario, v),
        Body::Stress(s) => stress(s),
        Body::Drain(d) => drain(d),
        Body::Tokens(t) => tokens(t),
    }
}

fn soak(s: &SoakReport) -> Vec<Goal> {
    let mut out = Vec::new();
    for mode in [Mode::Queue, Mode::Direct] {
        if let Some((first, last)) = s.drift(mode) {
            out.push(goal(
                &format!("{} mode: burst p99 drift, first to last burst", mode.name()),
                "no upward drift (last ≤ 1.5 × first)",
                format!(
                    "{first:.1} → {last:.1} ms ({:.2} ×)",
                    last / first.max(0.001)
                ),
                Some(last <= first * 1.5),
            ));
        }
    }
    out
}

fn votes(scenario: &str, v: &VotesReport) -> Vec<Goal> {
    let mut out = Vec::new();
    if scenario == "meeting" {
        if let Some(q) = run_of(v, Mode::Queue) {
            out.push(goal(
                "meeting spike, queue mode: p99",
                "≤ 25 ms",
                format!("{:.1} ms", q.latency.p99_ms),
                Some(q.latency.p99_ms <= 25.0),
            ));
            out.push(goal(
                "meeting spike, queue mode: errors",
                "0",
                q.failed.to_string(),
                Some(q.failed == 0),
            ));
            out.push(goal(
                "meeting spike, queue mode: drained after the spike",
                "≤ 2 s",
                q.drained_after_spike_ms
                    .map_or("not within the timeout".into(), |ms| {
                        format!("{:.0} ms (±{} ms)", ms, q.drain_poll_ms)
                    }),
                Some(q.drained_after_spike_ms.is_some_and(|ms| ms <= 2000.0)),
            ));
        }
    }
    if scenario.starts_with("burst") {
        for run in &v.modes {
            out.push(goal(
                &format!(
                    "{} simultaneous votes, {} mode: errors",
                    run.sent,
                    run.mode.name()
                ),
                if run.mode == Mode::Queue {
                    "0"
                } else {
                    "0 (reported; the target is for queue mode)"
                },
                run.failed.to_string(),
                Some(run.failed == 0),
            ));
        }
    }
    out
}

fn stress(s: &StressReport) -> Vec<Goal> {
    let mut out = Vec::new();
    let held = |mode: Mode| {
        s.modes
            .iter()
            .find(|m| m.mode == mode)
            .and_then(|m| m.max_rate_held)
    };
    let (q, d) = (held(Mode::Queue), held(Mode::Direct));
    out.push(goal(
        "queue mode's max rate at p99 ≤ 100 ms vs direct mode's",
        "≥ 10×",
        match (q, d) {
            (Some(q), Some(d)) => format!("{q:.0}/s vs {d:.0}/s = {:.1}×", q / d),
            (Some(q), None) => format!("{q:.0}/s vs direct held no step"),
            _ => "queue mode held no step".into(),
        },
        match (q, d) {
            (Some(q), Some(d)) => Some(q >= 10.0 * d),
            (Some(_), None) => Some(true),
            _ => Some(false),
        },
    ));
    if let (Some(ceiling), Some(direct)) = (
        &s.single_vote_ceiling,
        s.modes.iter().find(|m| m.mode == Mode::Direct),
    ) {
        let f = direct.peak_accepted_per_second / ceiling.best_per_second.max(1e-9);
        out.push(goal(
            "direct mode vs its raw-SQL ceiling (peak accepted/s over the best single-vote transaction rate, same run)",
            "≥ 60 %",
            format!(
                "{:.0}/s of {:.0}/s = {}",
                direct.peak_accepted_per_second,
                ceiling.best_per_second,
                pct(f)
            ),
            Some(f >= 0.6),
        ));
    }
    out
}

fn drain(d: &DrainReport) -> Vec<Goal> {
    let mut out = vec![goal(
        "end-to-end drain vs ack-only consumer (same emulator, same streams)",
        "≥ 80 %",
        format!(
            "{:.0}/s of {:.0}/s = {}",
            d.worker_end_to_end.throughput.per_second,
            d.ack_only.per_second,
            pct(d.end_to_end_over_ack_only)
        ),
        Some(d.end_to_end_over_ack_only >= 0.8),
    )];
    if let Some(w) = d.batch_writer.first() {
        out.push(goal(
            &format!(
                "worker batch writer alone, batch {} × {} writers, pool of {} connections",
                w.batch_size, w.writers, w.connections
            ),
            "≥ 20,000 ballots/s with ≤ 3 connections",
            format!("{:.0} ballots/s", w.throughput.per_second),
            Some(w.throughput.per_second >= 20_000.0 && w.connections <= 3),
        ));
    }
    for (config, f) in &d.writer_over_ceiling {
        out.push(goal(
            &format!(
                "batch writer {config} vs batched raw-SQL ceiling (same batch, same connections)"
            ),
            "≥ 70 %",
            pct(*f),
            Some(*f >= 0.7),
        ));
    }
    out
}

fn tokens(t: &TokensReport) -> Vec<Goal> {
    vec![goal(
        &format!("token issuance at {:.0}/s (issue 4)", t.rate),
        "p99 < 100 ms, no errors",
        format!(
            "p99 {:.1} ms, {} of {} issued",
            t.latency.p99_ms, t.issued, t.requested
        ),
        Some(t.latency.p99_ms < 100.0 && t.issued == t.requested),
    )]
}
