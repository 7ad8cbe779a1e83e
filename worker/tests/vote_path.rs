//! The vote path end to end: ingest (real HTTP) → Pub/Sub emulator → worker → PostgreSQL.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::vote::VoteMessage;
use support::{drain_count, drain_dead_letters, Stack, StackOptions, OTHER_TENANT, TENANT};
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
    assert_eq!(results["total"], json!(60));
    assert_eq!(results["final"], json!(false), "not final while open");
    for (option, count) in &expected {
        assert_eq!(results["tally"][option], json!(count), "{results}");
    }

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

#[tokio::test]
async fn same_token_fifty_times_concurrently_gives_one_ballot_in_queue_mode() {
    let mut stack = Stack::start(StackOptions::default()).await;
    stack.start_worker(stack.worker_settings()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let token = stack.tokens(TENANT, election, 1).await.remove(0);
    let answers = futures::future::join_all((0..50).map(|i| {
        let choice = if i % 2 == 0 { "o0" } else { "o1" };
        let s = &stack;
        let t = &token;
        async move {
            let r = s.vote(election, t, &[choice]).await;
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    }))
    .await;
    let receipts: HashSet<String> = answers
        .iter()
        .map(|(s, b)| {
            assert_eq!(*s, 202, "{b}");
            b["receipt"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        receipts.len(),
        1,
        "a retry of the same token gets the same receipt"
    );
    let receipt: Vec<String> = receipts.into_iter().collect();
    stack.wait_decided(&receipt, Duration::from_secs(30)).await;
    // Let every duplicate delivery reach the worker, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.ballot_count(election).await, 1);
    assert_eq!(
        stack.receipt(&receipt[0]).await.1["status"],
        json!("recorded")
    );
}

#[tokio::test]
async fn same_token_fifty_times_concurrently_gives_one_ballot_in_direct_mode() {
    let stack = Stack::start(StackOptions {
        queue_mode: false,
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
    // Accept the votes (published, no worker running yet).
    let mut receipts = Vec::new();
    for t in &tokens {
        receipts.push(accepted_receipt(stack.vote(election, t, &["o1"]).await, 202).await);
    }
    // Pull them ourselves, commit the batch, and "lose" the acks by nacking.
    let subscriber = shared::pubsub::subscriber(&stack.pubsub.settings)
        .await
        .unwrap();
    let mut stream = subscriber
        .subscribe(stack.pubsub.settings.subscription_path())
        .build();
    let mut votes = Vec::new();
    while votes.len() < 10 {
        let (m, h) = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        votes.push(VoteMessage::decode(&m.data).unwrap());
        h.nack();
    }
    let worker_pool = stack.db.pool(shared::testkit::Role::Worker).await;
    let first = worker::batch::commit(&worker_pool, &votes).await.unwrap();
    assert!(first.iter().all(|o| *o == worker::batch::Outcome::Recorded));
    // The same batch committed again (what a redelivery does): only duplicates.
    let second = worker::batch::commit(&worker_pool, &votes).await.unwrap();
    assert!(
        second
            .iter()
            .all(|o| *o == worker::batch::Outcome::Duplicate),
        "{second:?}"
    );
    drop(stream);
    // And the real worker receiving the redeliveries changes nothing either.
    let mut stack = stack;
    stack.start_worker(stack.worker_settings()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(stack.ballot_count(election).await, 10);
    let outcomes = stack.wait_decided(&receipts, Duration::from_secs(5)).await;
    assert!(outcomes.values().all(|s| s == "recorded"));
}

#[tokio::test]
async fn worker_killed_mid_drain_loses_and_doubles_nothing() {
    let stack = Stack::start(StackOptions {
        max_delivery_attempts: 20,
        ..Default::default()
    })
    .await;
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
    for round in 0..rounds {
        // One subscription per round: the emulator (0.8.20) wedges a subscription after a few
        // StreamingPull clients on it were killed (docs/testing.md); Pub/Sub does not.
        let subscription = format!("{}-r{round}", stack.pubsub.settings.subscription);
        admin
            .create_subscription()
            .set_name(format!(
                "projects/{}/subscriptions/{subscription}",
                stack.pubsub.settings.project
            ))
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
        // A worker that commits small batches one at a time leases the whole round, commits
        // part of it and is SIGKILLed mid-drain.
        let before = decided().await;
        let mut doomed = stack.spawn_worker_process(&[
            ("BATCH_SIZE", "20"),
            ("WRITERS", "1"),
            ("PUBSUB_SUBSCRIPTION", &subscription),
        ]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while decided().await < before + 100 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        doomed.0.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
        doomed.0.wait().unwrap();
        let at_kill = decided().await;
        assert!(
            at_kill > before && at_kill < before + per_round as i64,
            "round {round}: the kill was not mid-drain ({before} -> {at_kill})"
        );
        // Its uncommitted votes come back after their lease (10 s) to the next worker; the
        // ones it committed but had not acked come back too and must not count twice.
        let mut next = stack.spawn_worker_process(&[("PUBSUB_SUBSCRIPTION", &subscription)]);
        // The emulator sometimes hands expired leases only to a stream opened after they
        // expired (docs/testing.md): if the next worker stalls, it is replaced, as the
        // platform would replace a worker. Real Pub/Sub redelivers to open streams.
        let mut replaced = 0;
        let mut started = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(120);
        while decided().await < receipts.len() as i64 && Instant::now() < deadline {
            if started.elapsed() > Duration::from_secs(15) {
                std::process::Command::new("kill")
                    .args(["-TERM", &next.0.id().to_string()])
                    .status()
                    .unwrap();
                next.0.wait().unwrap();
                next = stack.spawn_worker_process(&[("PUBSUB_SUBSCRIPTION", &subscription)]);
                started = Instant::now();
                replaced += 1;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!("round {round}: the next worker was replaced {replaced} times");
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
        std::process::Command::new("kill")
            .args(["-TERM", &next.0.id().to_string()])
            .status()
            .unwrap();
        let status = next.0.wait().unwrap();
        assert!(status.success(), "{status:?}");
        assert!(stopping.elapsed() < Duration::from_secs(15));
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
    let _ = Uuid::nil();
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
        VoteMessage {
            v: shared::vote::VERSION,
            tenant: verified.tenant.clone(),
            election_id: election,
            token_hash: verified.token_hash(),
            receipt: key.derive(election, verified.token_id()),
            choices: choices.iter().map(|c| c.to_string()).collect(),
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
    let outcomes = worker::batch::commit(&pool, &[unknown.clone(), invalid.clone(), late.clone()])
        .await
        .unwrap();
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
