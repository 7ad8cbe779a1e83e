//! A receipt as a voter reads it from ingest: queued, recorded, rejected with a reason, or unknown.

use std::time::Duration;

use serde_json::json;
use testkit::elections::{accepted_receipt, Stack, StackOptions, TENANT};

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
