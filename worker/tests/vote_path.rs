//! The vote path end to end: ingest (real HTTP) → Pub/Sub emulator → worker → PostgreSQL.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::vote::VoteMessage;
use support::{
    drain_count, drain_dead_letters, eventually, metric, Stack, StackOptions, OTHER_TENANT, TENANT,
};
use uuid::Uuid;

async fn accepted_receipt(response: reqwest::Response, expected: u16) -> String {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, expected, "{body}");
    body["receipt"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn queue_mode_end_to_end_every_vote_recorded_once_and_results_final_after_close() {
    let mut stack = Stack::start(StackOptions::default()).await;
    stack.start_worker(stack.worker_settings()).await;
    let election = stack.open_election(TENANT, "single", 3, 1).await;
    let tokens = stack.tokens(TENANT, election, 60).await;
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut receipts = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let choice = format!("o{}", i % 3);
        *expected.entry(choice.clone()).or_default() += 1;
        let response = stack.vote(election, token, &[&choice]).await;
        let status_url = response.headers().get("content-type").cloned();
        assert_eq!(status_url.unwrap(), "application/json");
        let receipt = accepted_receipt(response, 202).await;
        receipts.push(receipt);
    }
    let outcomes = stack.wait_decided(&receipts, Duration::from_secs(30)).await;
    assert!(outcomes.values().all(|s| s == "recorded"), "{outcomes:?}");
    for r in &receipts {
        let (code, body) = stack.receipt(r).await;
        assert_eq!((code, body["status"].as_str()), (200, Some("recorded")));
    }
    let results = stack.results(TENANT, election).await;
    assert_eq!(
        results["total"],
        json!(60),
        "the turnout is shown while open"
    );
    assert_eq!(results["final"], json!(false), "not final while open");
    assert_eq!(
        results["tally"],
        json!({}),
        "no tally while open: {results}"
    );

    let late = stack.tokens(TENANT, election, 1).await;
    stack.close_election(TENANT, election, "single", 3, 1).await;
    // Closed: ingest refuses new votes at once, and no more tokens can be registered...
    assert_eq!(stack.vote(election, &late[0], &["o0"]).await.status(), 403);
    // ...and the results become final once the queue drained and the ballots were sealed.
    let results = stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;
    assert_eq!(results["total"], json!(60));
    for (option, count) in &expected {
        assert_eq!(results["tally"][option], json!(count));
    }
    assert_eq!(
        drain_dead_letters(&stack).await,
        0,
        "no accepted vote was dead-lettered"
    );
}

#[tokio::test]
async fn direct_mode_end_to_end() {
    let mut stack = Stack::start(StackOptions {
        queue_mode: false,
        ..Default::default()
    })
    .await;
    stack.start_worker(stack.worker_settings()).await;
    let election = stack.open_election(TENANT, "multiple", 4, 2).await;
    let tokens = stack.tokens(TENANT, election, 20).await;
    for token in &tokens {
        let receipt = accepted_receipt(stack.vote(election, token, &["o1", "o3"]).await, 201).await;
        let (code, body) = stack.receipt(&receipt).await;
        assert_eq!((code, body["status"].as_str()), (200, Some("recorded")));
    }
    // The same token again: 409 naming the receipt.
    let again = stack.vote(election, &tokens[0], &["o2"]).await;
    assert_eq!(again.status(), 409);
    let problem: Value = again.json().await.unwrap();
    assert!(problem["type"]
        .as_str()
        .unwrap()
        .ends_with("token-already-used"));
    assert_eq!(stack.ballot_count(election).await, 20);
    stack
        .close_election(TENANT, election, "multiple", 4, 2)
        .await;
    let results = stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;
    assert_eq!(results["total"], json!(20));
    assert_eq!(results["tally"]["o1"], json!(20));
    assert_eq!(results["tally"]["o3"], json!(20));
    assert_eq!(results["tally"]["o0"], json!(0));
}

