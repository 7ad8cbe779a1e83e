//! Blue/green migrations (docs/migrations.md): the newest expand step is applied while ingest
//! and the worker, started on the schema before it, take votes continuously, in queue mode and
//! in direct mode; not one vote may fail and every one must be recorded and counted.
//!
//! The services are this tree's code. They stand for the release before the migration as far as
//! that release's SQL is the same (the policy's point: an expand step changes nothing the
//! running code uses); what the test cannot show is a query that only the previous release's
//! binary makes. It does show that the migration takes no lock that stalls the vote path past
//! its budgets, and that the services' cached statements survive the schema change.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use shared::db::MIGRATOR;
use testkit::elections::{Stack, StackOptions, TENANT};
use testkit::{eventually, TestDb};

const VOTES: usize = 240;
/// Extra tokens the operator votes with after switching to direct mode, until ingest answers
/// 201: the last third of the votes waits for that, so both modes are seen however fast the
/// first two thirds go.
const PROBES: usize = 40;
/// Votes in flight at any moment.
const CONCURRENCY: usize = 8;

/// The migration applied live: the newest expand step. A contract step runs only once no
/// instance of the release before it is left, so it is never applied under that release.
/// One vote as the voter saw it.
struct Answer {
    sent: Instant,
    done: Instant,
    status: u16,
    receipt: Option<String>,
}

fn newest_expand_step() -> usize {
    MIGRATOR
        .iter()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|m| shared::migration_policy::contract_markers(&m.sql).is_empty())
        .expect("an expand step")
}

#[tokio::test]
async fn the_previous_releases_services_keep_taking_votes_while_the_newest_migration_is_applied() {
    let index = newest_expand_step();
    let migration = MIGRATOR.iter().nth(index).expect("the migration");
    let db = TestDb::create_at(index).await;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(&db.owner)
        .await
        .unwrap();
    assert!(
        !applied.contains(&migration.version),
        "the database must start without migration {}",
        migration.version
    );

    let mut stack = Stack::start_on(db, StackOptions::default()).await;
    stack.start_worker(stack.worker_settings()).await;
    let election = stack.open_election(TENANT, "single", 3, 1).await;
    let all_tokens = stack.tokens(TENANT, election, VOTES + PROBES).await;
    let (tokens, probes) = all_tokens.split_at(VOTES);
    let (direct_tx, direct_rx) = tokio::sync::watch::channel(false);

    let answered = AtomicUsize::new(0);
    let log: Mutex<Vec<Answer>> = Mutex::new(Vec::new());
    let voters = futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| {
            let (stack, answered, log) = (&stack, &answered, &log);
            let mut direct = direct_rx.clone();
            async move {
                if i >= 2 * VOTES / 3 {
                    let _ = direct.wait_for(|followed| *followed).await;
                }
                let choice = ["o0", "o1", "o2"][i % 3];
                let sent = Instant::now();
                let response = stack.vote(election, token, &[choice]).await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let receipt = body["receipt"].as_str().map(str::to_owned);
                log.lock().unwrap().push(Answer {
                    sent,
                    done: Instant::now(),
                    status,
                    receipt,
                });
                answered.fetch_add(1, Ordering::SeqCst);
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>();

    // A third of the votes in, the migration; two thirds in, direct mode (through
    // ops.set_queue_mode, which the newest migration may have replaced).
    let operator = async {
        eventually(Duration::from_secs(60), || {
            let n = answered.load(Ordering::SeqCst);
            async move { n >= VOTES / 3 }
        })
        .await
        .expect("a third of the votes answered");
        let started = Instant::now();
        if index + 1 == MIGRATOR.iter().count() {
            // What the migrate job runs in production.
            shared::db::migrate(&stack.db.owner)
                .await
                .expect("the migration applies under load");
        } else {
            use sqlx::migrate::Migrate;
            let mut conn = stack.db.owner.acquire().await.unwrap();
            conn.apply(migration)
                .await
                .expect("the migration applies under load");
        }
        let finished = Instant::now();
        eventually(Duration::from_secs(60), || {
            let n = answered.load(Ordering::SeqCst);
            async move { n >= 2 * VOTES / 3 }
        })
        .await
        .expect("two thirds of the votes answered");
        stack.set_queue_mode(false).await;
        // Until ingest follows the flag: votes of their own, each logged like any other.
        let next_probe = AtomicUsize::new(0);
        eventually(Duration::from_secs(10), || async {
            let i = next_probe.fetch_add(1, Ordering::SeqCst);
            let token = probes
                .get(i)
                .expect("ingest followed the flag within the probes");
            let sent = Instant::now();
            let response = stack
                .vote(election, token, &[["o0", "o1", "o2"][i % 3]])
                .await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            log.lock().unwrap().push(Answer {
                sent,
                done: Instant::now(),
                status,
                receipt: body["receipt"].as_str().map(str::to_owned),
            });
            status == 201
        })
        .await
        .expect("ingest answers in direct mode");
        let _ = direct_tx.send(true);
        (started, finished)
    };
    let ((migration_started, migration_finished), _) = tokio::join!(operator, voters);

    let log = log.into_inner().unwrap();
    let failed: Vec<u16> = log
        .iter()
        .map(|a| a.status)
        .filter(|s| !matches!(s, 201 | 202))
        .collect();
    assert!(failed.is_empty(), "votes failed: {failed:?}");
    let queued = log.iter().filter(|a| a.status == 202).count();
    let direct = log.iter().filter(|a| a.status == 201).count();
    assert!(
        queued > 0 && direct > 0,
        "both modes: {queued} queued, {direct} direct"
    );
    let during = log
        .iter()
        .filter(|a| a.sent < migration_finished && a.done > migration_started)
        .count();
    let after = log.iter().filter(|a| a.sent > migration_finished).count();
    assert!(during > 0, "no vote was in flight while the migration ran");
    assert!(after > 0, "no vote was sent after the migration");
    println!(
        "migration {} applied in {:?} with {during} votes in flight; {queued} queued, {direct} direct",
        migration.version,
        migration_finished - migration_started
    );

    let cast = log.len();
    let receipts: Vec<String> = log.into_iter().filter_map(|a| a.receipt).collect();
    assert_eq!(receipts.len(), cast, "every answer names its receipt");
    let outcomes = stack.wait_decided(&receipts, Duration::from_secs(60)).await;
    assert!(
        outcomes.values().all(|s| s == "recorded"),
        "every vote recorded: {outcomes:?}"
    );
    assert_eq!(stack.ballot_count(election).await, cast as i64);

    stack.close_election(TENANT, election, "single", 3, 1).await;
    let results = stack
        .wait_final(TENANT, election, Duration::from_secs(60))
        .await;
    assert_eq!(results["total"], cast);
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(&stack.db.owner)
        .await
        .unwrap();
    assert!(applied.contains(&migration.version));
}
