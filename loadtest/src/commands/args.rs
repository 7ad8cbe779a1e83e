//! The arguments the scenarios against the running services share: where the services are,
//! how to run, and where the report goes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use loadtest::fire::RetryPolicy;
use loadtest::machine::CpuWatch;
use loadtest::scenario::{Common, Mode};
use loadtest::target::{Target, TargetConfig};

#[derive(Args, Clone)]
pub struct ServiceArgs {
    #[arg(
        long,
        alias = "ingest",
        env = "INGEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    ingest_url: String,
    /// ingest's internal listener (the elections side's S2S API and ingest's /metrics).
    #[arg(long, env = "ELECTIONS_URL", default_value = "http://127.0.0.1:8079")]
    elections_url: String,
    #[arg(
        long,
        alias = "events",
        env = "EVENTS_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    events_url: String,
    #[arg(
        long,
        alias = "members",
        env = "MEMBERS_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    members_url: String,
    /// The worker's base URL (its /metrics show when replayed votes were dropped as duplicates).
    #[arg(long, env = "WORKER_URL", default_value = "http://127.0.0.1:9090")]
    worker_url: String,
    #[arg(long, env = "DEMO_TENANT", default_value = "demo-party")]
    tenant: String,
    /// `kid:tenant:seed`: the events side's voting-token signing keys (bulk path).
    #[arg(long, env = "VOTING_TOKEN_SIGNING_KEYS", hide_env_values = true)]
    signing_keys: String,
    /// `keyid:tenant:secret`: the S2S keys (bulk path, results).
    #[arg(long, env = "S2S_KEYS", hide_env_values = true)]
    s2s_keys: String,
    /// The admin in the registry; default: the first of `members-csv`.
    #[arg(long)]
    admin_national_id: Option<String>,
    /// A platform operator (`ops` in the platform organisation), for the queue flag; default:
    /// the one of `members-csv --platform-ops`.
    #[arg(long)]
    ops_national_id: Option<String>,
}

#[derive(Args, Clone)]
pub struct OutputArgs {
    /// Report directory (default: target/loadtest/<scenario>-<UTC timestamp>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars or progress lines (the summary is still printed).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    services: ServiceArgs,
    /// Modes to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "queue,direct"
    )]
    modes: Vec<Mode>,
    /// Prepare tokens through members-fn dev login and events-svc (modest N; the members
    /// must be in the registry) instead of the bulk path.
    #[arg(long)]
    via_events: bool,
    #[arg(long, default_value_t = 8)]
    events_concurrency: usize,
    /// Client retries after 429/503 (honouring Retry-After) or a transport error.
    #[arg(long, default_value_t = 3)]
    max_retries: u32,
    #[arg(long, default_value_t = 5)]
    max_retry_after_secs: u64,
    #[arg(long, default_value_t = 10)]
    request_timeout_secs: u64,
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// How long after the spike every accepted vote must be recorded.
    #[arg(long, default_value_t = 60)]
    drain_timeout_secs: u64,
    /// Accepted tokens sent again after the run (they must not count twice).
    #[arg(long, default_value_t = 10)]
    replays: usize,
    /// At most this many receipts are looked up after the run.
    #[arg(long, default_value_t = 5000)]
    receipt_checks: usize,
    /// Leave the elections open (skip the close and final-results check).
    #[arg(long)]
    no_close: bool,
    /// Account CPU of a process in the report: NAME=PID (repeatable).
    #[arg(long = "pid", value_parser = parse_pid)]
    pids: Vec<(String, u32)>,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn parse_pid(raw: &str) -> Result<(String, u32), String> {
    let (name, pid) = raw
        .split_once('=')
        .ok_or_else(|| "expected NAME=PID".to_owned())?;
    Ok((
        name.to_owned(),
        pid.parse().map_err(|_| format!("not a pid: {pid}"))?,
    ))
}

impl RunArgs {
    pub fn common(&self) -> Common {
        Common {
            modes: self.modes.clone(),
            via_events: self.via_events,
            events_concurrency: self.events_concurrency.max(1),
            policy: RetryPolicy {
                max_retries: self.max_retries,
                max_retry_after: Duration::from_secs(self.max_retry_after_secs),
                transport_backoff: Duration::from_millis(250),
                request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
            },
            max_in_flight: self.max_in_flight.max(1),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            replays: self.replays,
            receipt_checks: self.receipt_checks,
            close: !self.no_close,
            cpu: CpuWatch {
                pids: self.pids.clone(),
            },
            quiet: self.output.quiet,
        }
    }

    pub fn target(&self) -> anyhow::Result<Arc<Target>> {
        let s = &self.services;
        Ok(Arc::new(Target::new(TargetConfig {
            ingest_url: s.ingest_url.clone(),
            elections_url: s.elections_url.clone(),
            events_url: s.events_url.clone(),
            members_url: s.members_url.clone(),
            worker_url: Some(s.worker_url.clone()),
            tenant: s.tenant.clone(),
            signing_keys: s.signing_keys.clone(),
            s2s_keys: s.s2s_keys.clone(),
            admin_national_id: s
                .admin_national_id
                .clone()
                .unwrap_or_else(|| members_fn::national_id::synthetic(0).as_str().to_owned()),
            ops_national_id: s.ops_national_id.clone().unwrap_or_else(|| {
                members_fn::national_id::synthetic(loadtest::journey::PLATFORM_OPERATOR)
                    .as_str()
                    .to_owned()
            }),
        })?))
    }
}