/// Option ids are free text: the batch writer sends each ballot's choices as an array literal
/// and direct mode as a bound array, and both must store every id verbatim.
#[tokio::test]
async fn option_ids_with_quotes_commas_braces_and_backslashes_are_stored_verbatim_in_both_modes() {
    let mut stack = Stack::start(StackOptions::default()).await;
    stack.start_worker(stack.worker_settings()).await;
    let ids = [
        "yes",
        "a,b",
        "{x}",
        r#"say "no""#,
        r"back\slash",
        "NULL",
        " ",
        "ütf-8 ✓ 🗳",
    ];
    let election = Uuid::new_v4();
    let definition = |status: &str| {
        json!({
            "kind": "multiple",
            "options": ids.iter().map(|id| json!({"id": id, "label": id})).collect::<Vec<_>>(),
            "max_choices": 3,
            "status": status,
            "opens_at": null,
            "closes_at": null,
        })
    };
    stack
        .put_election(TENANT, election, definition("open"))
        .await;
    let tokens = stack.tokens(TENANT, election, 2 * ids.len()).await;
    let mut expected: HashMap<&str, i64> = ids.iter().map(|id| (*id, 0)).collect();
    // Vote i chooses ids i, i+1 and i+2 (wrapping): every id is chosen, beside every kind of
    // neighbour, three times per mode.
    let choices = |i: usize| -> Vec<&str> { (0..3).map(|k| ids[(i + k) % ids.len()]).collect() };
    let mut receipts = Vec::new();
    for (i, token) in tokens[..ids.len()].iter().enumerate() {
        let chosen = choices(i);
        chosen
            .iter()
            .for_each(|id| *expected.get_mut(id).unwrap() += 1);
        receipts.push(accepted_receipt(stack.vote(election, token, &chosen).await, 202).await);
    }
    let outcomes = stack.wait_decided(&receipts, Duration::from_secs(30)).await;
    assert!(outcomes.values().all(|s| s == "recorded"), "{outcomes:?}");

    stack.set_queue_mode(false).await;
    // Ingest re-reads the flag every 200 ms here.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (i, token) in tokens[ids.len()..].iter().enumerate() {
        let chosen = choices(i);
        chosen
            .iter()
            .for_each(|id| *expected.get_mut(id).unwrap() += 1);
        accepted_receipt(stack.vote(election, token, &chosen).await, 201).await;
    }

    stack
        .put_election(TENANT, election, definition("closed"))
        .await;
    let results = stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;
    assert_eq!(results["total"], json!(2 * ids.len()), "{results}");
    for (id, count) in &expected {
        assert_eq!(
            results["tally"][id],
            json!(count),
            "option {id:?}: {results}"
        );
    }
}

