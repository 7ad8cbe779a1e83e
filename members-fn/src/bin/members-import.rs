//! Loads the party's membership export into the registry of one organisation.
//!
//!   members-import --org party-a members.csv [--dry-run]
//!
//! Prints what changed as JSON (`added`, `updated`, `removed`, `unchanged`; a person back after
//! a removal is `added`, under their old member id). A file with any bad line changes nothing
//! and lists every bad line. Reads `DATABASE_URL` (the members role) and `PLATFORM_ORG`
//! (default `platform`): only that organisation's file may grant the `ops` role. As a Cloud Run
//! job it stops its Cloud SQL Auth Proxy sidecar when done (`CLOUD_SQL_PROXY_QUIT_URL`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use members_fn::registry;
use shared::config::{DatabaseSettings, Env};
use shared::domain::{TenantId, DEFAULT_PLATFORM_ORG};

#[derive(Parser)]
#[command(about = "Load a membership export (CSV) into the member registry")]
struct Args {
    /// The organisation (tenant) the file is the export of.
    #[arg(long)]
    org: String,
    /// The CSV file (`-` reads standard input).
    file: PathBuf,
    /// Report what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::try_parse();
    let result = match args {
        Ok(args) => run(args).await,
        Err(e) => Err(e.into()),
    };
    // On Cloud Run the proxy sidecar would otherwise keep the job's task running.
    shared::db::quit_proxy(
        std::env::var(shared::db::PROXY_QUIT_URL_VAR)
            .ok()
            .as_deref(),
    )
    .await;
    match result {
        Ok(Outcome::Imported) => Ok(()),
        Ok(Outcome::BadFile) => std::process::exit(2),
        // Usage errors and --help print as clap prints them, with clap's exit code.
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(usage) => usage.exit(),
            Err(e) => Err(e),
        },
    }
}

enum Outcome {
    Imported,
    /// The file had bad lines (printed); nothing was imported.
    BadFile,
}

async fn run(args: Args) -> anyhow::Result<Outcome> {
    let tenant = TenantId::parse(&args.org).context("--org")?;
    let mut env = Env::from_process();
    let database = DatabaseSettings::from_env(&mut env);
    let platform_org = TenantId::parse(&env.string_or("PLATFORM_ORG", DEFAULT_PLATFORM_ORG));
    if platform_org.is_err() {
        env.problem("PLATFORM_ORG is not a tenant id (2-63 of a-z, 0-9, -)");
    }
    let database = env.finish(database)?;
    let platform_org = platform_org.context("PLATFORM_ORG")?;
    let records = if args.file.as_os_str() == "-" {
        registry::parse_csv(std::io::stdin().lock(), &tenant, &platform_org)
    } else {
        let file = std::fs::File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        registry::parse_csv(file, &tenant, &platform_org)
    };
    let records = match records {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Outcome::BadFile);
        }
    };
    let pool = shared::db::pool(&database)?;
    let report = registry::sync(&pool, &tenant, &records, args.dry_run).await?;
    println!(
        "{}",
        serde_json::json!({ "org": tenant.as_str(), "dry_run": args.dry_run, "report": report })
    );
    Ok(Outcome::Imported)
}
