//! The vote path end to end: ingest (real HTTP) → Pub/Sub emulator → worker → PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};
use shared::vote::VoteMessage;
use testkit::elections::{
    accepted_receipt, drain_dead_letters, metric, Stack, StackOptions, TENANT,
};
use testkit::{database_addr, eventually, Role, TcpProxy};
use uuid::Uuid;

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
        let content_type = response.headers().get("content-type").cloned();
        assert_eq!(content_type.unwrap(), "application/json");
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
    stack.until_ingest_mode(election, ids[0], false).await;
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
async fn redelivered_batch_after_a_lost_ack_adds_no_second_ballot() {
    let stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 10).await;
    // A second subscription sees the same messages: through it the test commits them once
    // (the first delivery) while the worker's subscription still holds them all (the
    // redelivery after a lost ack). A stream of the test's own on the worker's subscription
    // would leave the emulator a sender that swallows the redelivery (docs/emulator.md).
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
    let worker_pool = stack.db.pool(testkit::Role::Worker).await;
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
    eventually(Duration::from_secs(30), || async {
        metric(worker, "worker_votes_total", "outcome=\"duplicate\"").await >= 10
    })
    .await
    .expect("the 10 redeliveries reach the worker");
    assert_eq!(stack.ballot_count(election).await, 10);
    let outcomes = stack.wait_decided(&receipts, Duration::from_secs(5)).await;
    assert!(outcomes.values().all(|s| s == "recorded"));
}

#[tokio::test]
async fn database_outage_during_drain_loses_nothing_and_the_worker_resumes() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let proxy = TcpProxy::start(database_addr().await).await;
    let mut settings = stack.worker_settings();
    settings.database.url = stack.db.url_via(Role::Worker, proxy.addr);
    let worker = stack.start_worker(settings).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 200).await;
    let mut receipts = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if i == 50 {
            proxy.down();
        }
        receipts.push(accepted_receipt(stack.vote(election, t, &["o0"]).await, 202).await);
    }
    // The worker meets the outage, and the votes sent during it wait.
    eventually(Duration::from_secs(30), || async {
        metric(worker, "worker_failed_batches_total", "").await >= 1
    })
    .await
    .expect("the worker found its database unavailable");
    let decided: i64 =
        sqlx::query_scalar("SELECT count(*) FROM elections.receipts WHERE election_id = $1")
            .bind(election)
            .fetch_one(&stack.db.owner)
            .await
            .unwrap();
    assert!(decided < 200, "{decided} of 200 decided during the outage");
    proxy.up();
    let outcomes = stack.wait_decided(&receipts, Duration::from_secs(60)).await;
    assert!(outcomes.values().all(|s| s == "recorded"));
    // The end state: sealed once the queue drained, with every vote once.
    stack.close_election(TENANT, election, "single", 2, 1).await;
    let results = stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;
    assert_eq!(results["total"], json!(200), "{results}");
    assert_eq!(stack.ballot_count(election).await, 200);
}

