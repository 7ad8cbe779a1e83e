//! The monthly usage report on seeded data of two tenants, figure by figure: elections created
//! in the month and their tokens and votes (not those of the month before), logins and requests
//! added by several instances for the same minute, the peak second summed over instances, the
//! cost estimate from the unit prices, Markdown and CSV, and a month without counters, whose
//! counted figures are `n/a` rather than zero. The services' side of the counters is tested in
//! events-svc's `audit_usage` tests.

use std::process::Command;

use shared::usage::{Month, UnitPrices};
use sqlx::PgPool;
use testkit::TestDb;
use uuid::Uuid;

/// An election of `org` created at `created_at`, with `issued` tokens handed out and `used` of
/// its `registered` voting tokens used.
async fn election(
    db: &PgPool,
    org: &str,
    created_at: &str,
    issued: usize,
    registered: usize,
    used: usize,
) {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events.elections (org_id, id, title, question, kind, options, max_choices, \
                                       status, created_at) \
         VALUES ($1, $2, 't', 'q', 'single', '[]', 1, 'closed', $3::timestamptz)",
    )
    .bind(org)
    .bind(id)
    .bind(created_at)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO elections.elections (org_id, id, kind, options, max_choices, status) \
         VALUES ($1, $2, 'single', '[]', 1, 'closed')",
    )
    .bind(org)
    .bind(id)
    .execute(db)
    .await
    .unwrap();
    for _ in 0..issued {
        sqlx::query(
            "INSERT INTO events.token_issuance (org_id, election_id, member_id) \
             VALUES ($1, $2, gen_random_uuid())",
        )
        .bind(org)
        .bind(id)
        .execute(db)
        .await
        .unwrap();
    }
    for n in 0..registered {
        sqlx::query(
            "INSERT INTO elections.voting_tokens (org_id, election_id, token_hash, used) \
             VALUES ($1, $2, sha256(gen_random_uuid()::text::bytea), $3)",
        )
        .bind(org)
        .bind(id)
        .bind(n < used)
        .execute(db)
        .await
        .unwrap();
    }
}

/// What one instance adds in one flush: (org, minute, logins, requests, votes) and
/// (org, second, votes).
async fn add_usage(
    db: &PgPool,
    minutes: &[(&str, &str, i64, i64, i64)],
    seconds: &[(&str, &str, i64)],
) {
    let col =
        |f: fn(&(&str, &str, i64, i64, i64)) -> i64| minutes.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "SELECT ops.add_usage($1, $2::text[]::timestamptz[], $3, $4, $5, $6, $7::text[]::timestamptz[], $8)",
    )
    .bind(minutes.iter().map(|m| m.0).collect::<Vec<_>>())
    .bind(minutes.iter().map(|m| m.1).collect::<Vec<_>>())
    .bind(col(|m| m.2))
    .bind(col(|m| m.3))
    .bind(col(|m| m.4))
    .bind(seconds.iter().map(|s| s.0).collect::<Vec<_>>())
    .bind(seconds.iter().map(|s| s.1).collect::<Vec<_>>())
    .bind(seconds.iter().map(|s| s.2).collect::<Vec<_>>())
    .execute(db)
    .await
    .unwrap();
}

async fn seeded() -> TestDb {
    let db = TestDb::create().await;
    let owner = &db.owner;
    // party-a: two elections in November, one the last second of October (not counted).
    election(owner, "party-a", "2026-11-03T09:00:00Z", 3, 4, 3).await;
    election(owner, "party-a", "2026-11-20T18:30:00Z", 2, 2, 1).await;
    election(owner, "party-a", "2026-10-31T23:59:59Z", 4, 4, 4).await;
    // party-b: one election in the last moment of November; one in September (no counters).
    election(owner, "party-b", "2026-11-30T23:59:59.999Z", 1, 3, 1).await;
    election(owner, "party-b", "2026-09-10T12:00:00Z", 7, 7, 6).await;
    // Two ingest instances counted the same minute and the same second.
    add_usage(
        owner,
        &[
            ("party-a", "2026-11-03T10:00:00Z", 2, 25, 5),
            ("party-a", "2026-11-20T19:00:00Z", 2, 60, 1),
        ],
        &[
            ("party-a", "2026-11-03T10:00:05Z", 2),
            ("party-a", "2026-11-03T10:00:06Z", 4),
            ("party-a", "2026-11-20T19:00:01Z", 1),
        ],
    )
    .await;
    add_usage(
        owner,
        &[
            ("party-a", "2026-11-03T10:00:00Z", 1, 15, 3),
            ("party-b", "2026-11-30T23:59:00Z", 1, 10, 1),
            // Either side of November.
            ("party-a", "2026-10-31T23:59:00Z", 0, 7, 100),
            ("party-a", "2026-12-01T00:00:00Z", 9, 1000, 0),
        ],
        &[
            ("party-a", "2026-11-03T10:00:05Z", 3),
            ("party-b", "2026-11-30T23:59:30Z", 1),
            ("party-a", "2026-10-31T23:59:59Z", 100),
        ],
    )
    .await;
    db
}

