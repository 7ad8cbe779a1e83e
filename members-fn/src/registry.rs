//! The member registry: loaded from the party's membership export (CSV) and kept in step with
//! it. An import makes the tenant's registry equal to the file: new people are added, changed
//! names or roles updated, people no longer in the file removed. Running the same file twice
//! changes nothing the second time.
//!
//! Removal keeps the row and marks it (`removed_at`): a removed member cannot log in, and if
//! they are in a later export again they get back the same member id, which voting-token
//! issuance is keyed on (one token per election and member id).
//!
//! The file has a header row with `national_id` (or `kennitala`), optionally `name` and
//! `roles` (`member`, `admin`, `ops`, separated by `;` or spaces; `member` is implied).
//!
//! `ops` switches the platform-wide queue flag, so a party cannot grant it to its own members:
//! only the platform organisation's registry (`PLATFORM_ORG`, default `platform`), which the
//! platform team loads, may list it. Any other organisation's file naming `ops` is refused
//! with the line, and nothing is imported.

use std::collections::HashSet;
use std::io::Read;

use serde::Serialize;
use shared::domain::TenantId;
use shared::session::Role;
use sqlx::{PgConnection, PgPool};

use crate::national_id::NationalId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub national_id: NationalId,
    pub name: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    pub unchanged: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Every bad line, so the export can be fixed in one go. Nothing was changed.
    #[error("the file has {} problem(s); nothing was changed:\n{}", .0.len(), .0.join("\n"))]
    Invalid(Vec<String>),
    #[error("the file lists no members; refusing to empty the registry")]
    Empty,
    #[error("database: {}", shared::db::redact(.0))]
    Database(#[from] sqlx::Error),
}

/// Parses `org`'s export. Lines are numbered as a spreadsheet shows them (header = line 1).
/// Errors name the line and the problem, not the national id. The `ops` role is accepted only
/// when `org` is `platform_org`.
pub fn parse_csv(
    input: impl Read,
    org: &TenantId,
    platform_org: &TenantId,
) -> Result<Vec<MemberRecord>, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| ImportError::Invalid(vec![format!("line 1: {e}")]))?;
    let columns = Columns::of(headers)?;
    let rules = RoleRules {
        ops_allowed: org == platform_org,
        platform_org,
    };
    let mut problems = Vec::new();
    let mut records = Vec::new();
    let mut seen = HashSet::new();
    for (index, row) in reader.records().enumerate() {
        let line = index + 2;
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let national_id = match NationalId::parse(columns.national_id(&row)) {
            Ok(id) => id,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        if !seen.insert(national_id.clone()) {
            problems.push(format!(
                "line {line}: this national id appears twice in the file"
            ));
            continue;
        }
        records.push(MemberRecord {
            national_id,
            name: columns.name(&row).to_owned(),
            roles: rules.roles(columns.roles(&row), &mut problems, line),
        });
    }
    if !problems.is_empty() {
        return Err(ImportError::Invalid(problems));
    }
    if records.is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(records)
}

/// Where the header row puts each field.
struct Columns {
    national_id: usize,
    name: Option<usize>,
    roles: Option<usize>,
}

/// Who may hold the `ops` role: only the platform organisation's members.
struct RoleRules<'a> {
    ops_allowed: bool,
    platform_org: &'a TenantId,
}

impl Columns {
    fn of(headers: &csv::StringRecord) -> Result<Self, ImportError> {
        let column = |names: &[&str]| {
            headers
                .iter()
                .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
        };
        let Some(national_id) = column(&["national_id", "kennitala"]) else {
            return Err(ImportError::Invalid(vec![
                "line 1: no `national_id` (or `kennitala`) column".into(),
            ]));
        };
        Ok(Self {
            national_id,
            name: column(&["name", "nafn"]),
            roles: column(&["roles"]),
        })
    }

    fn national_id<'r>(&self, row: &'r csv::StringRecord) -> &'r str {
        row.get(self.national_id).unwrap_or_default()
    }

    fn name<'r>(&self, row: &'r csv::StringRecord) -> &'r str {
        self.name.and_then(|c| row.get(c)).unwrap_or_default()
    }

    fn roles<'r>(&self, row: &'r csv::StringRecord) -> &'r str {
        self.roles.and_then(|c| row.get(c)).unwrap_or_default()
    }
}

impl RoleRules<'_> {
    /// `member` and the roles listed (separated by `;`, spaces or `|`), each once; a problem
    /// for each role that is unknown or not allowed.
    fn roles(&self, listed: &str, problems: &mut Vec<String>, line: usize) -> Vec<Role> {
        let mut roles = vec![Role::Member];
        for raw in listed.split([';', ' ', '|']).filter(|r| !r.is_empty()) {
            match Role::parse(&raw.to_ascii_lowercase()) {
                Some(Role::Ops) if !self.ops_allowed => problems.push(format!(
                    "line {line}: the `ops` role is for platform operators; only the platform \
                     organisation's registry (`{}`) may grant it",
                    self.platform_org
                )),
                Some(role) if !roles.contains(&role) => roles.push(role),
                Some(_) => {}
                None => problems.push(format!(
                    "line {line}: unknown role {} (member, admin or ops)",
                    shown_role(raw)
                )),
            }
        }
        roles
    }
}

