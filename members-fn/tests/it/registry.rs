//! The member registry follows the party's export: counts of added, updated, removed and
//! unchanged members; a second run of the same file changes nothing; a bad file changes
//! nothing and names every bad line; one tenant's import never touches another's members; a
//! removed member keeps their row and id, cannot log in, and is the same member when re-added;
//! only the platform organisation's export may grant the `ops` role.

use crate::support::{kennitala, Members};
use members_fn::registry::{self, ImportError, ImportReport};
use serde_json::json;
use shared::domain::TenantId;
use shared::session::Role as SessionRole;
use testkit::Role;

/// Parses an export of party-a (not the platform organisation).
fn parse(file: &str) -> Result<Vec<registry::MemberRecord>, ImportError> {
    parse_for("party-a", file)
}

fn parse_for(org: &str, file: &str) -> Result<Vec<registry::MemberRecord>, ImportError> {
    registry::parse_csv(
        file.as_bytes(),
        &TenantId::parse(org).unwrap(),
        &TenantId::parse(shared::domain::DEFAULT_PLATFORM_ORG).unwrap(),
    )
}

fn csv(rows: &[(String, &str, &str)]) -> String {
    let mut out = String::from("kennitala,name,roles\n");
    for (id, name, roles) in rows {
        out.push_str(&format!("{id},\"{name}\",{roles}\n"));
    }
    out
}

#[tokio::test]
async fn an_import_makes_the_registry_equal_to_the_export_and_is_idempotent() {
    let members = Members::start(&[]).await;
    let pool = members.db.pool(Role::Members).await;
    let org = TenantId::parse("party-a").unwrap();
    // Another tenant's member, who no import of party-a may touch.
    let other = members
        .add_member("party-b", &kennitala(99), &["member"])
        .await;

    let first = csv(&[
        (kennitala(1), "Anna Jónsdóttir", ""),
        (kennitala(2), "Björn, the chair", "admin"),
        (kennitala(3), "Cecilía", "member;admin"),
    ]);
    let records = parse(&first).unwrap();
    let report = registry::sync(&pool, &org, &records, false).await.unwrap();
    assert_eq!(
        report,
        ImportReport {
            added: 3,
            updated: 0,
            removed: 0,
            unchanged: 0
        }
    );
    let again = registry::sync(&pool, &org, &records, false).await.unwrap();
    assert_eq!(
        again,
        ImportReport {
            added: 0,
            updated: 0,
            removed: 0,
            unchanged: 3
        }
    );

    // Björn steps down, Cecilía leaves, Davíð joins; a dry run reports it and changes nothing.
    let second = csv(&[
        (kennitala(1), "Anna Jónsdóttir", ""),
        (
            format!("{}-{}", &kennitala(2)[..6], &kennitala(2)[6..]),
            "Björn, the chair",
            "",
        ),
        (kennitala(4), "Davíð", "admin member"),
    ]);
    let records = parse(&second).unwrap();
    let expected = ImportReport {
        added: 1,
        updated: 1,
        removed: 1,
        unchanged: 1,
    };
    assert_eq!(
        registry::sync(&pool, &org, &records, true).await.unwrap(),
        expected
    );
    assert_eq!(
        registry::sync(&pool, &org, &records, false).await.unwrap(),
        expected
    );

    let rows: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT national_id, org_id, roles FROM members.members WHERE removed_at IS NULL \
         ORDER BY org_id, national_id",
    )
    .fetch_all(&members.db.owner)
    .await
    .unwrap();
    let mut want = vec![
        (
            kennitala(1),
            "party-a".to_owned(),
            vec!["member".to_owned()],
        ),
        (
            kennitala(2),
            "party-a".to_owned(),
            vec!["member".to_owned()],
        ),
        (
            kennitala(4),
            "party-a".to_owned(),
            vec!["member".into(), "admin".into()],
        ),
        (
            kennitala(99),
            "party-b".to_owned(),
            vec!["member".to_owned()],
        ),
    ];
    want.sort();
    assert_eq!(rows, want);
    let still_there: i64 = sqlx::query_scalar("SELECT count(*) FROM members.members WHERE id = $1")
        .bind(other)
        .fetch_one(&members.db.owner)
        .await
        .unwrap();
    assert_eq!(still_there, 1);
}

