//! The migration policy's check (docs/migrations.md): a migration may only *expand* the schema,
//! so the release before it keeps working while it is applied and until the new code is
//! deployed everywhere. A statement that drops, renames or retypes something, removes a
//! privilege or default, or tightens what may be written (NOT NULL, a constraint, a unique
//! index, row-level security, a refusing trigger) on a table that existed before the migration
//! is a *contract* step: refused unless the migration carries a marker naming the earlier
//! migration whose release stopped needing what it removes:
//!
//! ```sql
//! -- contract: 20261201000010_member_soft_delete
//! ```
//!
//! The migrations checked in before the policy are grandfathered by name and checksum (the
//! SHA-384 sqlx records in `_sqlx_migrations.checksum`), so editing one is refused as well.
//!
//! The check reads SQL as tokens, not as a grammar: it knows the statements this project
//! writes and errs on the side of refusing. Function bodies are not executed by a migration
//! and are not inspected; `DO` blocks are (including the strings they `EXECUTE`).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha384};

mod lexer;
mod rules;

use lexer::split;
use rules::{classify, created_objects};

/// The migrations that predate the policy: file name and SHA-384 of its contents. Frozen: a
/// later migration is never added here, and these files are never edited again.
pub const GRANDFATHERED: &[(&str, &str)] = &[
    ("20261125000001_schemas_roles.sql", "1add70380551a32d3ab50151645cfac8663de731a6475aa7522bc62439e041a5ba17b6f8f7c564a45522a00af9892c2f"),
    ("20261125000002_members_events.sql", "fdd34bec7a88e1d40f2f2e9114d739e8cb41eec4ac608f994e1ea106cacb553f954ad25a2e9c129febbc8894e982fd27"),
    ("20261125000003_elections.sql", "d9d903c107af51d1bfb28fb5308c00154020860f85cbf28c366c2290f06a95a7b7cff709219173653a561671ba2f6aac"),
    ("20261125000004_ops.sql", "aa7e567588f9d386df0f4416fccde47eba375f9b2ea0317bbc81f5784a650f323ae6901310dac6fffc1cde198b363e4a"),
    ("20261126000005_member_login.sql", "d068a2032672507069eddbaf60d7d2607fd1d2891682b56cc0f64a7d4ad8fdcd1486dac37739c3f7687c5bee55adc273"),
    ("20261126000006_batch_writer.sql", "2a388455df93a1e076bb3b08b6ac7fabc21e69ba171a30630f55bea7316d628a6f6c01f7f7961a212ad18559652ab45e"),
    ("20261126000007_direct_vote.sql", "69f4d9e5de6cfef6ccc8d465e72ac64a857965834268db96721065ae68212ee6ea9302e2521c0966637dd1a45b0a38e6"),
    ("20261201000008_vote_integrity.sql", "a6ae2e4941f5e96e21a1aa8cea4846418ece5b06420a799dfea65ef119f6f29447c56164355b96592d9da5a23c32232e"),
    ("20261201000009_s2s_nonces.sql", "99e9e7511118d2ffa009ef8460f1a4e96cc0cb11ef81cff9f1e3bdefff17d256f498d508b868ce9ec904ebdb0c8da9a6"),
    ("20261201000010_member_soft_delete.sql", "afb92b1e8bf5fc64c8805e1829a5f0a08269adc91a273383980d63fb45b9688583876cb650ee6f5c216f70b8998df10c"),
    ("20261201000011_token_slots.sql", "605ce3e4906370a5fd16ee44e0a8ed32e39229d1c8faf45c6e23e388f4c57502e215f40d839edabfe3c6854ca3a8a944"),
    ("20261201000012_member_active.sql", "9e57792d64a9d3f30f6e654deb0487295d46bef21f733b8deeffdb4be757405405a20e0d6a435e88b42356df23890fc1"),
    ("20261201000013_platform_ops.sql", "9ffb1534b9d714f0132df18599b0a30e1b2cd013df12e59a31605a0b7a9be10af2e1e144b7298e61af22dc5533d38ab5"),
];

/// What a statement does that the release before it may not survive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contraction {
    /// 1-based line of the statement in its file.
    pub line: usize,
    /// What it does, in words (e.g. "drops column ...").
    pub what: String,
}

