//! `meeting`, `burst-1000` and `custom`: one schedule in each mode.

use std::process::ExitCode;

use clap::Args;
use loadtest::report::Body;
use loadtest::scenario;
use loadtest::schedule::Schedule;

use super::args::RunArgs;
use super::{finish, Invocation};

#[derive(Args)]
pub struct Meeting {
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    #[command(flatten)]
    run: RunArgs,
}

impl Meeting {
    pub async fn run(self, invocation: Invocation) -> anyhow::Result<ExitCode> {
        let schedule = Schedule::constant(self.rate, self.secs)?;
        votes("meeting", &schedule, self.run, invocation).await
    }
}

#[derive(Args)]
pub struct Burst {
    #[arg(long, default_value_t = 1000)]
    votes: usize,
    #[command(flatten)]
    run: RunArgs,
}

impl Burst {
    pub async fn run(self, invocation: Invocation) -> anyhow::Result<ExitCode> {
        let schedule = Schedule::burst(self.votes)?;
        let name = if self.votes == 1000 {
            "burst-1000"
        } else {
            "burst"
        };
        votes(name, &schedule, self.run, invocation).await
    }
}

#[derive(Args)]
pub struct Custom {
    #[arg(long)]
    schedule: String,
    #[command(flatten)]
    run: RunArgs,
}

impl Custom {
    pub async fn run(self, invocation: Invocation) -> anyhow::Result<ExitCode> {
        let schedule = Schedule::parse(&self.schedule)?;
        votes("custom", &schedule, self.run, invocation).await
    }
}

/// `schedule` in each mode, reported as `name`.
async fn votes(
    name: &str,
    schedule: &Schedule,
    run: RunArgs,
    invocation: Invocation,
) -> anyhow::Result<ExitCode> {
    let body = scenario::votes(run.target()?, &run.common(), schedule).await?;
    let report = invocation.report(name, Vec::new(), Body::Votes(body));
    finish(report, run.output.out)
}