/// Fifty submissions of one token, two different ballots among them: every retry of a ballot
/// gets that ballot's receipt, exactly one of the two receipts ends `recorded` and the other
/// `rejected: token_already_used`, and the one ballot counted is the recorded one's.
#[tokio::test]
async fn same_token_fifty_times_concurrently_gives_one_ballot_in_queue_mode() {
    // Fifty at once is far past one token's rate limit; the point here is what gets through.
    let mut stack = Stack::start(StackOptions {
        extra_env: vec![("RATE_LIMIT_PER_TOKEN", "1000".to_owned())],
        ..Default::default()
    })
    .await;
    stack.start_worker(stack.worker_settings()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let token = stack.tokens(TENANT, election, 1).await.remove(0);
    let answers = futures::future::join_all((0..50).map(|i| {
        let choice = if i % 2 == 0 { "o0" } else { "o1" };
        let s = &stack;
        let t = &token;
        async move {
            let r = s.vote(election, t, &[choice]).await;
            (
                choice,
                r.status().as_u16(),
                r.json::<Value>().await.unwrap(),
            )
        }
    }))
    .await;
    let mut receipts: HashMap<String, &str> = HashMap::new();
    for (choice, status, body) in &answers {
        assert_eq!(*status, 202, "{body}");
        let receipt = body["receipt"].as_str().unwrap().to_owned();
        assert_eq!(*receipts.entry(receipt).or_insert(choice), *choice);
    }
    assert_eq!(
        receipts.len(),
        2,
        "one receipt per ballot, the same for each retry"
    );
    let all: Vec<String> = receipts.keys().cloned().collect();
    stack.wait_decided(&all, Duration::from_secs(30)).await;
    let mut recorded = Vec::new();
    for (receipt, choice) in &receipts {
        let (_, body) = stack.receipt(receipt).await;
        match body["status"].as_str() {
            Some("recorded") => recorded.push(*choice),
            Some("rejected") => assert_eq!(body["reason"], json!("token_already_used")),
            other => panic!("{other:?}: {body}"),
        }
    }
    assert_eq!(recorded.len(), 1, "exactly one submission recorded");
    stack.close_election(TENANT, election, "single", 2, 1).await;
    let results = stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;
    assert_eq!(results["total"], json!(1));
    assert_eq!(
        results["tally"][recorded[0]],
        json!(1),
        "the counted ballot is the recorded one: {results}"
    );
}

#[tokio::test]
async fn same_token_fifty_times_concurrently_gives_one_ballot_in_direct_mode() {
    let stack = Stack::start(StackOptions {
        queue_mode: false,
        extra_env: vec![("RATE_LIMIT_PER_TOKEN", "1000".to_owned())],
        ..Default::default()
    })
    .await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let token = stack.tokens(TENANT, election, 1).await.remove(0);
    let answers = futures::future::join_all((0..50).map(|_| {
        let s = &stack;
        let t = &token;
        async move {
            let r = s.vote(election, t, &["o0"]).await;
            let retry_after = r.headers().get("retry-after").is_some();
            (r.status().as_u16(), retry_after)
        }
    }))
    .await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    for (status, retry_after) in &answers {
        assert!(matches!(status, 201 | 409 | 503), "{answers:?}");
        if *status == 503 {
            assert!(retry_after, "503 without Retry-After");
        }
    }
    assert_eq!(stack.ballot_count(election).await, 1);
}

#[tokio::test]
async fn redelivered_batch_after_a_lost_ack_adds_no_second_ballot() {
    let stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 10).await;
    // A second subscription sees the same messages: through it the test commits them once
    // (the first delivery) while the worker's subscription still holds them all (the
    // redelivery after a lost ack). A stream of the test's own on the worker's subscription
    // would leave the emulator a sender that swallows the redelivery (docs/testing.md).
    let observer = stack.observer_subscription("observer").await;
    // Accept the votes (published, no worker running yet).
    let mut receipts = Vec::new();
    for t in &tokens {
        receipts.push(accepted_receipt(stack.vote(election, t, &["o1"]).await, 202).await);
    }
    let subscriber = shared::pubsub::subscriber(&stack.pubsub.settings)
        .await
        .unwrap();
    let mut stream = subscriber.subscribe(observer).build();
    let mut votes = Vec::new();
    while votes.len() < 10 {
        let (m, h) = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        votes.push(VoteMessage::decode(&stack.vote_keys(), &m.data).unwrap());
        h.ack();
    }
    let worker_pool = stack.db.pool(shared::testkit::Role::Worker).await;
    let keys = stack.vote_keys();
    let first = worker::batch::commit(&worker_pool, &keys, &votes)
        .await
        .unwrap();
    assert!(first
        .outcomes
        .iter()
        .all(|o| *o == worker::batch::Outcome::Recorded));
    // The same batch committed again (what a redelivery does): only duplicates.
    let second = worker::batch::commit(&worker_pool, &keys, &votes)
        .await
        .unwrap();
    assert!(
        second
            .outcomes
            .iter()
            .all(|o| *o == worker::batch::Outcome::Duplicate),
        "{second:?}"
    );
    drop(stream);
    // And the real worker receiving the redeliveries changes nothing either.
    let mut stack = stack;
    let worker = stack.start_worker(stack.worker_settings()).await;
    eventually(
        Duration::from_secs(30),
        "the 10 redeliveries reach the worker",
        || async { metric(worker, "worker_votes_total", "outcome=\"duplicate\"").await >= 10 },
    )
    .await;
    assert_eq!(stack.ballot_count(election).await, 10);
    let outcomes = stack.wait_decided(&receipts, Duration::from_secs(5)).await;
    assert!(outcomes.values().all(|s| s == "recorded"));
}

