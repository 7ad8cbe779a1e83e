//! The demo commands: development keys, a membership export, and the journey through every
//! service.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use loadtest::journey;

#[derive(Args)]
pub struct Keys {
    #[arg(long, default_value = "demo-party")]
    tenant: String,
}

impl Keys {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        print!("{}", loadtest::keys::dev_keys(&self.tenant)?);
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
pub struct MembersCsv {
    #[arg(long, default_value_t = 5)]
    voters: u32,
    #[arg(long)]
    platform_ops: bool,
}

impl MembersCsv {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if self.platform_ops {
            print!("{}", journey::platform_ops_csv());
        } else {
            if self.voters >= journey::PLATFORM_OPERATOR {
                bail!("--voters must be below {}", journey::PLATFORM_OPERATOR);
            }
            print!("{}", journey::members_csv(self.voters));
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
pub struct Journey {
    #[arg(long, env = "MEMBERS_URL", default_value = "http://127.0.0.1:8082")]
    members_url: String,
    #[arg(long, env = "EVENTS_URL", default_value = "http://127.0.0.1:8081")]
    events_url: String,
    #[arg(long, env = "INGEST_URL", default_value = "http://127.0.0.1:8080")]
    ingest_url: String,
    /// Members voting (the first N of `members-csv`).
    #[arg(long, default_value_t = 5)]
    voters: u32,
}

impl Journey {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let urls = journey::Urls {
            members: self.members_url,
            events: self.events_url,
            ingest: self.ingest_url,
        };
        journey::run(urls, self.voters).await?;
        Ok(ExitCode::SUCCESS)
    }
}
