//! `loadtest`: Ekklesia's load-test harness and demo client. See `loadtest --help`, the
//! crate documentation (`src/lib.rs`) and `BENCHMARKS.md`; `infra/local/loadtest.sh` brings a
//! release-built stack up and runs it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use loadtest::fire::RetryPolicy;
use loadtest::machine::CpuWatch;
use loadtest::report::{Body, Report};
use loadtest::scenario::{self, Common, Mode, StressSettings};
use loadtest::schedule::Schedule;
use loadtest::target::{Target, TargetConfig};

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Ekklesia's load-test harness and demo client",
    long_about = "Ekklesia's load-test harness and demo client.\n\n\
        Scenarios against the running services (infra/local/loadtest.sh starts a release-built \
        stack and runs them): meeting, burst-1000, custom, stress, tokens. Each runs in queue \
        mode and in direct mode (switching the live flag as ops), measures every request from \
        its scheduled send time (open loop), checks the invariants and writes report.json, \
        report.md and chart.svg. `drain` needs no running service: it makes its own topic and \
        databases. Exit status 1 when an invariant check fails.\n\n\
        Only loopback addresses are accepted. Secrets (signing and S2S keys) are read from the \
        environment and never printed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print development keys for a tenant as environment assignments (local stack only).
    Keys {
        #[arg(long, default_value = "demo-party")]
        tenant: String,
    },
    /// Print a demo membership export: one admin and `--voters` members; with `--platform-ops`
    /// the platform organisation's instead (one platform operator, role `ops`).
    MembersCsv {
        #[arg(long, default_value_t = 5)]
        voters: u32,
        #[arg(long)]
        platform_ops: bool,
    },
    /// The whole journey through every running service, in queue and in direct mode.
    Journey {
        #[arg(long, env = "MEMBERS_URL", default_value = "http://127.0.0.1:8082")]
        members_url: String,
        #[arg(long, env = "EVENTS_URL", default_value = "http://127.0.0.1:8081")]
        events_url: String,
        #[arg(long, env = "INGEST_URL", default_value = "http://127.0.0.1:8080")]
        ingest_url: String,
        /// Members voting (the first N of `members-csv`).
        #[arg(long, default_value_t = 5)]
        voters: u32,
    },
    /// The meeting spike: 300 votes/s for 5 s, in queue mode and in direct mode.
    Meeting {
        #[arg(long, default_value_t = 300.0)]
        rate: f64,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// N votes all at once (default 1,000), in queue mode and in direct mode.
    #[command(name = "burst-1000", visible_alias = "burst")]
    Burst {
        #[arg(long, default_value_t = 1000)]
        votes: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Any open-loop schedule: constant:RATE:SECS, ramp:FROM:TO:SECS or burst:N.
    Custom {
        #[arg(long)]
        schedule: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Step the rate up until p99 exceeds the limit or a request fails, in both modes; then
    /// measure the raw single-vote transaction rate of this PostgreSQL (direct mode's ceiling).
    Stress {
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
    },
    /// Token issuance through members-fn and events-svc, open loop (issue 4: 50 requests/s,
    /// p99 under 100 ms); then the issued tokens vote at once in queue mode.
    Tokens {
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Do not cast the issued tokens afterwards.
        #[arg(long)]
        no_vote: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// A meeting-like pattern for a long time (default 30 minutes): cycles of one election
    /// each, alternating the modes, with logins and tokens through events-svc, a steady
    /// trickle of votes with a burst in the middle, results reads, and every invariant checked
    /// after each burst; each service's memory and CPU and the database size over time.
    Soak {
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
    },
    /// Drain N queued votes on a fresh topic and fresh databases: end to end through the
    /// emulator vs an ack-only consumer vs the worker's batch writer alone vs raw SQL.
    Drain {
        #[arg(long, default_value_t = 100_000)]
        votes: usize,
        /// StreamingPull streams (the worker's STREAMS), for the worker and the ack-only consumer.
        #[arg(long, default_value_t = 2)]
        streams: usize,
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        #[arg(long, default_value_t = 2)]
        writers: usize,
        #[arg(long, default_value_t = 2000)]
        max_outstanding: i64,
        /// BATCHxWRITERS configurations for the batch writer and the batched ceiling (the
        /// first should be the worker's default).
        #[arg(long, value_delimiter = ',', default_value = "500x2,2000x3")]
        writer_configs: Vec<String>,
        #[arg(long, default_value_t = 20_000)]
        single_votes: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        single_connections: Vec<u32>,
        #[arg(long, default_value_t = 3)]
        direct_connections: u32,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Keep the databases, topic and subscriptions afterwards.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Args, Clone)]
struct ServiceArgs {
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
struct OutputArgs {
    /// Report directory (default: target/loadtest/<scenario>-<UTC timestamp>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bars or progress lines (the summary is still printed).
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct RunArgs {
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
    output: OutputArgs,
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
    fn common(&self) -> Common {
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

    fn target(&self) -> anyhow::Result<Arc<Target>> {
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

fn parse_configs(raw: &[String]) -> anyhow::Result<Vec<(usize, usize)>> {
    raw.iter()
        .map(|c| {
            let (b, w) = c
                .split_once('x')
                .with_context(|| format!("writer configuration `{c}`: expected BATCHxWRITERS"))?;
            Ok((
                b.trim()
                    .parse()
                    .with_context(|| format!("batch size in `{c}`"))?,
                w.trim()
                    .parse()
                    .with_context(|| format!("writers in `{c}`"))?,
            ))
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let started_at = chrono::Utc::now();
    let command = command_line();
    match Cli::parse().command {
        Command::Keys { tenant } => {
            print!("{}", loadtest::keys::dev_keys(&tenant)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::MembersCsv {
            voters,
            platform_ops,
        } => {
            if platform_ops {
                print!("{}", loadtest::journey::platform_ops_csv());
            } else {
                if voters >= loadtest::journey::PLATFORM_OPERATOR {
                    bail!(
                        "--voters must be below {}",
                        loadtest::journey::PLATFORM_OPERATOR
                    );
                }
                print!("{}", loadtest::journey::members_csv(voters));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Journey {
            members_url,
            events_url,
            ingest_url,
            voters,
        } => {
            loadtest::journey::run(
                loadtest::journey::Urls {
                    members: members_url,
                    events: events_url,
                    ingest: ingest_url,
                },
                voters,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Meeting { rate, secs, run } => {
            let schedule = Schedule::constant(rate, secs)?;
            let body = scenario::votes(run.target()?, &run.common(), &schedule).await?;
            let report = Report::new(
                "meeting",
                started_at,
                command,
                Vec::new(),
                Body::Votes(body),
            );
            finish(report, run.output.out)
        }
        Command::Burst { votes, run } => {
            let schedule = Schedule::burst(votes)?;
            let body = scenario::votes(run.target()?, &run.common(), &schedule).await?;
            let name = if votes == 1000 { "burst-1000" } else { "burst" };
            let report = Report::new(name, started_at, command, Vec::new(), Body::Votes(body));
            finish(report, run.output.out)
        }
        Command::Custom { schedule, run } => {
            let schedule = Schedule::parse(&schedule)?;
            let body = scenario::votes(run.target()?, &run.common(), &schedule).await?;
            let report = Report::new("custom", started_at, command, Vec::new(), Body::Votes(body));
            finish(report, run.output.out)
        }
        Command::Stress {
            start_rate,
            factor,
            step_secs,
            max_steps,
            p99_limit_ms,
            tries_per_step,
            budget_secs,
            no_ceiling,
            direct_connections,
            run,
        } => {
            if !(start_rate >= 1.0
                && factor > 1.0
                && step_secs >= 0.5
                && (1..=30).contains(&max_steps)
                && (1..=5).contains(&tries_per_step))
            {
                bail!("stress needs --start-rate ≥ 1, --factor > 1, --step-secs ≥ 0.5, 1..=30 steps and 1..=5 tries per step");
            }
            let settings = StressSettings {
                start_rate,
                factor,
                step_seconds: step_secs,
                max_steps,
                p99_limit_ms,
                tries_per_step,
                budget_seconds: budget_secs.min(1800.0),
            };
            let common = run.common();
            let mut body = scenario::stress(run.target()?, &common, &settings).await?;
            if no_ceiling {
                body.ceiling_note =
                    Some("The single-vote ceiling was skipped (--no-ceiling).".into());
            } else {
                match single_ceiling(direct_connections, common.quiet).await {
                    Ok(c) => body.single_vote_ceiling = Some(c),
                    Err(e) => {
                        body.ceiling_note = Some(format!(
                            "The single-vote ceiling could not be measured: {e:#}"
                        ))
                    }
                }
            }
            let report = Report::new(
                "stress",
                started_at,
                command,
                Vec::new(),
                Body::Stress(body),
            );
            finish(report, run.output.out)
        }
        Command::Tokens {
            rate,
            secs,
            no_vote,
            run,
        } => {
            let schedule = Schedule::constant(rate, secs)?;
            if schedule.requests() > 20_000 {
                bail!("the tokens scenario logs every member in: at most 20,000 requests");
            }
            let body = scenario::tokens(run.target()?, &run.common(), &schedule, !no_vote).await?;
            let report = Report::new(
                "tokens",
                started_at,
                command,
                vec!["Members log in with members-fn's dev login (the OIDC round trip to the identity provider is not part of this measurement); the load generator is one client address.".into()],
                Body::Tokens(body),
            );
            finish(report, run.output.out)
        }
        Command::Soak {
            minutes,
            cycle_secs,
            trickle_rate,
            burst_rate,
            burst_secs,
            logins_per_cycle,
            results_every_secs,
            sample_every_secs,
            database_url,
            run,
        } => {
            let settings = loadtest::soak::SoakSettings {
                minutes,
                cycle_secs,
                trickle_rate,
                burst_rate,
                burst_secs,
                logins_per_cycle,
                results_every_secs,
                sample_every_secs,
            };
            settings.check()?;
            let body = loadtest::soak::run(
                run.target()?,
                &run.common(),
                &settings,
                database_url.as_deref(),
            )
            .await?;
            let report = Report::new(
                "soak",
                started_at,
                command,
                vec!["Memory is each process's resident set (VmRSS) and CPU its share of one core between samples; the database size is pg_database_size, free space the autovacuum has not returned included.".into()],
                Body::Soak(body),
            );
            finish(report, run.output.out)
        }
        Command::Drain {
            votes,
            streams,
            batch_size,
            writers,
            max_outstanding,
            writer_configs,
            single_votes,
            single_connections,
            direct_connections,
            timeout_secs,
            keep,
            output,
        } => {
            let settings = loadtest::drain::DrainSettings {
                votes,
                streams,
                batch_size,
                writers,
                max_outstanding,
                writer_configs: parse_configs(&writer_configs)?,
                single_votes,
                single_connections,
                direct_mode_connections: direct_connections,
                timeout_secs,
                keep,
            };
            let body = loadtest::drain::run(&settings, &CpuWatch::default(), output.quiet).await?;
            let report = Report::new(
                "drain",
                started_at,
                command,
                vec![
                    "The worker runs inside the loadtest process here (its CPU is counted under `loadtest`).".into(),
                    "The emulator delivers through StreamingPull at a rate of its own, whatever the consumer does: the end-to-end figure is capped by it, hence the ack-only consumer on the same emulator and the batch writer measured alone.".into(),
                ],
                Body::Drain(body),
            );
            finish(report, output.out)
        }
    }
}

/// The raw single-vote transaction rate on a fresh database (as in `drain`).
async fn single_ceiling(
    direct_connections: u32,
    quiet: bool,
) -> anyhow::Result<loadtest::ceiling::SingleCeiling> {
    let ui = scenario::Ui { quiet };
    ui.say("measuring the raw single-vote transaction rate on a fresh database");
    let db = loadtest::ceiling::fresh_database().await?;
    let tenant = shared::domain::TenantId::parse("ceiling-party")?;
    let election = uuid::Uuid::new_v4();
    let votes = loadtest::ceiling::synthetic_votes(&tenant, election, 20_000);
    let outcome = loadtest::ceiling::single_ceiling(
        &db,
        &tenant,
        election,
        &votes,
        &[1, direct_connections.max(1)],
        direct_connections.max(1),
        Duration::from_secs(8),
    )
    .await;
    let _ = loadtest::ceiling::drop_database(db).await;
    outcome
}
