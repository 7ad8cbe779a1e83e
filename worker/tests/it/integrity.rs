//! Invariants 1-3 under the faults production brings: a database outage longer than every
//! delivery attempt, a vote that fails on its own, a worker killed holding votes, a vote that
//! arrives after its election was sealed, a forged or backdated message, an election that ends
//! by its `closes_at`. Each test runs the real worker against the emulator and PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use testkit::elections::{
    accepted_receipt, drain_dead_letters, metric, Stack, StackOptions, TENANT,
};
use testkit::{database_addr, eventually, Role, TcpProxy};
use uuid::Uuid;

use crate::support::WorkerProcess;

/// Receipt → (status, reason) for the receipts that have an outcome.
async fn outcomes(stack: &Stack, receipts: &[String]) -> HashMap<String, (String, Option<String>)> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT receipt, status, reason FROM elections.receipts WHERE receipt = ANY($1)",
    )
    .bind(receipts)
    .fetch_all(&stack.db.owner)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(r, s, reason)| (r, (s, reason)))
        .collect()
}

/// Polls the results until every receipt is recorded and the results are final; every time the
/// results say final before that, the test fails: final must mean final.
async fn final_only_after_every_vote(
    stack: &Stack,
    election: Uuid,
    receipts: &[String],
    within: Duration,
) -> Value {
    eventually(within, || async {
        let decided = outcomes(stack, receipts).await;
        let results = stack.results(TENANT, election).await;
        let recorded = decided.values().filter(|(s, _)| s == "recorded").count();
        if results["final"] != json!(true) {
            return Err(format!(
                "{recorded} of {} recorded; {results}",
                receipts.len()
            ));
        }
        assert_eq!(
            recorded,
            receipts.len(),
            "results final while accepted votes were not recorded"
        );
        Ok(results)
    })
    .await
    .expect("the results became final")
}

async fn closed_at(stack: &Stack, election: Uuid) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT closed_at FROM elections.elections WHERE id = $1")
        .bind(election)
        .fetch_one(&stack.db.owner)
        .await
        .unwrap()
}

/// Test subscription: 5 delivery attempts with 1-2 s backoff, so an outage of seconds here is
/// what an outage of hours is against production's 100 attempts and 10-600 s backoff.
#[tokio::test]
async fn a_database_outage_longer_than_every_delivery_attempt_loses_no_vote() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let proxy = TcpProxy::start(database_addr().await).await;
    let mut settings = stack.worker_settings();
    settings.database.url = stack.db.url_via(Role::Worker, proxy.addr);
    let worker = stack.start_worker(settings).await;
    let election = stack.open_election(TENANT, "single", 3, 1).await;
    let tokens = stack.tokens(TENANT, election, 120).await;
    let mut receipts = Vec::new();
    let mut expected: HashMap<String, i64> = HashMap::new();
    for (i, token) in tokens.iter().enumerate() {
        if i == 40 {
            // The worker's database goes away in the middle of the burst.
            proxy.down();
        }
        let choice = format!("o{}", i % 3);
        *expected.entry(choice.clone()).or_default() += 1;
        receipts.push(accepted_receipt(stack.vote(election, token, &[&choice]).await, 202).await);
    }
    eventually(Duration::from_secs(120), || async {
        metric(worker, "worker_dead_letter_votes_total", "").await >= 10
    })
    .await
    .expect("votes used up their delivery attempts and reached the dead-letter subscription");
    let undecided = receipts.len() - outcomes(&stack, &receipts).await.len();
    assert!(
        undecided >= 10,
        "the outage held votes back ({undecided} undecided)"
    );
    // Closed while votes are dead-lettered: the results wait for them.
    stack.close_election(TENANT, election, "single", 3, 1).await;
    assert_eq!(stack.results(TENANT, election).await["final"], json!(false));
    proxy.up();

    let results =
        final_only_after_every_vote(&stack, election, &receipts, Duration::from_secs(120)).await;
    assert_eq!(results["total"], json!(120), "{results}");
    for (option, count) in &expected {
        assert_eq!(results["tally"][option], json!(count), "{results}");
    }
    assert_eq!(
        drain_dead_letters(&stack).await,
        0,
        "nothing is left in the dead-letter subscription"
    );
}

