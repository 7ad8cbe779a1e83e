//! `drain`: N queued votes on a fresh topic and fresh databases.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use loadtest::drain::{self, DrainSettings};
use loadtest::machine::CpuWatch;
use loadtest::report::Body;

use super::args::OutputArgs;
use super::{finish, Invocation};

#[derive(Args)]
pub struct Drain {
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
}

impl Drain {
    pub async fn run(self, invocation: Invocation) -> anyhow::Result<ExitCode> {
        let settings = DrainSettings {
            votes: self.votes,
            streams: self.streams,
            batch_size: self.batch_size,
            writers: self.writers,
            max_outstanding: self.max_outstanding,
            writer_configs: parse_configs(&self.writer_configs)?,
            single_votes: self.single_votes,
            single_connections: self.single_connections,
            direct_mode_connections: self.direct_connections,
            timeout_secs: self.timeout_secs,
            keep: self.keep,
        };
        let output = self.output;
        let body = drain::run(&settings, &CpuWatch::default(), output.quiet).await?;
        let report = invocation.report(
            "drain",
            vec![
                "The worker runs inside the loadtest process here (its CPU is counted under `loadtest`).".into(),
                "The emulator delivers through StreamingPull at a rate of its own, whatever the consumer does: the end-to-end figure is capped by it, hence the ack-only consumer on the same emulator and the batch writer measured alone.".into(),
            ],
            Body::Drain(body),
        );
        finish(report, output.out)
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