/// A worker SIGKILLed mid-drain, after committing part of what it leased and before acking all
/// of it: nothing is lost, nothing counts twice, and what it leased reaches the next worker
/// through Pub/Sub redelivery. Three rounds, each on its own subscription. Each round has both
/// crash windows: a transaction in flight while acks flow, and commits whose acks never arrive.
///
/// The doomed worker reaches the emulator through a proxy that is frozen before the kill, so the
/// emulator sees a client that went silent (a hung instance, a partition) rather than a closed
/// stream, which the emulator mishandles (docs/testing.md).
#[tokio::test]
async fn worker_killed_mid_drain_loses_and_doubles_nothing() {
    let stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 4, 1).await;
    let per_round = 400;
    let rounds = 3;
    let tokens = stack.tokens(TENANT, election, per_round * rounds).await;
    let mut receipts = Vec::new();
    let decided = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM elections.receipts WHERE election_id = $1",
        )
        .bind(election)
        .fetch_one(&stack.db.owner)
        .await
        .unwrap()
    };
    let admin = shared::pubsub::subscription_admin(&stack.pubsub.settings)
        .await
        .unwrap();
    let emulator = stack.emulator_addr().await;
    let database = shared::testkit::database_addr().await;
    for round in 0..rounds {
        // A fresh subscription per round, so no stream of an earlier round is attached to it. No
        // retry policy: the emulator does not redeliver a message whose lease expired twice on a
        // subscription with one (docs/testing.md); the redelivery proven here is the lease's.
        let subscription = format!("{}-r{round}", stack.pubsub.settings.subscription);
        let subscription_path = format!(
            "projects/{}/subscriptions/{subscription}",
            stack.pubsub.settings.project
        );
        admin
            .create_subscription()
            .set_name(&subscription_path)
            .set_topic(stack.pubsub.settings.topic_path())
            .set_ack_deadline_seconds(30)
            .send()
            .await
            .unwrap();
        let round_tokens = &tokens[round * per_round..(round + 1) * per_round];
        for chunk in round_tokens.chunks(50) {
            let answers =
                futures::future::join_all(chunk.iter().map(|t| stack.vote(election, t, &["o2"])))
                    .await;
            for a in answers {
                receipts.push(accepted_receipt(a, 202).await);
            }
        }

        // One stream, small batches committed one at a time: it leases the whole round at once
        // (the emulator sends a stream 100 messages every 50 ms whatever its flow control) and
        // is still committing when it dies. It reaches the emulator and the database through
        // proxies the test controls.
        let before = decided().await;
        let pubsub_link = shared::testkit::TcpProxy::start(emulator).await;
        let database_link = shared::testkit::TcpProxy::start(database).await;
        let pubsub_host = pubsub_link.addr.to_string();
        let database_url = stack
            .db
            .url_via(shared::testkit::Role::Worker, database_link.addr);
        let mut doomed = stack.spawn_worker_process(&[
            ("PUBSUB_EMULATOR_HOST", &pubsub_host),
            ("DATABASE_URL", &database_url),
            ("PUBSUB_SUBSCRIPTION", &subscription),
            ("STREAMS", "1"),
            ("BATCH_SIZE", "20"),
            ("WRITERS", "1"),
            ("LEASE_EXTENSION_SECS", "10"),
        ]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while decided().await < before + 100 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // 1. Its database stalls mid-batch while Pub/Sub still hears it: in 500 ms the client
        //    (which flushes acks every 100 ms) acks everything committed. A worker that acked a
        //    batch before committing it would lose that batch here.
        database_link.freeze();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // 2. Cut it off from Pub/Sub: from now on none of its acks or lease extensions arrive.
        pubsub_link.freeze();
        let cut_off = decided().await;
        // 3. The stalled connection closes (the database rolls the transaction back unless its
        //    COMMIT had arrived), the worker reconnects and commits more of what it holds: those
        //    votes are committed and certainly never acked, so they must come back and count once.
        database_link.down();
        database_link.up();
        let deadline = Instant::now() + Duration::from_secs(20);
        while decided().await == cut_off && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // 4. Crash.
        doomed.kill();
        database_link.down();
        // A COMMIT sent just before the kill may still land; count once the count is stable.
        let mut at_kill = decided().await;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = decided().await;
            if now == at_kill {
                break;
            }
            at_kill = now;
        }
        let unacked = at_kill - cut_off;
        assert!(
            cut_off >= before + 100 && unacked > 0 && at_kill < before + per_round as i64,
            "round {round}: the kill was not mid-drain \
             (before {before}, cut off at {cut_off}, killed at {at_kill})"
        );

        // The next worker gets, through redelivery after the 10 s lease, every vote the doomed
        // one leased: it records exactly the ones not committed, and sees the committed but
        // unacked ones as duplicates. No stalled worker is replaced: a replacement's abandoned
        // streams would take redeliveries away from the live one (docs/testing.md).
        let started = Instant::now();
        let mut next = stack.spawn_worker_process(&[("PUBSUB_SUBSCRIPTION", &subscription)]);
        let to_record = before + per_round as i64 - at_kill;
        // Each redelivery may go in part to the frozen stream, which the emulator still serves,
        // and come back one lease later: usually done in 10 to 30 s, but the bound is generous.
        let deadline = Instant::now() + Duration::from_secs(180);
        let (mut recorded, mut duplicates) = (0, 0);
        while (recorded < to_record || duplicates < unacked)
            && recorded <= to_record
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
            recorded = next.votes("recorded").await;
            duplicates = next.votes("duplicate").await;
        }
        eprintln!(
            "round {round}: the killed worker committed {} votes ({unacked} after it was cut \
             off, never acked); the next worker recorded {recorded} and ignored {duplicates} \
             redelivered duplicates within {:.1} s",
            at_kill - before,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            recorded, to_record,
            "round {round}: the next worker must record exactly the votes the killed one leased \
             and did not commit (fewer: votes lost; more: votes counted twice)"
        );
        assert!(
            duplicates >= unacked,
            "round {round}: every committed but unacked vote is redelivered \
             ({duplicates} duplicates, {unacked} unacked)"
        );
        let outcomes = stack.wait_decided(&receipts, Duration::from_secs(5)).await;
        assert!(
            outcomes.values().all(|s| s == "recorded"),
            "round {round}: every accepted vote recorded"
        );
        assert_eq!(
            stack.ballot_count(election).await,
            receipts.len() as i64,
            "round {round}: none twice"
        );
        // Graceful stop: SIGTERM drains and exits within its bound.
        let stopping = Instant::now();
        next.terminate();
        let status = next.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        assert!(stopping.elapsed() < Duration::from_secs(15));
        // Deleting the subscription ends the emulator's senders for it; then the frozen
        // connection can close without leaving one behind.
        admin
            .delete_subscription()
            .set_subscription(&subscription_path)
            .send()
            .await
            .unwrap();
        pubsub_link.down();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stack.ballot_count(election).await,
        (per_round * rounds) as i64
    );
}

