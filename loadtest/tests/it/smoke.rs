//! Smoke test of the harness (seconds, for CI): members-fn, events-svc, ingest and a worker in
//! this process on a fresh database and a fresh topic; a tiny burst in queue mode and in
//! direct mode through the same code the `loadtest` binary runs, then a few tokens through
//! events-svc. Every invariant check must pass and the three report files must be written.
//! Performance targets are never asserted here. Also the `ops` commands the person on duty
//! runs: the canary passes on a healthy stack and names the worker when none runs; the status
//! shows what it should.

use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::ops::{self, Patience, Urls};
use loadtest::report::{Body, Report};
use loadtest::scenario::{self, Common, Mode};
use loadtest::schedule::Schedule;
use loadtest::target::{Target, TargetConfig};
use uuid::Uuid;

use crate::support::{start, start_with};

fn urls(config: &TargetConfig) -> Urls {
    Urls {
        members: config.members_url.clone(),
        events: config.events_url.clone(),
        ingest: config.ingest_url.clone(),
        elections: config.elections_url.clone(),
        worker: config.worker_url.clone().unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_passes_every_hop_and_the_status_shows_the_system() {
    let stack = start(1).await;
    let urls = urls(&stack.config);
    let admin = ops::dev_login(&urls.members, &stack.config.admin_national_id)
        .await
        .expect("dev login");
    let report = ops::canary(&urls, &admin, Patience::default()).await;
    report.print();
    assert!(report.failed().is_none(), "{report:?}");
    assert_eq!(report.hops.len(), 7, "{report:?}");

    let status = ops::status(&urls, &stack.db.admin_url())
        .await
        .expect("status");
    status.print();
    assert!(status.healthy(), "{:?}", status.services);
    assert_eq!(status.services.len(), 5);
    assert!(
        !status.ingests.is_empty(),
        "the ingest instance reports itself"
    );
    assert!(status
        .ingests
        .iter()
        .all(|(_, _, read_at, _)| read_at.is_some()));
    assert!(status.undecided.is_empty() && status.awaiting_seal.is_empty());
    assert_eq!(status.worker_counters, Some((0.0, 0.0, 0.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_worker_down_the_canary_fails_naming_the_worker() {
    let stack = start_with(1, false).await;
    let urls = urls(&stack.config);
    let admin = ops::dev_login(&urls.members, &stack.config.admin_national_id)
        .await
        .expect("dev login");
    let patience = Patience {
        recorded: std::time::Duration::from_secs(3),
        sealed: std::time::Duration::from_secs(3),
    };
    let report = ops::canary(&urls, &admin, patience).await;
    report.print();
    let failed = report.failed().expect("the canary fails");
    assert_eq!(failed.name, "worker: the vote is recorded", "{report:?}");
    let status = ops::status(&urls, &stack.db.admin_url())
        .await
        .expect("status");
    assert!(!status.healthy());
    assert!(status
        .services
        .iter()
        .any(|(name, error)| *name == "worker" && error.is_some()));
    assert_eq!(status.undecided.len(), 1, "the canary's vote waits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_burst_in_both_modes_passes_every_check_and_writes_the_reports() {
    let began = Instant::now();
    let stack = start(10).await;
    let target = Arc::new(Target::new(stack.config.clone()).expect("target"));
    let common = Common {
        quiet: true,
        drain_timeout: Duration::from_secs(20),
        replays: 3,
        ..Common::default()
    };
    let votes = 30;
    let body = scenario::votes(
        target.clone(),
        &common,
        &Schedule::burst(votes).expect("a schedule"),
    )
    .await
    .expect("the burst runs in both modes");
    let report = Report::new(
        "burst",
        chrono::Utc::now(),
        "smoke".into(),
        Vec::new(),
        Body::Votes(body),
    );
    let dir = std::env::temp_dir().join(format!("loadtest-smoke-{}", Uuid::new_v4().simple()));
    let files = report.write(&dir).expect("reports written");
    assert!(report.checks_passed, "{}", report.markdown());
    let Body::Votes(v) = &report.result else {
        panic!("a votes report")
    };
    assert_eq!(
        v.modes.iter().map(|r| r.mode).collect::<Vec<_>>(),
        [Mode::Queue, Mode::Direct]
    );
    for run in &v.modes {
        assert_eq!(run.sent, votes);
        // The database's count, not the harness's arithmetic: every accepted vote once.
        let ballots: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM elections.ballots WHERE election_id = $1) \
                  + (SELECT count(*) FROM elections.ballot_box WHERE election_id = $1)",
        )
        .bind(run.election)
        .fetch_one(&stack.db.owner)
        .await
        .unwrap();
        assert_eq!(ballots, run.accepted as i64, "{}", report.markdown());
        assert!(run.checks.len() >= 6, "{:?}", run.checks);
    }
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["report.json", "report.md", "chart.svg"]);
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() > 200,
            "{} is empty",
            f.display()
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(json["result"]["kind"], "votes");
    assert!(std::fs::read_to_string(&files[2])
        .unwrap()
        .starts_with("<svg"));

    // Tokens through members-fn and events-svc, then cast at once.
    let tokens = scenario::tokens(
        target,
        &common,
        &Schedule::constant(20.0, 0.5).expect("a schedule"),
        true,
    )
    .await
    .expect("tokens through events-svc");
    assert_eq!(
        tokens.issued, 10,
        "{:?} {:?}",
        tokens.statuses, tokens.checks
    );
    let tokens_dir = dir.join("tokens");
    let report = Report::new(
        "tokens",
        chrono::Utc::now(),
        "smoke".into(),
        Vec::new(),
        Body::Tokens(tokens),
    );
    report.write(&tokens_dir).expect("reports written");
    assert!(report.checks_passed, "{}", report.markdown());
    // LOADTEST_SMOKE_KEEP=1 keeps the reports for a look.
    if std::env::var_os("LOADTEST_SMOKE_KEEP").is_some() {
        eprintln!("reports kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!("smoke test took {:.1} s", began.elapsed().as_secs_f64());
}

/// The soak scenario, shortened to two 15-second cycles (one per mode): every cycle's checks
/// pass, the samples hold this process's memory and the database size, and the report says
/// what a 30-minute run would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_checks_every_cycle_and_samples_memory_and_the_database() {
    let stack = start(5).await;
    let target = Arc::new(Target::new(stack.config.clone()).expect("target"));
    let common = Common {
        quiet: true,
        drain_timeout: Duration::from_secs(20),
        replays: 2,
        ..Common::default()
    };
    let settings = loadtest::soak::SoakSettings {
        minutes: 0.5,
        cycle_secs: 15.0,
        trickle_rate: 4.0,
        burst_rate: 40.0,
        burst_secs: 1.0,
        logins_per_cycle: 3,
        results_every_secs: 1.0,
        sample_every_secs: 1.0,
    };
    let body = loadtest::soak::run(target, &common, &settings, Some(&stack.db.admin_url()))
        .await
        .expect("the soak runs");
    let report = Report::new(
        "soak",
        chrono::Utc::now(),
        "smoke".into(),
        Vec::new(),
        Body::Soak(body),
    );
    let dir = std::env::temp_dir().join(format!("loadtest-soak-{}", Uuid::new_v4().simple()));
    report.write(&dir).expect("reports written");
    let md = report.markdown();
    assert!(report.checks_passed, "{md}");
    let Body::Soak(s) = &report.result else {
        panic!("a soak report")
    };
    assert_eq!(
        s.cycles.iter().map(|c| c.mode).collect::<Vec<_>>(),
        [Mode::Queue, Mode::Direct]
    );
    let per_cycle = settings.offsets().len();
    for c in &s.cycles {
        assert_eq!(c.sent, per_cycle, "{md}");
        assert_eq!(c.accepted, per_cycle, "{md}");
        assert_eq!(c.tokens_via_events.voters, 3);
        assert!(c.results_reads >= 2, "{md}");
        // accepted = recorded, receipts, replays, final tally, no tally while open.
        assert!(c.checks.len() >= 7, "{:?}", c.checks);
    }
    assert!(s.samples.len() >= 10, "{} samples", s.samples.len());
    assert!(s.samples.iter().all(|x| x.rss_mib.contains_key("loadtest")));
    let (before, after) = (
        s.db_bytes_before.expect("size"),
        s.db_bytes_after.expect("size"),
    );
    assert!(
        after > before,
        "the database grew with the votes: {before} → {after}"
    );
    assert!(
        md.contains("| cycle | mode |") && md.contains("Memory and CPU"),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