/// A role as a problem may show it: a word is named, anything else (a national id in the wrong
/// column, a quoted field running over several lines) is not.
fn shown_role(raw: &str) -> String {
    if raw.chars().count() <= 32 && raw.chars().all(char::is_alphabetic) {
        format!("`{raw}`")
    } else {
        "(not shown: not a word)".into()
    }
}

/// Makes `tenant`'s registry equal to `records` in one transaction. With `dry_run` the
/// transaction is rolled back: the report says what an import would change.
pub async fn sync(
    pool: &PgPool,
    tenant: &TenantId,
    records: &[MemberRecord],
    dry_run: bool,
) -> Result<ImportReport, ImportError> {
    let file = FileColumns::of(records);
    let mut tx = shared::db::begin_for_tenant(pool, tenant).await?;
    let removed = mark_removed(&mut tx, &file).await?;
    let readded = readd(&mut tx, &file).await?;
    let (inserted, updated) = upsert(&mut tx, tenant, &file).await?;
    let added = inserted + readded;
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(ImportReport {
        added,
        updated,
        removed,
        unchanged: records.len() as u64 - added - updated,
    })
}

/// The file's members as one array per column (`roles` comma-separated), for `unnest`.
struct FileColumns<'a> {
    ids: Vec<&'a str>,
    names: Vec<&'a str>,
    roles: Vec<String>,
}

impl<'a> FileColumns<'a> {
    fn of(records: &'a [MemberRecord]) -> Self {
        let roles = records
            .iter()
            .map(|r| {
                r.roles
                    .iter()
                    .map(|role| role.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        Self {
            ids: records.iter().map(|r| r.national_id.as_str()).collect(),
            names: records.iter().map(|r| r.name.as_str()).collect(),
            roles,
        }
    }
}

/// Marks the members not in the file as removed; how many. Removal only marks the row: it
/// keeps its id, so a person who comes back in a later export is the same member, and
/// events-svc's one token per (election, member id) holds.
async fn mark_removed(tx: &mut PgConnection, file: &FileColumns<'_>) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "UPDATE members.members SET removed_at = now(), updated_at = now() \
         WHERE removed_at IS NULL AND NOT (national_id = ANY($1))",
        &file.ids as &[&str]
    )
    .execute(tx)
    .await?
    .rows_affected())
}

/// Brings back people removed earlier and in the file again: same row and id, current name
/// and roles; how many. The operator sees them as added (they could not log in before).
async fn readd(tx: &mut PgConnection, file: &FileColumns<'_>) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "UPDATE members.members m \
         SET removed_at = NULL, name = t.name, roles = string_to_array(t.roles, ','), \
             updated_at = now() \
         FROM unnest($1::text[], $2::text[], $3::text[]) AS t(national_id, name, roles) \
         WHERE m.national_id = t.national_id AND m.removed_at IS NOT NULL",
        &file.ids as &[&str],
        &file.names as &[&str],
        &file.roles
    )
    .execute(tx)
    .await?
    .rows_affected())
}

/// Inserts new members and updates changed ones: (inserted, updated). xmax = 0 marks a freshly
/// inserted row; the WHERE skips rows that would not change (including the ones just re-added,
/// which [`readd`] counted).
async fn upsert(
    tx: &mut PgConnection,
    tenant: &TenantId,
    file: &FileColumns<'_>,
) -> sqlx::Result<(u64, u64)> {
    let written = sqlx::query_scalar!(
        r#"INSERT INTO members.members (org_id, national_id, name, roles)
           SELECT $1, t.national_id, t.name, string_to_array(t.roles, ',')
           FROM unnest($2::text[], $3::text[], $4::text[]) AS t(national_id, name, roles)
           ON CONFLICT (org_id, national_id) DO UPDATE
               SET name = excluded.name, roles = excluded.roles, updated_at = now()
               WHERE (members.name, members.roles)
                   IS DISTINCT FROM (excluded.name, excluded.roles)
           RETURNING xmax = 0 AS "inserted!""#,
        tenant.as_str(),
        &file.ids as &[&str],
        &file.names as &[&str],
        &file.roles
    )
    .fetch_all(tx)
    .await?;
    let inserted = written.iter().filter(|inserted| **inserted).count() as u64;
    Ok((inserted, written.len() as u64 - inserted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::national_id::synthetic;

    /// Found by the `registry_csv` fuzz target: a national id in the roles column (a shifted
    /// export) was printed back as an unknown role.
    #[test]
    fn a_national_id_in_the_roles_column_is_not_shown() {
        let (a, b) = (synthetic(1), synthetic(2));
        let file = format!(
            "national_id,name,roles\n{},Anna,{}\n{},Björn,chair\n",
            a.as_str(),
            b.as_str(),
            b.as_str()
        );
        let party = TenantId::parse("party-a").expect("a valid organisation");
        let platform = TenantId::parse("platform").expect("a valid organisation");
        let Err(ImportError::Invalid(problems)) = parse_csv(file.as_bytes(), &party, &platform)
        else {
            panic!("the file has unknown roles");
        };
        let text = problems.join("\n");
        assert_eq!(problems.len(), 2, "{text}");
        assert!(
            !text.contains(a.as_str()) && !text.contains(b.as_str()),
            "{text}"
        );
        assert!(problems[0].starts_with("line 2: unknown role"), "{text}");
        // A word is still named, so the export can be fixed.
        assert!(problems[1].contains("`chair`"), "{text}");
    }
}