#[tokio::test]
async fn database_outage_during_drain_loses_nothing_and_the_worker_resumes() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let proxy = shared::testkit::TcpProxy::start(shared::testkit::database_addr().await).await;
    let mut settings = stack.worker_settings();
    settings.database.url = stack.db.url_via(shared::testkit::Role::Worker, proxy.addr);
    stack.start_worker(settings).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 200).await;
    let mut receipts = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if i == 50 {
            proxy.down();
        }
        receipts.push(accepted_receipt(stack.vote(election, t, &["o0"]).await, 202).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.up();
    let outcomes = stack.wait_decided(&receipts, Duration::from_secs(60)).await;
    assert!(outcomes.values().all(|s| s == "recorded"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.ballot_count(election).await, 200);
}

#[tokio::test]
async fn pubsub_unreachable_gives_503_with_retry_after_within_the_budget() {
    // A port that accepts connections and never answers, and one nobody listens on.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = black_hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            held.push(socket);
        }
    });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for host in [hole_addr, closed] {
        let stack = Stack::start(StackOptions {
            ingest_pubsub_host: Some(host.to_string()),
            publish_timeout_ms: 1000,
            ..Default::default()
        })
        .await;
        let election = stack.open_election(TENANT, "single", 2, 1).await;
        let token = stack.tokens(TENANT, election, 1).await.remove(0);
        let started = Instant::now();
        let response = stack.vote(election, &token, &["o0"]).await;
        let elapsed = started.elapsed();
        assert_eq!(response.status(), 503);
        assert!(response.headers().get("retry-after").is_some());
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert!(
            elapsed < Duration::from_secs(3),
            "took {elapsed:?} with a 1 s budget"
        );
        // The vote may still reach Pub/Sub: the voter is told so, with its receipt to check and
        // how to retry without counting twice.
        let problem: Value = response.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("may or may not have been queued") && detail.contains("same request"),
            "{problem}"
        );
        assert!(
            problem["receipt"]
                .as_str()
                .is_some_and(|r| r.starts_with("r1.")),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn flipping_the_flag_while_votes_flow_loses_and_doubles_nothing() {
    let mut stack = Stack::start(StackOptions::default()).await;
    stack.start_worker(stack.worker_settings()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 300).await;
    let mut accepted = Vec::new();
    let mut modes = HashSet::new();
    for (i, chunk) in tokens.chunks(25).enumerate() {
        if i == 4 {
            stack.set_queue_mode(false).await;
        }
        if i == 8 {
            stack.set_queue_mode(true).await;
        }
        let answers =
            futures::future::join_all(chunk.iter().map(|t| stack.vote(election, t, &["o1"]))).await;
        for a in answers {
            let status = a.status().as_u16();
            let body: Value = a.json().await.unwrap();
            match status {
                201 | 202 => {
                    modes.insert(status);
                    accepted.push(body["receipt"].as_str().unwrap().to_owned());
                }
                503 => {}
                other => panic!("unexpected {other}: {body}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(
        modes,
        HashSet::from([201, 202]),
        "both modes were exercised"
    );
    let outcomes = stack.wait_decided(&accepted, Duration::from_secs(30)).await;
    assert!(outcomes.values().all(|s| s == "recorded"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.ballot_count(election).await, accepted.len() as i64);
}

#[tokio::test]
async fn a_receipt_tells_queued_recorded_rejected_and_unknown_apart() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let token = stack.tokens(TENANT, election, 1).await.remove(0);
    let receipt = accepted_receipt(stack.vote(election, &token, &["o0"]).await, 202).await;
    assert_eq!(stack.receipt(&receipt).await.1["status"], json!("queued"));
    // A validly signed token that events-svc never registered: accepted by ingest (it has no
    // database on the queue path), rejected by the worker with a reason the receipt shows.
    let signer = stack.keys.signer(TENANT);
    let now = chrono::Utc::now();
    let (unregistered, _) = signer.issue(election, now, now + chrono::Duration::hours(1));
    let rejected = accepted_receipt(stack.vote(election, &unregistered, &["o1"]).await, 202).await;
    stack.start_worker(stack.worker_settings()).await;
    stack
        .wait_decided(
            &[receipt.clone(), rejected.clone()],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(stack.receipt(&receipt).await.1["status"], json!("recorded"));
    let (_, body) = stack.receipt(&rejected).await;
    assert_eq!(body["status"], json!("rejected"));
    assert_eq!(body["reason"], json!("unknown_token"));
    // A receipt never issued.
    let mut forged = receipt.clone();
    forged.replace_range(10..12, if &receipt[10..12] == "AA" { "BB" } else { "AA" });
    assert_eq!(stack.receipt(&forged).await.0, 404);
    assert_eq!(stack.receipt("nonsense").await.0, 404);
    assert_eq!(stack.ballot_count(election).await, 1);
}

#[tokio::test]
async fn ballots_are_secret_after_a_run() {
    let mut stack = Stack::start(StackOptions::default()).await;
    stack.start_worker(stack.worker_settings()).await;
    let election = stack.open_election(TENANT, "single", 10, 1).await;
    let tokens = stack.tokens(TENANT, election, 120).await;
    let mut submitted = Vec::new();
    let mut receipts = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let choice = format!("o{}", (i * 7) % 10);
        receipts.push(accepted_receipt(stack.vote(election, t, &[&choice]).await, 202).await);
        submitted.push(choice);
    }
    stack.wait_decided(&receipts, Duration::from_secs(30)).await;
    stack
        .close_election(TENANT, election, "single", 10, 1)
        .await;
    stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;

    // Storage order is not submission order.
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT choices[1] FROM elections.ballots WHERE election_id = $1 ORDER BY ctid",
    )
    .bind(election)
    .fetch_all(&stack.db.owner)
    .await
    .unwrap();
    assert_eq!(stored.len(), submitted.len());
    assert_ne!(stored, submitted);
    // No ballot shares a transaction id with any token or receipt row.
    let linked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM elections.ballots b WHERE b.election_id = $1 AND ( \
            EXISTS (SELECT 1 FROM elections.voting_tokens t WHERE t.xmin = b.xmin) OR \
            EXISTS (SELECT 1 FROM elections.receipts r WHERE r.xmin = b.xmin))",
    )
    .bind(election)
    .fetch_one(&stack.db.owner)
    .await
    .unwrap();
    assert_eq!(linked, 0);
    // All sealed ballots share one transaction id: the seal's.
    let xmins: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM elections.ballots WHERE election_id = $1",
    )
    .bind(election)
    .fetch_one(&stack.db.owner)
    .await
    .unwrap();
    assert_eq!(xmins, 1);
}

#[tokio::test]
async fn tenant_b_cannot_vote_or_read_in_tenant_a() {
    let stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    // Tenant B's key signing a token for A's election: refused.
    let signer = stack.keys.signer(OTHER_TENANT);
    let now = chrono::Utc::now();
    let (token, _) = signer.issue(election, now, now + chrono::Duration::hours(1));
    let r = stack.vote(election, &token, &["o0"]).await;
    assert_eq!(r.status(), 404, "tenant B does not see A's election");
    // Tenant B's S2S key cannot read A's results.
    let err = stack
        .s2s
        .call(
            &stack.tenant(OTHER_TENANT),
            axum::http::Method::GET,
            &format!("/internal/v1/elections/{election}/results"),
            None,
            None,
            &shared::telemetry::CorrelationId::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, shared::s2s::CallError::Status { status, .. } if status == 404));
    assert_eq!(
        drain_count(&stack.pubsub.settings, Duration::from_secs(2)).await,
        0
    );
}