/// The registry row of `national_id` in party-a: its id and whether it is marked removed.
async fn row(members: &Members, national_id: &str) -> (uuid::Uuid, bool) {
    sqlx::query_as(
        "SELECT id, removed_at IS NOT NULL FROM members.members \
         WHERE org_id = 'party-a' AND national_id = $1",
    )
    .bind(national_id)
    .fetch_one(&members.db.owner)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_removed_member_keeps_their_row_and_id_cannot_log_in_and_comes_back_as_added() {
    let members = Members::start(&[]).await;
    let pool = members.db.pool(Role::Members).await;
    let org = TenantId::parse("party-a").unwrap();
    let both = parse(&csv(&[
        (kennitala(1), "Anna", ""),
        (kennitala(2), "Björn", ""),
    ]))
    .unwrap();
    let without_anna = parse(&csv(&[(kennitala(2), "Björn", "")])).unwrap();
    registry::sync(&pool, &org, &both, false).await.unwrap();
    let (anna, _) = row(&members, &kennitala(1)).await;
    let login = json!({ "national_id": kennitala(1) });
    let (status, session) = members.post("/v1/auth/dev-login", login.clone()).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["member"]["id"], anna.to_string());

    let removal = ImportReport {
        added: 0,
        updated: 0,
        removed: 1,
        unchanged: 1,
    };
    assert_eq!(
        registry::sync(&pool, &org, &without_anna, false)
            .await
            .unwrap(),
        removal
    );
    assert_eq!(row(&members, &kennitala(1)).await, (anna, true));
    let (status, problem) = members.post("/v1/auth/dev-login", login.clone()).await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["type"], "https://ekklesia.is/problems/not-a-member");
    // Removing someone already removed is no change.
    assert_eq!(
        registry::sync(&pool, &org, &without_anna, false)
            .await
            .unwrap(),
        ImportReport {
            removed: 0,
            ..removal
        }
    );

    // Back in the export, with a new role: counted as added (to the operator, a person who
    // could not log in now can), under the same id; a dry run says so and changes nothing.
    let back = parse(&csv(&[
        (kennitala(1), "Anna", "admin"),
        (kennitala(2), "Björn", ""),
    ]))
    .unwrap();
    let readd = ImportReport {
        added: 1,
        updated: 0,
        removed: 0,
        unchanged: 1,
    };
    assert_eq!(
        registry::sync(&pool, &org, &back, true).await.unwrap(),
        readd
    );
    assert_eq!(row(&members, &kennitala(1)).await, (anna, true));
    assert_eq!(
        registry::sync(&pool, &org, &back, false).await.unwrap(),
        readd
    );
    assert_eq!(row(&members, &kennitala(1)).await, (anna, false));
    let (status, session) = members.post("/v1/auth/dev-login", login).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["member"]["id"], anna.to_string());
    assert_eq!(session["member"]["roles"], json!(["member", "admin"]));

    // The service role cannot hard-delete either: that would hand out a fresh id next time.
    let err = sqlx::query("DELETE FROM members.members")
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(err.as_database_error().unwrap().code().unwrap(), "42501");
}

