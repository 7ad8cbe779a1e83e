//! The Markdown of each kind of run: tables side by side, one row per measure.

use std::fmt::Write as _;

use super::{pct, run_of};
use crate::drain::DrainReport;
use crate::scenario::{Mode, ModeRun, StressReport, TokensReport, VotesReport};
use crate::soak::SoakReport;

fn fmt_map(map: &std::collections::BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "–".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Two histogram bucket bounds, "≤ a / ≤ b ms".
fn le_pair(p50: Option<f64>, p99: Option<f64>) -> String {
    let one = |v: Option<f64>| match v {
        Some(v) if v.is_finite() => format!("≤ {v:.0}"),
        Some(_) => "> 10000".into(),
        None => "–".into(),
    };
    match (p50, p99) {
        (None, None) => "–".into(),
        _ => format!("{} / {} ms", one(p50), one(p99)),
    }
}

fn cpu_per_vote(r: &ModeRun) -> String {
    r.cpu
        .cpu_us_per("ingest", r.accepted)
        .map_or("– (no --pid ingest=…)".into(), |us| {
            format!("{us:.0} µs")
        })
}

fn mode_rows(md: &mut String, runs: &[&ModeRun]) {
    let header: Vec<String> = runs
        .iter()
        .map(|r| format!("{} mode", r.mode.name()))
        .collect();
    let _ = writeln!(md, "| | {} |", header.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(runs.len()));
    let mut row = |label: &str, f: &dyn Fn(&ModeRun) -> String| {
        let cells: Vec<String> = runs.iter().map(|r| f(r)).collect();
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    };
    row("tokens prepared", &|r| {
        format!(
            "{} ({}, {:.1} s)",
            r.prep.tokens, r.prep.path, r.prep.seconds
        )
    });
    row("sent", &|r| r.sent.to_string());
    row("accepted", &|r| r.accepted.to_string());
    row("failed (after retries)", &|r| r.failed.to_string());
    row("final statuses", &|r| fmt_map(&r.statuses));
    row("problems", &|r| fmt_map(&r.problems));
    row("votes retried / retries by status", &|r| {
        format!("{} / {}", r.votes_retried, fmt_map(&r.retries))
    });
    row("latency p50", &|r| format!("{:.1} ms", r.latency.p50_ms));
    row("latency p90", &|r| format!("{:.1} ms", r.latency.p90_ms));
    row("latency p99", &|r| format!("{:.1} ms", r.latency.p99_ms));
    row("latency p99.9", &|r| format!("{:.1} ms", r.latency.p999_ms));
    row("latency max", &|r| format!("{:.1} ms", r.latency.max_ms));
    row("spike (first send → last answer)", &|r| {
        format!("{:.2} s", r.spike_seconds)
    });
    row("accepted per second", &|r| {
        format!("{:.0}", r.accepted_per_second)
    });
    row("all recorded after the spike", &|r| {
        r.drained_after_spike_ms
            .map_or("**not within the timeout**".into(), |ms| {
                format!("{ms:.0} ms (poll every {} ms)", r.drain_poll_ms)
            })
    });
    row("recorded", &|r| r.recorded.to_string());
    row("CPU during the spike", &|r| r.cpu.describe());
    row(
        "ingest CPU per accepted vote (user + system)",
        &cpu_per_vote,
    );
    row("services' memory (RSS) after the spike", &|r| {
        r.cpu.describe_rss()
    });
    row("ingest's own latency p50 / p99 (its histogram)", &|r| {
        le_pair(r.server.ingest_p50_le_ms, r.server.ingest_p99_le_ms)
    });
    row("ingest's publish wait p50 / p99", &|r| {
        le_pair(r.server.publish_p50_le_ms, r.server.publish_p99_le_ms)
    });
    row("worker accept → commit lag p50 / p99", &|r| {
        le_pair(r.server.queue_lag_p50_le_ms, r.server.queue_lag_p99_le_ms)
    });
    md.push('\n');
}

pub(super) fn votes_md(md: &mut String, v: &VotesReport) {
    let _ = writeln!(
        md,
        "## Side by side: {}\n\nLatency is measured from each vote's *scheduled* send time to its final answer, client retries (after `Retry-After`) included.\n",
        v.schedule.describe()
    );
    let runs: Vec<&ModeRun> = v.modes.iter().collect();
    mode_rows(md, &runs);
    if let (Some(q), Some(d)) = (run_of(v, Mode::Queue), run_of(v, Mode::Direct)) {
        let _ = writeln!(
            md,
            "Queue / direct: p99 {:.1} ms vs {:.1} ms ({:.1}× lower in queue mode), accepted/s {:.0} vs {:.0}, failed {} vs {}.\n",
            q.latency.p99_ms,
            d.latency.p99_ms,
            d.latency.p99_ms / q.latency.p99_ms.max(1e-3),
            q.accepted_per_second,
            d.accepted_per_second,
            q.failed,
            d.failed
        );
    }
    for r in &v.modes {
        if let Some(e) = &r.prep.events {
            let _ = writeln!(
                md,
                "{} mode tokens through members-fn + events-svc ({} at a time): login p50 {:.1} / p99 {:.1} ms, token p50 {:.1} / p99 {:.1} ms, {} login retries after 429.\n",
                r.mode.name(),
                e.concurrency,
                e.login_latency.p50_ms,
                e.login_latency.p99_ms,
                e.token_latency.p50_ms,
                e.token_latency.p99_ms,
                e.login_retries_429
            );
        }
    }
}

/// One table row per single-vote ceiling measurement.
fn single_vote_rows(md: &mut String, runs: &[crate::ceiling::SingleRun]) {
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} |",
            r.variant.name(),
            r.connections,
            r.votes,
            r.per_second
        );
    }
}