#[tokio::test]
async fn the_report_of_a_month_has_each_tenants_exact_figures() {
    let db = seeded().await;
    let mut conn = db.owner.acquire().await.unwrap();
    let november: Month = "2026-11".parse().unwrap();
    let report = shared::usage::report(&mut conn, november, UnitPrices::default())
        .await
        .unwrap();
    // party-a: 2 elections, 3 + 2 tokens issued, 3 + 1 votes, logins 2 + 1 + 2, requests
    // 25 + 15 + 60, peak second 2 + 3 (two instances); cost 2 × 0.05 + 5 × 0.0001 +
    // 4 × 0.0002 + 5 × 0.0005 + 0.1 × 0.002 = 0.104.
    // party-b: 1, 1, 1, 1, 10, 1; 0.05 + 0.0001 + 0.0002 + 0.0005 + 0.01 × 0.002 = 0.05082.
    // Shares: 0.104 / 0.15482 = 67.17 %, 32.83 %.
    assert_eq!(
        report.csv(),
        "month,tenant,elections,tokens_issued,votes_recorded,logins,requests,peak_votes_per_second,estimated_cost_usd,cost_share_percent\n\
         2026-11,party-a,2,5,4,5,100,5,0.1040,67.17\n\
         2026-11,party-b,1,1,1,1,10,1,0.0508,32.83\n"
    );
    let markdown = report.markdown();
    let table: Vec<&str> = markdown.lines().skip(2).take(5).collect();
    assert_eq!(
        table,
        [
            "| tenant | elections | tokens issued | votes recorded | logins | requests | peak votes/s | estimated cost (USD) | cost share |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            "| party-a | 2 | 5 | 4 | 5 | 100 | 5 | 0.1040 | 67.2 % |",
            "| party-b | 1 | 1 | 1 | 1 | 10 | 1 | 0.0508 | 32.8 % |",
            "| **all tenants** | 3 | 6 | 5 | 6 | 110 | – | 0.1548 | 100 % |",
        ]
    );
    assert!(markdown.starts_with("# Usage report 2026-11 (UTC)\n"));
    assert!(markdown.contains("election 0.05, token issued 0.0001, vote recorded 0.0002, login 0.0005, 1,000 requests 0.002"));

    // October: party-a's election of its last second and the counters of that minute.
    let october =
        shared::usage::report(&mut conn, "2026-10".parse().unwrap(), UnitPrices::default())
            .await
            .unwrap();
    assert_eq!(
        october.csv().lines().nth(1),
        Some("2026-10,party-a,1,4,4,0,7,100,0.0512,100.00")
    );
}

#[tokio::test]
async fn a_month_without_counters_says_so_rather_than_showing_zeros() {
    let db = seeded().await;
    let mut conn = db.owner.acquire().await.unwrap();
    let report =
        shared::usage::report(&mut conn, "2026-09".parse().unwrap(), UnitPrices::default())
            .await
            .unwrap();
    assert!(!report.counted);
    assert_eq!(
        report.csv().lines().nth(1),
        Some("2026-09,party-b,1,7,6,,,,0.0519,100.00")
    );
    let markdown = report.markdown();
    assert!(
        markdown.contains("| party-b | 1 | 7 | 6 | n/a | n/a | n/a | 0.0519 | 100.0 % |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("no service counted anything in this month"),
        "{markdown}"
    );
}

#[tokio::test]
async fn the_cli_prints_the_same_report_with_the_prices_it_is_given() {
    let db = seeded().await;
    let run = |format: &str, prices: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_usage-report"))
            .args(["--month", "2026-11", "--format", format])
            .args(prices)
            .env("DATABASE_URL", db.admin_url())
            .output()
            .expect("run usage-report");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let mut conn = db.owner.acquire().await.unwrap();
    let november: Month = "2026-11".parse().unwrap();
    let report = shared::usage::report(&mut conn, november, UnitPrices::default())
        .await
        .unwrap();
    assert_eq!(run("csv", &[]), report.csv());
    assert_eq!(run("md", &[]), report.markdown());
    // Only requests priced: 100 and 10 requests at 1 USD per 1,000.
    let requests_only = run(
        "csv",
        &[
            "--price-election=0",
            "--price-token=0",
            "--price-vote=0",
            "--price-login=0",
            "--price-1k-requests=1",
        ],
    );
    assert_eq!(
        requests_only.lines().skip(1).collect::<Vec<_>>(),
        [
            "2026-11,party-a,2,5,4,5,100,5,0.1000,90.91",
            "2026-11,party-b,1,1,1,1,10,1,0.0100,9.09"
        ]
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_usage-report"))
        .args(["--month", "2026-13"])
        .env("DATABASE_URL", db.admin_url())
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
