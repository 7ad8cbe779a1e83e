//! No log line pairs a member with a correlation id (security review M11): a voter app may
//! reuse one correlation id from login to vote, and the vote path carries it next to the
//! choices. members-fn's log lines about a login name the tenant, never the member id (nor
//! the national id). The test's subscriber is its thread's default, and its runtime runs
//! members-fn's tasks on that one thread, so it sees every line of this test and no other's.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::support::fake_issuer::FakeIssuer;
use crate::support::{kennitala, Members};
use serde_json::json;
use testkit::oidc_provider as provider;

const ORG: &str = "party-a";

/// Every log line of the test's thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn no_log_line_pairs_a_member_with_a_correlation_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    // Held to the end of the test; a current-thread runtime polls every task on this thread.
    let _logs = tracing::subscriber::set_default(subscriber);

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

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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