/// A vote that fails to commit on its own (here: its token's row refuses the claim) costs its
/// batch-mates nothing, keeps its election from being sealed while it is retried, and is
/// recorded (not refused as too late) once it can be.
#[tokio::test]
async fn a_failing_vote_neither_holds_back_its_batch_mates_nor_gets_sealed_out() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let worker = stack.start_worker(stack.worker_settings()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 20).await;
    sqlx::raw_sql(
        "CREATE TABLE ops.blocked_tokens (token_hash bytea PRIMARY KEY); \
         CREATE FUNCTION ops.refuse_blocked() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
         SET search_path = pg_catalog AS $$ BEGIN \
           IF EXISTS (SELECT 1 FROM ops.blocked_tokens b WHERE b.token_hash = NEW.token_hash) THEN \
             RAISE EXCEPTION 'blocked by the test'; \
           END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_blocked BEFORE UPDATE ON elections.voting_tokens \
           FOR EACH ROW EXECUTE FUNCTION ops.refuse_blocked();",
    )
    .execute(&stack.db.owner)
    .await
    .unwrap();
    let blocked: Vec<Vec<u8>> = tokens[..5]
        .iter()
        .map(|t| stack.token_hash(election, t).0.to_vec())
        .collect();
    sqlx::query("INSERT INTO ops.blocked_tokens SELECT unnest($1::bytea[])")
        .bind(&blocked)
        .execute(&stack.db.owner)
        .await
        .unwrap();

    // One burst: the blocked votes share batches with the others.
    let answers =
        futures::future::join_all(tokens.iter().map(|t| stack.vote(election, t, &["o1"]))).await;
    let mut receipts = Vec::new();
    for answer in answers {
        receipts.push(accepted_receipt(answer, 202).await);
    }
    let (held, free) = receipts.split_at(5);
    stack.wait_decided(free, Duration::from_secs(30)).await;
    assert!(metric(worker, "worker_poison_votes_total", "").await >= 1);
    assert!(
        outcomes(&stack, held).await.is_empty(),
        "the blocked votes are not decided"
    );

    stack.close_election(TENANT, election, "single", 2, 1).await;
    // The worker keeps retrying them after the close (past the 1 s seal delay)...
    let retried = metric(worker, "worker_poison_votes_total", "").await;
    eventually(Duration::from_secs(60), || async {
        metric(worker, "worker_poison_votes_total", "").await >= retried + 5
    })
    .await
    .expect("the blocked votes are retried after the close");
    // ...and the election is not sealed without them.
    let results = stack.results(TENANT, election).await;
    assert_eq!(results["final"], json!(false), "{results}");
    assert_eq!(results["sealed"], json!(false), "{results}");

    sqlx::query("DELETE FROM ops.blocked_tokens")
        .execute(&stack.db.owner)
        .await
        .unwrap();
    let results =
        final_only_after_every_vote(&stack, election, &receipts, Duration::from_secs(90)).await;
    assert_eq!(results["total"], json!(20));
    assert_eq!(results["tally"]["o1"], json!(20));
}

/// A worker that leased votes accepted before the close and died without committing them: its
/// votes come back after the lease and are recorded, and the election waits for them.
#[tokio::test]
async fn votes_leased_by_a_worker_that_died_are_recorded_before_the_seal() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 10).await;
    // A subscription without a retry policy: the emulator can lose a message whose lease
    // expired more than once on one with a policy (docs/emulator.md); Pub/Sub does not.
    stack.observer_subscription("crash").await;
    let subscription = format!("{}-crash", stack.pubsub.settings.topic);
    // The doomed worker reaches its database through a link that goes silent: it leases the
    // votes and hangs committing them.
    let database_link = TcpProxy::start(database_addr().await).await;
    let database_url = stack.db.url_via(Role::Worker, database_link.addr);
    let mut doomed = WorkerProcess::spawn(
        &stack,
        &[
            ("DATABASE_URL", &database_url),
            ("PUBSUB_SUBSCRIPTION", &subscription),
            ("STREAMS", "1"),
            ("LEASE_EXTENSION_SECS", "10"),
        ],
    );
    let doomed_addr = doomed.addr().await;
    database_link.freeze();
    let mut receipts = Vec::new();
    for token in &tokens {
        receipts.push(accepted_receipt(stack.vote(election, token, &["o0"]).await, 202).await);
    }
    eventually(Duration::from_secs(30), || async {
        metric(
            doomed_addr,
            "worker_messages_received_total",
            "subscription=\"votes\"",
        )
        .await
            >= 10
    })
    .await
    .expect("the doomed worker leased every vote");
    stack.close_election(TENANT, election, "single", 2, 1).await;
    doomed.kill();
    database_link.down();

    // A healthy worker: idle at once (nothing is deliverable until the leases expire).
    let mut settings = stack.worker_settings();
    settings.pubsub.subscription = subscription;
    stack.start_worker(settings).await;
    let results =
        final_only_after_every_vote(&stack, election, &receipts, Duration::from_secs(180)).await;
    assert_eq!(results["total"], json!(10));
    assert_eq!(results["tally"]["o0"], json!(10));
}

