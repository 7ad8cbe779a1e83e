//! Read or flip the live queue flag: `queue-mode get`, `queue-mode set on|off --actor NAME`.
//! Every ingest instance follows a change within `QUEUE_MODE_POLL_MS`; each change is audited.
//!
//! The emergency path, for when no platform operator's session is at hand (events-svc or
//! members-fn down): run it with the database owner's credentials (in production a personal
//! Cloud SQL IAM login). `--actor` is free text, so the audit also records the database login
//! (`session_user`), which the operator cannot choose. Not subject to events-svc's change
//! interval, but its changes count for it. `set` needs `AUDIT_KEY`: the change is appended to
//! the platform organisation's audit chain (`PLATFORM_ORG`) in its transaction.

use std::io::Write;

use clap::{Parser, Subcommand};
use sqlx::PgPool;

#[derive(Parser)]
#[command(about = "Read or change Ekklesia's live queue flag")]
struct Cli {
    /// A connection allowed to call ops.set_queue_mode: the database owner's (the login is
    /// recorded in the audit).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// base64url: the audit log's key (as the services hold it); a change is appended to the
    /// platform organisation's audit chain, in the change's transaction.
    #[arg(long, env = "AUDIT_KEY", hide_env_values = true)]
    audit_key: Option<String>,
    /// The platform organisation, whose audit chain records the flag's changes.
    #[arg(long, env = "PLATFORM_ORG", default_value = shared::domain::DEFAULT_PLATFORM_ORG)]
    platform_org: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the flag and the last changes.
    Get,
    /// Switch queue mode on or off.
    Set {
        #[arg(value_parser = ["on", "off"])]
        mode: String,
        /// Who is making the change (recorded in the audit trail, next to the database login).
        #[arg(long)]
        actor: String,
    },
}

/// Like `println!`, but a closed pipe (`queue-mode get | head -1`) is not a panic.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&cli.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect: {}", shared::db::redact(&e)))?;
    match cli.command {
        Command::Get => get(&pool, &mut out).await,
        Command::Set {
            ref mode,
            ref actor,
        } => set(&cli, &pool, mode == "on", actor, &mut out).await,
    }
}

/// Prints the flag and its last five changes.
async fn get(pool: &PgPool, out: &mut impl Write) -> anyhow::Result<()> {
    match ingest::queue_mode::QueueMode::read(pool).await? {
        Some(true) => say!(out, "queue mode: on"),
        Some(false) => say!(out, "queue mode: off (direct)"),
        None => say!(
            out,
            "queue mode: not set (each ingest uses QUEUE_MODE_DEFAULT)"
        ),
    }
    let audit = sqlx::query!(
        "SELECT changed_at, changed_by, database_user, old_enabled, new_enabled \
         FROM ops.queue_mode_audit ORDER BY id DESC LIMIT 5",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    for row in audit {
        let database_user = row.database_user.as_deref().unwrap_or("?");
        say!(
            out,
            "  {} {} (database user {database_user}): {} -> {}",
            row.changed_at,
            row.changed_by,
            label(row.old_enabled),
            label(Some(row.new_enabled))
        );
    }
    Ok(())
}

/// Sets the flag (audited) and says who did it, as which database login.
async fn set(
    cli: &Cli,
    pool: &PgPool,
    on: bool,
    actor: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let key = cli
        .audit_key
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("set AUDIT_KEY: every change is audited"))
        .and_then(|k| {
            shared::audit::AuditKey::from_base64(k).map_err(|e| anyhow::anyhow!("AUDIT_KEY: {e}"))
        })?;
    let chain = shared::domain::TenantId::parse(&cli.platform_org)
        .map_err(|_| anyhow::anyhow!("PLATFORM_ORG is not a tenant id"))?;
    let (old, new) = ingest::queue_mode::set(pool, on, actor, &key, &chain)
        .await
        .map_err(|e| anyhow::anyhow!("{}", shared::db::redact(&e)))?;
    let database_user = sqlx::query_scalar!(r#"SELECT session_user::text AS "user!""#)
        .fetch_one(pool)
        .await?;
    say!(
        out,
        "queue mode: {} -> {} (by {actor}, database user {database_user}); every ingest follows within QUEUE_MODE_POLL_MS",
        label(old),
        label(Some(new))
    );
    Ok(())
}

fn label(mode: Option<bool>) -> &'static str {
    match mode {
        Some(true) => "on",
        Some(false) => "off",
        None => "unset",
    }
}
