//! `audit verify --tenant T`: walks a tenant's audit chain (`ops.audit_log`; the queue flag's
//! chain is the platform organisation's) and names its first edited, deleted, inserted or
//! reordered entry. Reads `DATABASE_URL` (the database owner's: the services cannot read the
//! log) and `AUDIT_KEY` (the key the services write with).
//!
//! Exit status: 0 intact, 1 a problem found (the entry is named), 2 could not verify.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::audit::{AuditKey, Entry};

#[derive(Parser)]
#[command(about = "Verify Ekklesia's tamper-evident audit log")]
struct Cli {
    /// The database owner's connection.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// base64url, the key the services write entries with.
    #[arg(long, env = "AUDIT_KEY", hide_env_values = true)]
    audit_key: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Walk a chain and name its first problem.
    Verify {
        /// The tenant (or the platform organisation, for the queue flag's changes).
        #[arg(long)]
        tenant: String,
    },
}

fn describe(entry: &Entry) -> String {
    let election = entry
        .election_id
        .map(|id| format!(" election {id}"))
        .unwrap_or_default();
    let change = entry
        .queue_mode_change
        .map(|id| format!(" queue-mode change {id}"))
        .unwrap_or_default();
    format!(
        "#{} {}{election}{change} at {} by {} {}",
        entry.seq,
        entry.event,
        entry.at.to_rfc3339(),
        entry.actor,
        entry.summary
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("audit: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let key =
        AuditKey::from_base64(&cli.audit_key).map_err(|e| anyhow::anyhow!("AUDIT_KEY: {e}"))?;
    let Command::Verify { tenant } = cli.command;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&cli.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect: {}", shared::db::redact(&e)))?;
    let verdict = shared::audit::verify(&mut conn, &key, &tenant)
        .await
        .map_err(|e| anyhow::anyhow!("reading the audit log: {}", shared::db::redact(&e)))?;
    let mut out = std::io::stdout().lock();
    let code = match (&verdict.finding, &verdict.named) {
        (None, _) => {
            match &verdict.last {
                None => {
                    let _ = writeln!(out, "chain {tenant}: no entries");
                }
                Some(last) => {
                    let _ = writeln!(
                        out,
                        "chain {tenant}: intact, {} entries; last {} mac {}",
                        verdict.entries,
                        describe(last),
                        hex::encode(&last.mac)
                    );
                }
            }
            ExitCode::SUCCESS
        }
        (Some(finding), named) => {
            let _ = writeln!(out, "chain {tenant}: {finding}");
            if let Some(entry) = named {
                let _ = writeln!(out, "  as stored: {}", describe(entry));
            }
            if verdict.authentic == 0 {
                let _ = writeln!(
                    out,
                    "  no entry of the chain verifies: is AUDIT_KEY the key the services use?"
                );
            }
            ExitCode::from(1)
        }
    };
    Ok(code)
}