/// Sealing is not the end of a vote accepted before the close: if one still arrives (its ingest
/// died before telling the ledger), it is recorded and the election is sealed again with it.
#[tokio::test]
async fn a_vote_accepted_before_the_close_that_arrives_after_the_seal_is_recorded_and_resealed() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let mut settings = stack.worker_settings();
    // The vote below is published well after its accepted_at; allow it here.
    settings.publish_grace = Duration::from_secs(600);
    let worker = stack.start_worker(settings).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 3).await;
    let mut receipts = Vec::new();
    for token in &tokens[..2] {
        receipts.push(accepted_receipt(stack.vote(election, token, &["o0"]).await, 202).await);
    }
    stack.close_election(TENANT, election, "single", 2, 1).await;
    let sealed = stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;
    assert_eq!(sealed["total"], json!(2));

    let late = stack.message(
        election,
        &tokens[2],
        &["o1"],
        closed_at(&stack, election).await - chrono::Duration::seconds(1),
    );
    stack.publish(&late, &stack.vote_keys()).await;
    stack
        .wait_decided(&[late.receipt.to_string()], Duration::from_secs(30))
        .await;
    assert_eq!(
        stack.receipt(late.receipt.as_str()).await.1["status"],
        json!("recorded")
    );
    assert!(metric(worker, "worker_votes_after_seal_total", "").await >= 1);
    let resealed = stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;
    assert_eq!(resealed["total"], json!(3), "{resealed}");
    assert_eq!(resealed["tally"]["o1"], json!(1), "{resealed}");
    // The reseal rewrote every ballot: they share one transaction id again.
    let xmins: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM elections.ballots WHERE election_id = $1",
    )
    .bind(election)
    .fetch_one(&stack.db.owner)
    .await
    .unwrap();
    assert_eq!(xmins, 1);
}

/// Only ingest and the worker hold the vote keys: a message written without them is not a vote,
/// and one dated before the close but published long after it counts as published.
#[tokio::test]
async fn forged_and_backdated_messages_are_not_counted() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let mut settings = stack.worker_settings();
    settings.publish_grace = Duration::from_secs(1);
    let worker = stack.start_worker(settings).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 2).await;

    // Someone who can publish to the topic and knows a registered token, but not the vote key.
    let stranger = shared::vote_keys::VoteKeys::from_config(
        &shared::vote_keys::VoteKeys::generate_config("test-v1"),
    )
    .unwrap();
    let forged = stack.message(election, &tokens[0], &["o1"], Utc::now());
    stack.publish(&forged, &stranger).await;
    eventually(Duration::from_secs(30), || async {
        metric(worker, "worker_undecodable_total", "kind=\"forged\"").await >= 1
    })
    .await
    .expect("the forgery is counted");
    // Nothing of it was recorded and the token is still the voter's.
    assert!(outcomes(&stack, &[forged.receipt.to_string()])
        .await
        .is_empty());
    let genuine = accepted_receipt(stack.vote(election, &tokens[0], &["o0"]).await, 202).await;
    stack
        .wait_decided(std::slice::from_ref(&genuine), Duration::from_secs(30))
        .await;
    assert_eq!(stack.receipt(&genuine).await.1["status"], json!("recorded"));

    // A key holder publishing after the close a vote dated before it.
    stack.close_election(TENANT, election, "single", 2, 1).await;
    let closed = closed_at(&stack, election).await;
    eventually(Duration::from_secs(10), || async {
        Utc::now() > closed + chrono::Duration::seconds(2)
    })
    .await
    .expect("the close is 2 s old");
    let backdated = stack.message(
        election,
        &tokens[1],
        &["o1"],
        closed - chrono::Duration::seconds(1),
    );
    stack.publish(&backdated, &stack.vote_keys()).await;
    let receipt = backdated.receipt.to_string();
    stack
        .wait_decided(std::slice::from_ref(&receipt), Duration::from_secs(30))
        .await;
    let (_, body) = stack.receipt(&receipt).await;
    assert_eq!(
        (body["status"].as_str(), body["reason"].as_str()),
        (Some("rejected"), Some("election_closed"))
    );
    let results = stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;
    assert_eq!(results["total"], json!(1));
}

