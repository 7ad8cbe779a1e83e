//! `loadtest`: Ekklesia's load-test harness and demo client. See `loadtest --help`, the
//! crate documentation (`src/lib.rs`) and `BENCHMARKS.md`; `infra/local/loadtest.sh` brings a
//! release-built stack up and runs it.

use std::process::ExitCode;

use clap::Parser;

mod commands;

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
    command: commands::Command,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let invocation = commands::Invocation::now();
    Cli::parse().command.run(invocation).await
}
