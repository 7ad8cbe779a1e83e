//! One module per `loadtest` command, each with its arguments and a `run`; [`args`] holds the
//! arguments the scenarios share.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use loadtest::report::Report;
use loadtest::scenario;

mod args;
mod demo;
mod drain;
mod soak;
mod stress;
mod tokens;
mod votes;

#[derive(Subcommand)]
pub enum Command {
    /// Print development keys for a tenant as environment assignments (local stack only).
    Keys(demo::Keys),
    /// Print a demo membership export: one admin and `--voters` members; with `--platform-ops`
    /// the platform organisation's instead (one platform operator, role `ops`).
    MembersCsv(demo::MembersCsv),
    /// The whole journey through every running service, in queue and in direct mode.
    Journey(demo::Journey),
    /// The meeting spike: 300 votes/s for 5 s, in queue mode and in direct mode.
    Meeting(votes::Meeting),
    /// N votes all at once (default 1,000), in queue mode and in direct mode.
    #[command(name = "burst-1000", visible_alias = "burst")]
    Burst(votes::Burst),
    /// Any open-loop schedule: constant:RATE:SECS, ramp:FROM:TO:SECS or burst:N.
    Custom(votes::Custom),
    /// Step the rate up until p99 exceeds the limit or a request fails, in both modes; then
    /// measure the raw single-vote transaction rate of this PostgreSQL (direct mode's ceiling).
    Stress(stress::Stress),
    /// Token issuance through members-fn and events-svc, open loop (issue 4: 50 requests/s,
    /// p99 under 100 ms); then the issued tokens vote at once in queue mode.
    Tokens(tokens::Tokens),
    /// A meeting-like pattern for a long time (default 30 minutes): cycles of one election
    /// each, alternating the modes, with logins and tokens through events-svc, a steady
    /// trickle of votes with a burst in the middle, results reads, and every invariant checked
    /// after each burst; each service's memory and CPU and the database size over time.
    Soak(soak::Soak),
    /// Drain N queued votes on a fresh topic and fresh databases: end to end through the
    /// emulator vs an ack-only consumer vs the worker's batch writer alone vs raw SQL.
    Drain(drain::Drain),
}

impl Command {
    pub async fn run(self, invocation: Invocation) -> anyhow::Result<ExitCode> {
        match self {
            Self::Keys(c) => c.run(),
            Self::MembersCsv(c) => c.run(),
            Self::Journey(c) => c.run().await,
            Self::Meeting(c) => c.run(invocation).await,
            Self::Burst(c) => c.run(invocation).await,
            Self::Custom(c) => c.run(invocation).await,
            Self::Stress(c) => c.run(invocation).await,
            Self::Tokens(c) => c.run(invocation).await,
            Self::Soak(c) => c.run(invocation).await,
            Self::Drain(c) => c.run(invocation).await,
        }
    }
}

/// When and how this run was started, for the report.
pub struct Invocation {
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub command: String,
}

impl Invocation {
    pub fn now() -> Self {
        Self {
            started_at: chrono::Utc::now(),
            command: command_line(),
        }
    }

    /// A report of this run.
    fn report(self, scenario: &str, notes: Vec<String>, body: loadtest::report::Body) -> Report {
        Report::new(scenario, self.started_at, self.command, notes, body)
    }
}

/// The invocation, for the report: arguments only, with any secret given on the command line
/// replaced (they normally come from the environment).
fn command_line() -> String {
    let mut out = Vec::new();
    let mut hide_next = false;
    for arg in std::env::args().skip(1) {
        if hide_next {
            out.push("<hidden>".to_owned());
            hide_next = false;
            continue;
        }
        if arg == "--signing-keys" || arg == "--s2s-keys" {
            hide_next = true;
            out.push(arg);
        } else if arg.starts_with("--signing-keys=") || arg.starts_with("--s2s-keys=") {
            out.push(format!("{}=<hidden>", arg.split('=').next().unwrap_or("")));
        } else {
            out.push(arg);
        }
    }
    format!("loadtest {}", out.join(" "))
}

/// Writes the report, prints its summary, and exits 1 when a check failed.
fn finish(report: Report, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = out.unwrap_or_else(|| scenario::default_out(&report.scenario));
    let files = report.write(&dir)?;
    println!("{}", report.markdown());
    for f in files {
        println!("wrote {}", f.display());
    }
    if report.checks_passed {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("an invariant check FAILED: see the report");
        Ok(ExitCode::FAILURE)
    }
}