/// An election with a `closes_at` nobody acts on closes then, is sealed, and refuses a vote
/// accepted at or after it whatever the accepting clock said.
#[tokio::test]
async fn an_election_reaching_closes_at_closes_and_seals_by_itself() {
    let mut stack = Stack::start(StackOptions::default()).await;
    stack.start_worker(stack.worker_settings()).await;
    let election = Uuid::new_v4();
    let closes_at = Utc::now() + chrono::Duration::seconds(4);
    let options: Vec<Value> = (0..2)
        .map(|i| json!({"id": format!("o{i}"), "label": format!("Option {i}")}))
        .collect();
    stack
        .put_election(
            TENANT,
            election,
            json!({"kind": "single", "options": options, "max_choices": 1, "status": "open",
                   "opens_at": null, "closes_at": closes_at}),
        )
        .await;
    let tokens = stack.tokens(TENANT, election, 3).await;
    let mut receipts = Vec::new();
    for token in &tokens[..2] {
        receipts.push(accepted_receipt(stack.vote(election, token, &["o0"]).await, 202).await);
    }
    // An ingest whose clock runs behind would accept this one; the worker does not.
    let too_late = stack.message(election, &tokens[2], &["o1"], closes_at);
    stack.publish(&too_late, &stack.vote_keys()).await;

    let results = stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;
    assert_eq!(results["total"], json!(2), "{results}");
    assert_eq!(results["tally"]["o0"], json!(2), "{results}");
    let status: (String, DateTime<Utc>) =
        sqlx::query_as("SELECT status, closed_at FROM elections.elections WHERE id = $1")
            .bind(election)
            .fetch_one(&stack.db.owner)
            .await
            .unwrap();
    assert_eq!(status.0, "closed");
    assert_eq!(status.1.timestamp_millis(), closes_at.timestamp_millis());
    stack
        .wait_decided(&[too_late.receipt.to_string()], Duration::from_secs(30))
        .await;
    let (_, body) = stack.receipt(too_late.receipt.as_str()).await;
    assert_eq!(body["reason"], json!("election_closed"), "{body}");
    let recorded: HashSet<String> = outcomes(&stack, &receipts).await.into_keys().collect();
    assert_eq!(recorded.len(), 2);
}

/// Least privilege: ingest writes a vote only through direct mode's function, the worker never
/// writes a plaintext ballot or changes an election outside the seal; and whoever writes a ballot
/// past them (the owner here) makes the results refuse to be final.
#[tokio::test]
async fn a_compromised_service_cannot_stuff_ballots_and_stuffing_is_not_final() {
    let mut stack = Stack::start(StackOptions::default()).await;
    stack.start_worker(stack.worker_settings()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 2).await;
    for token in &tokens {
        accepted_receipt(stack.vote(election, token, &["o0"]).await, 202).await;
    }
    let refused = |role: Role, sql: &'static str| {
        let stack = &stack;
        async move {
            let pool = stack.db.pool(role).await;
            let mut tx = shared::db::begin_for_tenant(&pool, &stack.tenant(TENANT))
                .await
                .unwrap();
            let error = sqlx::query(sql)
                .bind(election)
                .execute(&mut *tx)
                .await
                .expect_err(sql);
            let code = error
                .as_database_error()
                .and_then(|e| e.code())
                .map(|c| c.into_owned());
            assert_eq!(code.as_deref(), Some("42501"), "{role:?} {sql}: {error}");
        }
    };
    for sql in [
        "INSERT INTO elections.ballots (org_id, election_id, choices) VALUES ('party-a', $1, '{o1}')",
        "INSERT INTO elections.ballot_box (org_id, election_id, sealed) VALUES ('party-a', $1, '\\x00000000000000000000000000000000000000000000000000')",
        "UPDATE elections.voting_tokens SET used = false WHERE election_id = $1",
        "INSERT INTO elections.receipts (receipt, org_id, election_id, status) VALUES ('r1.x', 'party-a', $1, 'recorded')",
        "UPDATE elections.receipts SET status = 'recorded', reason = NULL WHERE election_id = $1",
    ] {
        refused(Role::Ingest, sql).await;
    }
    for sql in [
        "INSERT INTO elections.ballots (org_id, election_id, choices) VALUES ('party-a', $1, '{o1}')",
        "DELETE FROM elections.ballots WHERE election_id = $1",
        "UPDATE elections.elections SET sealed_at = now() WHERE id = $1",
        "UPDATE elections.elections SET status = 'open', closed_at = NULL WHERE id = $1",
        "UPDATE elections.voting_tokens SET token_hash = token_hash WHERE election_id = $1",
    ] {
        refused(Role::Worker, sql).await;
    }

    stack.close_election(TENANT, election, "single", 2, 1).await;
    let sealed = stack
        .wait_final(TENANT, election, Duration::from_secs(30))
        .await;
    assert_eq!(sealed["total"], json!(2));
    // A ballot slipped in past every service: the count no longer matches the used tokens.
    sqlx::query(
        "INSERT INTO elections.ballots (org_id, election_id, choices) VALUES ('party-a', $1, '{o1}')",
    )
    .bind(election)
    .execute(&stack.db.owner)
    .await
    .unwrap();
    let results = stack.results(TENANT, election).await;
    assert_eq!(results["final"], json!(false), "{results}");
    assert_eq!(
        (results["total"].clone(), results["used_tokens"].clone()),
        (json!(3), json!(2))
    );
    assert!(
        results["integrity_problem"]
            .as_str()
            .is_some_and(|p| p.contains("not final")),
        "{results}"
    );
}