#[tokio::test]
async fn every_rejection_reason_reaches_the_receipt() {
    use shared::domain::TokenHash;
    use shared::receipt::Receipt;
    let stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 2).await;
    let key = stack.keys.receipt_key();
    let verifier =
        shared::token::TokenVerifier::from_config(&stack.keys.public_keys_config()).unwrap();
    let now = chrono::Utc::now();
    let message = |token: &str, choices: &[&str], accepted_at: chrono::DateTime<chrono::Utc>| {
        let verified = verifier.verify(token, election, now).unwrap();
        let choices: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
        let submission = shared::receipt::submission_digest(&choices, None);
        VoteMessage {
            tenant: verified.tenant.clone(),
            election_id: election,
            token_hash: verified.token_hash(),
            receipt: key.derive(election, verified.token_id(), &submission),
            choices,
            accepted_at,
        }
    };
    let unknown = VoteMessage {
        token_hash: TokenHash::of_token_id(b"never registered"),
        receipt: Receipt::from_trusted("r1.unknown".into()),
        ..message(&tokens[0], &["o0"], now)
    };
    // A definition changed in flight is the only way an invalid ballot reaches the worker.
    let invalid = message(&tokens[0], &["o9"], now);
    stack.close_election(TENANT, election, "single", 2, 1).await;
    let late = message(
        &tokens[1],
        &["o1"],
        chrono::Utc::now() + chrono::Duration::seconds(5),
    );
    let pool = stack.db.pool(shared::testkit::Role::Worker).await;
    let outcomes = worker::batch::commit(
        &pool,
        &stack.vote_keys(),
        &[unknown.clone(), invalid.clone(), late.clone()],
    )
    .await
    .unwrap()
    .outcomes;
    use shared::domain::RejectionReason::*;
    use worker::batch::Outcome::Rejected;
    assert_eq!(
        outcomes,
        vec![
            Rejected(UnknownToken),
            Rejected(InvalidBallot),
            Rejected(ElectionClosed)
        ]
    );
    for (m, reason) in [(&invalid, "invalid_ballot"), (&late, "election_closed")] {
        let (code, body) = stack.receipt(m.receipt.as_str()).await;
        assert_eq!(code, 200);
        assert_eq!(
            (body["status"].as_str(), body["reason"].as_str()),
            (Some("rejected"), Some(reason))
        );
    }
    assert_eq!(stack.ballot_count(election).await, 0);
}

