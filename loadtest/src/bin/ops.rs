//! `ops`: what the person on duty runs (docs/runbook.md).
//!
//!   ops canary --dev-login NATIONAL_ID      (local profile)  | --session TOKEN (an admin's)
//!   ops status --database-url URL
//!
//! Service addresses from MEMBERS_URL, EVENTS_URL, INGEST_URL, ELECTIONS_URL (ingest's internal
//! listener) and WORKER_URL (the local stack's by default). Exits 1 when the canary fails (the
//! failing hop is named) or a service is not ready.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadtest::ops::{self, Patience, Urls};

#[derive(Parser)]
#[command(about = "Meeting-day checks: a canary vote end to end, and the status of the system")]
struct Cli {
    #[command(flatten)]
    urls: UrlArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct UrlArgs {
    #[arg(long, env = "MEMBERS_URL", default_value = "http://127.0.0.1:8082")]
    members_url: String,
    #[arg(long, env = "EVENTS_URL", default_value = "http://127.0.0.1:8081")]
    events_url: String,
    #[arg(long, env = "INGEST_URL", default_value = "http://127.0.0.1:8080")]
    ingest_url: String,
    #[arg(long, env = "ELECTIONS_URL", default_value = "http://127.0.0.1:8079")]
    elections_url: String,
    #[arg(long, env = "WORKER_URL", default_value = "http://127.0.0.1:9090")]
    worker_url: String,
}

#[derive(Subcommand)]
enum Command {
    /// Cast one vote end to end in a canary election of its own, as an admin of the tenant:
    /// create, open, token, vote, recorded, close, sealed with a tally of one.
    Canary {
        /// An admin's session token (`EKKLESIA_SESSION`; never printed).
        #[arg(
            long,
            env = "EKKLESIA_SESSION",
            hide_env_values = true,
            conflicts_with = "dev_login"
        )]
        session: Option<String>,
        /// Log in as this national id by dev login instead (local profile only).
        #[arg(long)]
        dev_login: Option<String>,
        /// How long the vote may take to be recorded.
        #[arg(long, default_value_t = 30)]
        recorded_within_secs: u64,
        /// How long the close may take to give final results.
        #[arg(long, default_value_t = 90)]
        sealed_within_secs: u64,
    },
    /// Readiness of every service, the queue flag and what each ingest has seen of it, votes
    /// still on their way, elections awaiting their seal, dead letters.
    Status {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let urls = Urls {
        members: cli.urls.members_url,
        events: cli.urls.events_url,
        ingest: cli.urls.ingest_url,
        elections: cli.urls.elections_url,
        worker: cli.urls.worker_url,
    };
    match cli.command {
        Command::Canary {
            session,
            dev_login,
            recorded_within_secs,
            sealed_within_secs,
        } => {
            let session = match (session, dev_login) {
                (Some(session), _) => session,
                (None, Some(national_id)) => ops::dev_login(&urls.members, &national_id).await?,
                (None, None) => anyhow::bail!("give --session (an admin's) or --dev-login"),
            };
            let patience = Patience {
                recorded: Duration::from_secs(recorded_within_secs),
                sealed: Duration::from_secs(sealed_within_secs),
            };
            let report = ops::canary(&urls, &session, patience).await;
            report.print();
            Ok(match report.failed() {
                Some(_) => ExitCode::FAILURE,
                None => ExitCode::SUCCESS,
            })
        }
        Command::Status { database_url } => {
            let status = ops::status(&urls, &database_url).await?;
            status.print();
            Ok(if status.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