#[test]
fn a_bad_file_names_every_bad_line_and_no_national_id() {
    let file = format!(
        "national_id,name,roles\n{},ok,\n0101302979,bad check digit,\n{},dup,\n{},dup,\n{},x,chair\n4101302989,company,\n",
        kennitala(1),
        kennitala(2),
        kennitala(2),
        kennitala(3)
    );
    let Err(ImportError::Invalid(problems)) = parse(&file) else {
        panic!("refused");
    };
    let text = problems.join("\n");
    assert_eq!(problems.len(), 4, "{text}");
    for needle in [
        "line 3: the national id's check digit",
        "line 5: this national id appears twice",
        "line 6: unknown role `chair`",
        "line 7: the national id belongs to a company",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    assert!(
        !text.contains("0101302979") && !text.contains(&kennitala(2)),
        "{text}"
    );
    assert!(matches!(parse("name\nx\n"), Err(ImportError::Invalid(_))));
    assert!(matches!(
        parse("national_id,name\n"),
        Err(ImportError::Empty)
    ));
    assert!(matches!(
        parse("national_id,name\n0101302989\n"),
        Err(ImportError::Invalid(_))
    ));
}

#[tokio::test]
async fn the_import_command_reports_json_and_refuses_a_bad_file_with_exit_2() {
    let members = Members::start(&[]).await;
    let dir = std::env::temp_dir().join(format!("members-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.csv");
    std::fs::write(
        &good,
        csv(&[(kennitala(1), "A", ""), (kennitala(2), "B", "admin")]),
    )
    .unwrap();
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "national_id\n0101302979\n").unwrap();
    let run = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_members-import"))
            .args(["--org", "party-a"])
            .arg(file)
            .env("DATABASE_URL", members.db.url(Role::Members))
            .output()
            .unwrap()
    };
    let out = run(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["report"]["added"], 2, "{report}");
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM members.members")
        .fetch_one(&members.db.owner)
        .await
        .unwrap();
    assert_eq!(count, 2, "the bad file changed nothing");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn only_the_platform_organisations_export_may_grant_ops() {
    // A party cannot make its own members platform operators: every line naming `ops` is
    // refused, by line, and nothing of the file is taken.
    let file = csv(&[
        (kennitala(1), "Anna", "admin"),
        (kennitala(2), "Björn", "ops"),
        (kennitala(3), "Cecilía", "member;OPS"),
    ]);
    let Err(ImportError::Invalid(problems)) = parse(&file) else {
        panic!("a party's export granting ops was accepted");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("line 3: the `ops` role is for platform operators"));
    assert!(problems[1].starts_with("line 4: the `ops` role is for platform operators"));
    assert!(problems[0].contains("`platform`"), "{problems:?}");

    let staff = parse_for("platform", &file).unwrap();
    assert_eq!(
        staff.iter().map(|r| r.roles.clone()).collect::<Vec<_>>(),
        vec![
            vec![SessionRole::Member, SessionRole::Admin],
            vec![SessionRole::Member, SessionRole::Ops],
            vec![SessionRole::Member, SessionRole::Ops],
        ]
    );
}

#[tokio::test]
async fn the_import_command_refuses_ops_in_a_partys_export_and_takes_it_in_the_platforms() {
    let members = Members::start(&[]).await;
    let dir = std::env::temp_dir().join(format!("members-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("export.csv");
    std::fs::write(
        &file,
        csv(&[(kennitala(1), "A", "admin"), (kennitala(2), "B", "ops")]),
    )
    .unwrap();
    let run = |org: &str, platform_org: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_members-import"));
        command
            .args(["--org", org])
            .arg(&file)
            .env("DATABASE_URL", members.db.url(Role::Members))
            .env_remove("PLATFORM_ORG");
        if let Some(platform_org) = platform_org {
            command.env("PLATFORM_ORG", platform_org);
        }
        command.output().unwrap()
    };
    let ops_rows = || async {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT org_id, count(*) FROM members.members GROUP BY org_id ORDER BY org_id",
        )
        .fetch_all(&members.db.owner)
        .await
        .unwrap()
    };

    let refused = run("party-a", None);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("line 3: the `ops` role is for platform operators"),
        "{stderr}"
    );
    assert_eq!(ops_rows().await, vec![], "nothing imported");

    // Another platform organisation configured: `platform` is then a party like any other.
    let refused = run("platform", Some("ekklesia-staff"));
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(ops_rows().await, vec![]);

    for (org, platform_org) in [
        ("platform", None),
        ("ekklesia-staff", Some("ekklesia-staff")),
    ] {
        let out = run(org, platform_org);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        ops_rows().await,
        vec![("ekklesia-staff".to_owned(), 2), ("platform".to_owned(), 2)]
    );
    let roles: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT r FROM members.members, unnest(roles) AS r WHERE org_id = 'platform' ORDER BY r",
    )
    .fetch_all(&members.db.owner)
    .await
    .unwrap();
    assert_eq!(roles, vec!["admin", "member", "ops"]);
    std::fs::remove_dir_all(dir).ok();
}