/// Adaptive batching: a vote that finds no other being published goes out at once in a
/// Publish request of its own; votes arriving together share requests. Every one is published.
#[tokio::test]
async fn a_lone_vote_is_published_at_once_and_votes_arriving_together_share_requests() {
    let stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 3, 1).await;
    let tokens = stack.tokens(TENANT, election, 41).await;
    let internal: std::net::SocketAddr = stack
        .internal_url
        .trim_start_matches("http://")
        .parse()
        .expect("ingest's internal address");
    for token in &tokens[..3] {
        accepted_receipt(stack.vote(election, token, &["o0"]).await, 202).await;
    }
    assert_eq!(
        metric(internal, "votes_published_total", "\"immediate\"").await,
        3,
        "one at a time: none waited to share a request"
    );
    assert_eq!(
        metric(internal, "votes_published_total", "\"batched\"").await,
        0
    );
    let answers = futures::future::join_all(
        tokens[3..]
            .iter()
            .map(|token| stack.vote(election, token, &["o1"])),
    )
    .await;
    for answer in answers {
        accepted_receipt(answer, 202).await;
    }
    let immediate = metric(internal, "votes_published_total", "\"immediate\"").await;
    let batched = metric(internal, "votes_published_total", "\"batched\"").await;
    assert!(
        batched > 0,
        "38 votes at once: some found another in flight"
    );
    assert_eq!(immediate + batched, 41);
    assert_eq!(
        drain_count(&stack.pubsub.settings, Duration::from_secs(3)).await,
        41,
        "every vote answered 202 is on the topic"
    );
}
