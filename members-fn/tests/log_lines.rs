//! No log line pairs a member with a correlation id (security review M11): a voter app may
//! reuse one correlation id from login to vote, and the vote path carries it next to the
//! choices. members-fn's log lines about a login name the tenant, never the member id (nor
//! the national id). The test's subscriber is its thread's default, and its runtime runs
//! members-fn's tasks on that one thread, so it sees every line of this test and no other's.

#![allow(
    clippy::too_many_lines,
    reason = "a scenario test reads top to bottom: its steps are the story it tells"
)]

// A test binary of its own, as before the move to one binary per crate: the log capture is
// the process's global subscriber, so it sees every span from the start. As a thread's
// subscriber in the shared binary it missed the request spans of lines it captured (tracing
// caches a callsite's interest process-wide; other tests registered them first).
#[allow(dead_code, unused_imports)]
#[path = "it/support/mod.rs"]
mod support;

use crate::support::fake_issuer::FakeIssuer;
use crate::support::{kennitala, logs, Members};
use serde_json::json;
use testkit::oidc_provider as provider;

const ORG: &str = "party-a";

#[tokio::test]
async fn no_log_line_pairs_a_member_with_a_correlation_id() {
    let captured = logs::capture();

    let fake = FakeIssuer::start().await;
    let members = Members::start(&fake.settings()).await;
    let person = kennitala(13);
    let member_id = members.add_member(ORG, &person, &["member"]).await;
    let correlation = "reused-by-the-voter-app-0001";
    let dev = members
        .http
        .post(format!("{}/v1/auth/dev-login", members.url))
        .header("x-correlation-id", correlation)
        .json(&json!({"national_id": person}))
        .send()
        .await
        .unwrap();
    assert_eq!(dev.status(), 200);
    let started = provider::start(&members.url, "").await;
    let back = provider::follow(&started.authorization_url, &person).await;
    let response = members
        .http
        .get(format!(
            "{}{}?{}",
            members.url,
            back.path(),
            back.query().unwrap()
        ))
        .header("cookie", &started.cookie)
        .header("x-correlation-id", correlation)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let logs = captured.text();
    assert!(
        logs.contains("session issued"),
        "the logs were captured: {logs}"
    );
    assert!(
        logs.contains(correlation),
        "with the correlation id: {logs}"
    );
    assert!(
        !logs.contains(&member_id.to_string()),
        "a log line names the member: {logs}"
    );
    assert!(!logs.contains(&person), "a log line names the national id");
}
