//! `stress`: the stepped rate in each mode, then the raw single-vote ceiling of this PostgreSQL.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use loadtest::ceiling::{self, SingleCeiling};
use loadtest::report::Body;
use loadtest::scenario::{self, StressReport, StressSettings, Ui};

use super::args::RunArgs;
use super::{finish, Invocation};

#[derive(Args)]
pub struct Stress {
    #[arg(long, default_value_t = 100.0)]
    start_rate: f64,
    #[arg(long, default_value_t = 1.5)]
    factor: f64,
    #[arg(long, default_value_t = 3.0)]
    step_secs: f64,
    #[arg(long, default_value_t = 12)]
    max_steps: usize,
    #[arg(long, default_value_t = 100.0)]
    p99_limit_ms: f64,
    /// Tries per rate: a step that misses the limit is run again at the same rate (up to
    /// this many times) before the stepping stops, so one pause of a shared machine (a
    /// garbage collection in the emulator, someone else's build) does not end a mode.
    #[arg(long, default_value_t = 2)]
    tries_per_step: u32,
    /// Bound on one mode's stepping, preparation and drains included.
    #[arg(long, default_value_t = 240.0)]
    budget_secs: f64,
    /// Skip the raw-SQL single-vote ceiling (needs EKKLESIA_ADMIN_DATABASE_URL).
    #[arg(long)]
    no_ceiling: bool,
    /// Connections direct mode may use (ingest's DATABASE_MAX_CONNECTIONS).
    #[arg(long, default_value_t = 3)]
    direct_connections: u32,
    #[command(flatten)]
    run: RunArgs,
}

impl Stress {
    pub async fn run(self, invocation: Invocation) -> anyhow::Result<ExitCode> {
        let settings = self.settings()?;
        let common = self.run.common();
        let mut body = scenario::stress(self.run.target()?, &common, &settings).await?;
        self.add_ceiling(&mut body, common.quiet).await;
        let report = invocation.report("stress", Vec::new(), Body::Stress(body));
        finish(report, self.run.output.out)
    }

    fn settings(&self) -> anyhow::Result<StressSettings> {
        if !(self.start_rate >= 1.0
            && self.factor > 1.0
            && self.step_secs >= 0.5
            && (1..=30).contains(&self.max_steps)
            && (1..=5).contains(&self.tries_per_step))
        {
            bail!("stress needs --start-rate ≥ 1, --factor > 1, --step-secs ≥ 0.5, 1..=30 steps and 1..=5 tries per step");
        }
        Ok(StressSettings {
            start_rate: self.start_rate,
            factor: self.factor,
            step_seconds: self.step_secs,
            max_steps: self.max_steps,
            p99_limit_ms: self.p99_limit_ms,
            tries_per_step: self.tries_per_step,
            budget_seconds: self.budget_secs.min(1800.0),
        })
    }

    /// The single-vote ceiling, or a note saying why there is none.
    async fn add_ceiling(&self, body: &mut StressReport, quiet: bool) {
        if self.no_ceiling {
            body.ceiling_note = Some("The single-vote ceiling was skipped (--no-ceiling).".into());
            return;
        }
        match single_ceiling(self.direct_connections, quiet).await {
            Ok(c) => body.single_vote_ceiling = Some(c),
            Err(e) => {
                body.ceiling_note = Some(format!(
                    "The single-vote ceiling could not be measured: {e:#}"
                ))
            }
        }
    }
}

/// The raw single-vote transaction rate on a fresh database (as in `drain`).
async fn single_ceiling(direct_connections: u32, quiet: bool) -> anyhow::Result<SingleCeiling> {
    let ui = Ui { quiet };
    ui.say("measuring the raw single-vote transaction rate on a fresh database");
    let db = ceiling::fresh_database().await?;
    let tenant = shared::domain::TenantId::parse("ceiling-party")?;
    let election = uuid::Uuid::new_v4();
    let votes = ceiling::synthetic_votes(&tenant, election, 20_000);
    let outcome = ceiling::single_ceiling(
        &db,
        &tenant,
        election,
        &votes,
        &[1, direct_connections.max(1)],
        direct_connections.max(1),
        Duration::from_secs(8),
    )
    .await;
    let _ = ceiling::drop_database(db).await;
    outcome
}