#[tokio::test]
async fn flipping_the_flag_while_votes_flow_loses_and_doubles_nothing() {
    let mut stack = Stack::start(StackOptions::default()).await;
    stack.start_worker(stack.worker_settings()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 300).await;
    let mut accepted = Vec::new();
    // The answers of each phase: queue mode, direct mode after the flip, queue mode again.
    let mut phases: Vec<HashSet<u16>> = vec![HashSet::new(); 3];
    let mut chunks = tokens.chunks(25);
    for (phase, flag) in [(0, true), (1, false), (2, true)] {
        if phase > 0 {
            stack.set_queue_mode(flag).await;
        }
        // Votes keep coming while ingest notices the flag: each phase lasts at least 4 chunks,
        // and until its own mode was answered (ingest re-reads the flag every 200 ms).
        let mode = if flag { 202 } else { 201 };
        let mut sent = 0;
        while sent < 4 || !phases[phase].contains(&mode) {
            let chunk = chunks
                .next()
                .expect("ingest followed the flag within 300 votes");
            let answers =
                futures::future::join_all(chunk.iter().map(|t| stack.vote(election, t, &["o1"])))
                    .await;
            for a in answers {
                let status = a.status().as_u16();
                let body: Value = a.json().await.unwrap();
                match status {
                    201 | 202 => {
                        phases[phase].insert(status);
                        accepted.push(body["receipt"].as_str().unwrap().to_owned());
                    }
                    503 => {}
                    other => panic!("unexpected {other}: {body}"),
                }
            }
            sent += 1;
            // Pacing, not waiting: votes flow at about 25 per 150 ms across the flips.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    let outcomes = stack.wait_decided(&accepted, Duration::from_secs(30)).await;
    assert!(outcomes.values().all(|s| s == "recorded"));
    // The end state: sealed once the queue drained, with every accepted vote once.
    stack.close_election(TENANT, election, "single", 2, 1).await;
    let results = stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;
    assert_eq!(results["total"], json!(accepted.len()), "{results}");
    assert_eq!(stack.ballot_count(election).await, accepted.len() as i64);
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

/// Each of the four rejection reasons, decided by the worker, is what the voter's receipt says.
#[tokio::test]
async fn every_rejection_reason_reaches_the_receipt() {
    use shared::domain::RejectionReason::{self, *};
    use shared::domain::TokenHash;
    use worker::batch::Outcome::{Recorded, Rejected};
    let stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 3).await;
    let now = chrono::Utc::now();
    let unknown = {
        // A well-formed message for a token never registered, with the receipt ingest would
        // have given it.
        let never = b"never registered";
        let mut m = stack.message(election, &tokens[0], &["o0"], now);
        let submission = shared::receipt::submission_digest(&m.choices, None);
        m.token_hash = TokenHash::of_token_id(never);
        m.receipt = stack
            .keys
            .receipt_key()
            .derive(election, never, &submission);
        m
    };
    // A definition changed in flight is the only way an invalid ballot reaches the worker.
    let invalid = stack.message(election, &tokens[0], &["o9"], now);
    let first = stack.message(election, &tokens[2], &["o0"], now);
    let again = stack.message(election, &tokens[2], &["o1"], now);
    stack.close_election(TENANT, election, "single", 2, 1).await;
    let late = stack.message(
        election,
        &tokens[1],
        &["o1"],
        chrono::Utc::now() + chrono::Duration::seconds(5),
    );
    let pool = stack.db.pool(Role::Worker).await;
    let keys = stack.vote_keys();
    // The token's first ballot, accepted before the close, is recorded; its second is not.
    let outcomes = worker::batch::commit(&pool, &keys, std::slice::from_ref(&first))
        .await
        .unwrap()
        .outcomes;
    assert_eq!(outcomes, vec![Recorded]);
    let rejected: [(&VoteMessage, RejectionReason); 4] = [
        (&unknown, UnknownToken),
        (&again, TokenAlreadyUsed),
        (&invalid, InvalidBallot),
        (&late, ElectionClosed),
    ];
    let messages: Vec<VoteMessage> = rejected.iter().map(|(m, _)| (*m).clone()).collect();
    let outcomes = worker::batch::commit(&pool, &keys, &messages)
        .await
        .unwrap()
        .outcomes;
    assert_eq!(
        outcomes,
        rejected
            .iter()
            .map(|(_, r)| Rejected(*r))
            .collect::<Vec<_>>()
    );
    for (m, reason) in rejected {
        let (code, body) = stack.receipt(m.receipt.as_str()).await;
        assert_eq!(code, 200, "{reason:?}: {body}");
        assert_eq!(
            (body["status"].as_str(), body["reason"].as_str()),
            (Some("rejected"), Some(reason.as_str())),
            "{body}"
        );
    }
    assert_eq!(
        stack.ballot_count(election).await,
        1,
        "the first ballot only"
    );
}