pub(super) fn stress_md(md: &mut String, s: &StressReport) {
    let st = &s.settings;
    let _ = writeln!(
        md,
        "## Stepped rate\n\nFrom {}/s, ×{} per step of {} s, until p99 > {} ms or a request fails in each of {} tries at one rate (at most {} steps, {} s per mode). The queue is drained between steps.\n",
        st.start_rate, st.factor, st.step_seconds, st.p99_limit_ms, st.tries_per_step, st.max_steps, st.budget_seconds
    );
    for m in &s.modes {
        let _ = writeln!(
            md,
            "### {} mode: held up to {} — stopped: {}\n",
            m.mode.name(),
            m.max_rate_held
                .map_or("no step".into(), |r| format!("{r:.0} votes/s")),
            m.stopped
        );
        let _ = writeln!(md, "| offered/s | sent | failed | p50 ms | p99 ms | max ms | accepted/s | drained after | statuses | ingest's own p50 / p99 | CPU | held |\n|---|---|---|---|---|---|---|---|---|---|---|---|");
        for step in &m.steps {
            let _ = writeln!(
                md,
                "| {:.0} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {} | {} | {} | {} | {} |",
                step.rate,
                step.sent,
                step.failed,
                step.latency.p50_ms,
                step.latency.p99_ms,
                step.latency.max_ms,
                step.accepted_per_second,
                step.drained_after_spike_ms
                    .map_or("–".into(), |ms| format!("{ms:.0} ms")),
                fmt_map(&step.statuses),
                le_pair(step.server.ingest_p50_le_ms, step.server.ingest_p99_le_ms),
                step.cpu.describe(),
                if step.held { "yes" } else { "no" }
            );
        }
        let _ = writeln!(
            md,
            "\nPeak accepted rate: {:.0}/s.\n",
            m.peak_accepted_per_second
        );
    }
    if let Some(c) = &s.single_vote_ceiling {
        let _ = writeln!(md, "### Raw-SQL single-vote ceiling (same run, fresh database)\n\n| variant | connections | votes | per second |\n|---|---|---|---|");
        single_vote_rows(md, &c.runs);
        let _ = writeln!(
            md,
            "\nBest with ≤ {} connections: {:.0}/s ({}).\n",
            c.direct_mode_connections, c.best_per_second, c.best
        );
    }
    if let Some(note) = &s.ceiling_note {
        let _ = writeln!(md, "{note}\n");
    }
}

