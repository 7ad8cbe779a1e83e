//! `soak`: a meeting-like pattern for a long time.

use std::process::ExitCode;

use clap::Args;
use loadtest::report::Body;
use loadtest::soak::{self, SoakSettings};

use super::args::RunArgs;
use super::{finish, Invocation};

#[derive(Args)]
pub struct Soak {
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// One election and one burst every this many seconds.
    #[arg(long, default_value_t = 180.0)]
    cycle_secs: f64,
    #[arg(long, default_value_t = 3.0)]
    trickle_rate: f64,
    #[arg(long, default_value_t = 300.0)]
    burst_rate: f64,
    #[arg(long, default_value_t = 5.0)]
    burst_secs: f64,
    /// Members who log in and fetch their token through events-svc in each cycle.
    #[arg(long, default_value_t = 100)]
    logins_per_cycle: u32,
    #[arg(long, default_value_t = 2.0)]
    results_every_secs: f64,
    #[arg(long, default_value_t = 10.0)]
    sample_every_secs: f64,
    /// The services' database, for its size over the run (read-only).
    #[arg(long, env = "EKKLESIA_ADMIN_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    #[command(flatten)]
    run: RunArgs,
}

impl Soak {
    pub async fn run(self, invocation: Invocation) -> anyhow::Result<ExitCode> {
        let settings = SoakSettings {
            minutes: self.minutes,
            cycle_secs: self.cycle_secs,
            trickle_rate: self.trickle_rate,
            burst_rate: self.burst_rate,
            burst_secs: self.burst_secs,
            logins_per_cycle: self.logins_per_cycle,
            results_every_secs: self.results_every_secs,
            sample_every_secs: self.sample_every_secs,
        };
        settings.check()?;
        let run = self.run;
        let body = soak::run(
            run.target()?,
            &run.common(),
            &settings,
            self.database_url.as_deref(),
        )
        .await?;
        let report = invocation.report(
            "soak",
            vec!["Memory is each process's resident set (VmRSS) and CPU its share of one core between samples; the database size is pg_database_size, free space the autovacuum has not returned included.".into()],
            Body::Soak(body),
        );
        finish(report, run.output.out)
    }
}
