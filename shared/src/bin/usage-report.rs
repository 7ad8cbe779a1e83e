//! `usage-report --month YYYY-MM [--format md|csv]`: per tenant, the month's elections, tokens
//! issued, votes recorded, logins, requests, peak votes/s and an estimated cost share from unit
//! prices (`shared::usage::UnitPrices`, each overridable here). Reads `DATABASE_URL` (the
//! database owner's: the report reads every tenant's rows).

use std::io::Write;

use clap::{Parser, ValueEnum};
use shared::usage::{Month, UnitPrices};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Md,
    Csv,
}

#[derive(Parser)]
#[command(about = "Ekklesia's usage and estimated cost per tenant for one month (UTC)")]
struct Cli {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The calendar month, YYYY-MM (UTC).
    #[arg(long)]
    month: Month,
    #[arg(long, value_enum, default_value = "md")]
    format: Format,
    /// USD per election created.
    #[arg(long, default_value_t = UnitPrices::default().election)]
    price_election: f64,
    /// USD per voting token issued.
    #[arg(long, default_value_t = UnitPrices::default().token)]
    price_token: f64,
    /// USD per vote recorded.
    #[arg(long, default_value_t = UnitPrices::default().vote)]
    price_vote: f64,
    /// USD per login (session issued).
    #[arg(long, default_value_t = UnitPrices::default().login)]
    price_login: f64,
    /// USD per 1,000 requests.
    #[arg(long, default_value_t = UnitPrices::default().thousand_requests)]
    price_1k_requests: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let prices = UnitPrices {
        election: cli.price_election,
        token: cli.price_token,
        vote: cli.price_vote,
        login: cli.price_login,
        thousand_requests: cli.price_1k_requests,
    };
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&cli.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect: {}", shared::db::redact(&e)))?;
    let report = shared::usage::report(&mut conn, cli.month, prices)
        .await
        .map_err(|e| anyhow::anyhow!("reading usage: {}", shared::db::redact(&e)))?;
    let text = match cli.format {
        Format::Md => report.markdown(),
        Format::Csv => report.csv(),
    };
    // A closed pipe (`usage-report ... | head`) is not a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}