pub(super) fn drain_md(md: &mut String, d: &DrainReport) {
    let st = &d.settings;
    let _ = writeln!(
        md,
        "## Drain of {} queued votes\n\nFresh topic and databases; {} StreamingPull streams, {} leased per stream; worker batch {} × {} writers, pool of 3.\n",
        st.votes, st.streams, st.max_outstanding, st.batch_size, st.writers
    );
    drain_phases_md(md, d);
    let _ = writeln!(md, "\n| single-vote transactions (raw SQL) | connections | votes | per second |\n|---|---|---|---|");
    single_vote_rows(md, &d.ceiling_single.runs);
    let _ = writeln!(
        md,
        "\nEnd to end / ack-only: {}. Batch writer / batched ceiling: {}.\n",
        pct(d.end_to_end_over_ack_only),
        d.writer_over_ceiling
            .iter()
            .map(|(c, f)| format!("{c}: {}", pct(*f)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// One row per phase: publishing, the ack-only consumer, the worker, the batch writer, raw SQL.
fn drain_phases_md(md: &mut String, d: &DrainReport) {
    let _ = writeln!(
        md,
        "| phase | messages | seconds | per second | CPU |\n|---|---|---|---|---|"
    );
    let mut row = |name: String, t: &crate::drain::Throughput| {
        let _ = writeln!(
            md,
            "| {name} | {} | {:.2} | {:.0} | {} |",
            t.messages,
            t.seconds,
            t.per_second,
            t.cpu.describe()
        );
    };
    row(
        "publish to subscription A (official publisher)".into(),
        &d.publish,
    );
    row(
        "ack-only consumer on A (emulator delivery)".into(),
        &d.ack_only,
    );
    row("publish again, to subscription B".into(), &d.publish_again);
    row(
        format!(
            "worker end to end on B (mean batch {})",
            d.worker_end_to_end
                .mean_batch_size
                .map_or("?".into(), |b| format!("{b:.0}"))
        ),
        &d.worker_end_to_end.throughput,
    );
    for w in &d.batch_writer {
        row(
            format!(
                "batch writer alone, {} × {} writers (pool {})",
                w.batch_size, w.writers, w.connections
            ),
            &w.throughput,
        );
    }
    for c in &d.ceiling_batched {
        row(
            format!(
                "raw SQL, {}, {} × {} connections",
                c.method.name(),
                c.batch_size,
                c.writers
            ),
            &c.throughput,
        );
    }
}

pub(super) fn tokens_md(md: &mut String, t: &TokensReport) {
    let _ = writeln!(
        md,
        "## Token issuance: {} requests/s for {} s\n\n{} members logged in first (dev login) in {:.1} s (p50 {:.1} ms, p99 {:.1} ms, {} retries after 429). Then each asked events-svc for its voting token, open loop: events-svc takes the election's next token slot (its hash was registered with the elections side when the election opened), signs the token and answers 201.\n",
        t.rate, t.seconds, t.logins, t.login_seconds, t.login_latency.p50_ms, t.login_latency.p99_ms, t.login_retries_429
    );
    let _ = writeln!(
        md,
        "| requested | issued | statuses | p50 | p90 | p99 | max | CPU |\n|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |\n",
        t.requested,
        t.issued,
        fmt_map(&t.statuses),
        t.latency.p50_ms,
        t.latency.p90_ms,
        t.latency.p99_ms,
        t.latency.max_ms,
        t.cpu.describe()
    );
    if let Some(v) = &t.vote {
        let _ = writeln!(md, "### The issued tokens, cast all at once\n");
        mode_rows(md, &[v]);
    }
}

fn mib(bytes: Option<i64>) -> String {
    bytes.map_or("–".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

pub(super) fn soak_md(md: &mut String, s: &SoakReport) {
    let k = &s.settings;
    let _ = writeln!(
        md,
        "## Soak: {} cycles of {:.0} s over {:.0} min\n\nEach cycle: one election, {} members log in and fetch their token through members-fn and events-svc, votes trickle at {}/s with a burst of {}/s for {} s in the middle, the admin reads the results every {} s; then every invariant is checked and the election closed and sealed. Modes alternate.\n",
        s.cycles.len(),
        k.cycle_secs,
        k.minutes,
        k.logins_per_cycle,
        k.trickle_rate,
        k.burst_rate,
        k.burst_secs,
        k.results_every_secs
    );
    soak_cycles_md(md, s);
    soak_memory_md(md, s);
    soak_database_md(md, s);
}

/// One row per cycle.
fn soak_cycles_md(md: &mut String, s: &SoakReport) {
    let _ = writeln!(
        md,
        "| cycle | mode | sent | accepted | burst p50 / p99 ms | trickle p99 ms | login p99 ms | token p99 ms | results reads (p99 ms) | drained after | database | checks |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in &s.cycles {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} / {:.1} | {:.1} | {:.1} | {:.1} | {} ({:.1}) | {} | {} | {} |",
            c.index,
            c.mode.name(),
            c.sent,
            c.accepted,
            c.burst.p50_ms,
            c.burst.p99_ms,
            c.trickle.p99_ms,
            c.tokens_via_events.login_latency.p99_ms,
            c.tokens_via_events.token_latency.p99_ms,
            c.results_reads,
            c.results_latency.p99_ms,
            c.drained_after_ms
                .map_or("NOT".into(), |ms| format!("{ms:.0} ms")),
            mib(c.db_bytes_after),
            if c.checks.iter().all(|x| x.ok) { "pass" } else { "**FAIL**" }
        );
    }
    md.push('\n');
}

/// Each process's memory and CPU over the run.
fn soak_memory_md(md: &mut String, s: &SoakReport) {
    let k = &s.settings;
    let _ = writeln!(md, "### Memory and CPU over the run\n");
    let names: std::collections::BTreeSet<&String> =
        s.samples.iter().flat_map(|x| x.rss_mib.keys()).collect();
    let _ = writeln!(
        md,
        "Resident memory (MiB) sampled every {} s: first sample, peak, last; CPU as % of one core, mean over the run and the busiest sample.\n\n| process | RSS first | RSS peak | RSS last | CPU mean | CPU peak |\n|---|---|---|---|---|---|",
        k.sample_every_secs
    );
    for name in names {
        let rss: Vec<f64> = s
            .samples
            .iter()
            .filter_map(|x| x.rss_mib.get(name).copied())
            .collect();
        let cpu: Vec<f64> = s
            .samples
            .iter()
            .filter_map(|x| x.cpu_pct_of_core.get(name).copied())
            .collect();
        let mean = if cpu.is_empty() {
            0.0
        } else {
            cpu.iter().sum::<f64>() / cpu.len() as f64
        };
        let _ = writeln!(
            md,
            "| {name} | {:.1} | {:.1} | {:.1} | {mean:.0} % | {:.0} % |",
            rss.first().copied().unwrap_or(0.0),
            rss.iter().copied().fold(0.0, f64::max),
            rss.last().copied().unwrap_or(0.0),
            cpu.iter().copied().fold(0.0, f64::max)
        );
    }
    md.push('\n');
}

/// The database's growth per recorded vote.
fn soak_database_md(md: &mut String, s: &SoakReport) {
    let recorded = s.votes_recorded();
    let growth = match (s.db_bytes_before, s.db_bytes_after) {
        (Some(b), Some(a)) => format!(
            "{} → {} (+{:.1} MiB, {:.0} bytes per recorded vote, tokens, receipts and indexes included)",
            mib(Some(b)),
            mib(Some(a)),
            (a - b) as f64 / 1048576.0,
            if recorded > 0 { (a - b) as f64 / recorded as f64 } else { 0.0 }
        ),
        _ => s.db_note.clone(),
    };
    let _ = writeln!(
        md,
        "Database: {growth}. {recorded} votes recorded in all.\n"
    );
}
