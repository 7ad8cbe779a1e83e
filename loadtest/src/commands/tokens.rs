//! `tokens`: token issuance through members-fn and events-svc, open loop.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use loadtest::report::Body;
use loadtest::scenario;
use loadtest::schedule::Schedule;

use super::args::RunArgs;
use super::{finish, Invocation};

#[derive(Args)]
pub struct Tokens {
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Do not cast the issued tokens afterwards.
    #[arg(long)]
    no_vote: bool,
    #[command(flatten)]
    run: RunArgs,
}

impl Tokens {
    pub async fn run(self, invocation: Invocation) -> anyhow::Result<ExitCode> {
        let schedule = Schedule::constant(self.rate, self.secs)?;
        if schedule.requests() > 20_000 {
            bail!("the tokens scenario logs every member in: at most 20,000 requests");
        }
        let run = self.run;
        let body = scenario::tokens(run.target()?, &run.common(), &schedule, !self.no_vote).await?;
        let report = invocation.report(
            "tokens",
            vec!["Members log in with members-fn's dev login (the OIDC round trip to the identity provider is not part of this measurement); the load generator is one client address.".into()],
            Body::Tokens(body),
        );
        finish(report, run.output.out)
    }
}