/// A migration file's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Contract statements without a marker.
    Refused {
        file: String,
        contractions: Vec<Contraction>,
    },
    /// A marker that names no earlier migration.
    BadMarker { file: String, reason: String },
    /// A grandfathered migration whose contents changed.
    Edited { file: String },
    /// A grandfathered migration that is gone.
    Missing { file: String },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { file, contractions } => {
                for c in contractions {
                    writeln!(f, "{file}:{}: {}", c.line, c.what)?;
                }
                write!(
                    f,
                    "{file}: refused: a contract step needs `-- contract: <earlier migration>` \
                     naming the expand step whose release stopped needing what it removes \
                     (docs/migrations.md)"
                )
            }
            Self::BadMarker { file, reason } => write!(f, "{file}: refused: {reason}"),
            Self::Edited { file } => write!(
                f,
                "{file}: refused: this migration predates the policy and is frozen (its checksum \
                 changed; databases that ran it would refuse to start migrations); write a new one"
            ),
            Self::Missing { file } => write!(
                f,
                "{file}: refused: a migration checked in before the policy is missing (databases \
                 that ran it would refuse to migrate)"
            ),
        }
    }
}

/// Checks every migration in `dir` (`<version>_<description>.sql`); no finding means it passes.
pub fn check_dir(dir: &Path) -> std::io::Result<Vec<Finding>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && version_of(&name).is_some() {
            files.push((name, std::fs::read_to_string(entry.path())?));
        }
    }
    files.sort();
    Ok(check_files(&files))
}

/// Checks a migration set given as (file name, contents), e.g. sqlx's embedded migrations.
pub fn check_files(files: &[(String, String)]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let present: HashSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for (name, _) in GRANDFATHERED {
        if !present.contains(name) {
            findings.push(Finding::Missing {
                file: name.to_string(),
            });
        }
    }
    for (name, sql) in files {
        if let Some((_, checksum)) = GRANDFATHERED.iter().find(|(n, _)| n == name) {
            if hex::encode(Sha384::digest(sql.as_bytes())) != *checksum {
                findings.push(Finding::Edited { file: name.clone() });
            }
            continue;
        }
        let markers = contract_markers(sql);
        if markers.is_empty() {
            let contractions = contractions(sql);
            if !contractions.is_empty() {
                findings.push(Finding::Refused {
                    file: name.clone(),
                    contractions,
                });
            }
            continue;
        }
        let Some(version) = version_of(name) else {
            continue;
        };
        for marker in markers {
            let named = files
                .iter()
                .find(|(n, _)| n.strip_suffix(".sql") == Some(marker.as_str()));
            let reason = match named {
                None => Some(format!(
                    "its marker names `{marker}`, which is not a migration here \
                     (write the file name without `.sql`)"
                )),
                Some((n, _)) if version_of(n).is_some_and(|v| v >= version) => Some(format!(
                    "its marker names `{marker}`, which is not earlier: the expand step \
                     ships in an earlier release than its contract step"
                )),
                Some(_) => None,
            };
            if let Some(reason) = reason {
                findings.push(Finding::BadMarker {
                    file: name.clone(),
                    reason,
                });
            }
        }
    }
    findings
}

/// The migrations a `-- contract: <version>_<description>` line names.
pub fn contract_markers(sql: &str) -> Vec<String> {
    sql.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("--")?.trim();
            let named = rest.strip_prefix("contract:")?.trim();
            Some(named.trim_end_matches(".sql").to_owned())
        })
        .collect()
}

/// The version sqlx reads from a file name (`<digits>_<description>.sql`).
fn version_of(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".sql")?;
    let (version, description) = stem.split_once('_')?;
    (!description.is_empty() && version.bytes().all(|b| b.is_ascii_digit()))
        .then(|| version.parse().ok())
        .flatten()
}

/// Every statement of `sql` that contracts the schema, ignoring markers.
pub fn contractions(sql: &str) -> Vec<Contraction> {
    let statements = split(sql);
    let created = created_objects(&statements);
    let mut added_columns: HashSet<(String, String)> = HashSet::new();
    let mut found = Vec::new();
    for statement in &statements {
        for what in classify(statement, &created, &mut added_columns) {
            found.push(Contraction {
                line: statement.line,
                what,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests;
