//! Refuses migrations that break the release before them (docs/migrations.md):
//! `migration-check [DIR]` (default `infra/migrations`) prints every refusal and exits 1, or
//! exits 0 when every migration expands the schema, is a marked contract step, or is a
//! grandfathered one unchanged.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("infra/migrations"));
    let findings = match shared::migration_policy::check_dir(&dir) {
        Ok(findings) => findings,
        Err(e) => {
            eprintln!("migration-check: cannot read {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    for finding in &findings {
        println!("{finding}");
    }
    if findings.is_empty() {
        println!("migration-check: {} passes the policy", dir.display());
        ExitCode::SUCCESS
    } else {
        println!("migration-check: {} refused", findings.len());
        ExitCode::FAILURE
    }
}
