//! ingest's vote path over HTTP, up to the queue: one token fifty times at once in direct mode,
//! Pub/Sub out of reach, another tenant's token and key, and how votes are published.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::elections::{
    accepted_receipt, drain_count, metric, Stack, StackOptions, OTHER_TENANT, TENANT,
};

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

/// Tokens arriving at once are checked together (one batch signature check); a forged one
/// among them is refused alone and costs its neighbours nothing.
#[tokio::test]
async fn tokens_arriving_together_are_checked_together_and_a_forged_one_is_refused_alone() {
    let stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 3, 1).await;
    let mut tokens = stack.tokens(TENANT, election, 40).await;
    let internal: std::net::SocketAddr = stack
        .internal_url
        .trim_start_matches("http://")
        .parse()
        .expect("ingest's internal address");
    // Every fifth token gets a signature that is not its own.
    let forged: Vec<usize> = (0..40).step_by(5).collect();
    for &i in &forged {
        let other = &tokens[(i + 1) % 40];
        let signature = other.rsplit('.').next().unwrap().to_owned();
        let signing_input = tokens[i].rsplit_once('.').unwrap().0.to_owned();
        tokens[i] = format!("{signing_input}.{signature}");
    }
    let answers = futures::future::join_all(
        tokens
            .iter()
            .map(|token| stack.vote(election, token, &["o1"])),
    )
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        if forged.contains(&i) {
            assert_eq!(answer.status(), 401, "token {i}");
            let problem: Value = answer.json().await.unwrap();
            let slug = problem["type"].as_str().unwrap_or("").rsplit('/').next();
            assert_eq!(slug, Some("token-bad-signature"), "{problem}");
        } else {
            accepted_receipt(answer, 202).await;
        }
    }
    let in_batch = metric(internal, "tokens_checked_total", "\"in_batch\"").await;
    let on_request = metric(internal, "tokens_checked_total", "\"on_request\"").await;
    assert_eq!(in_batch + on_request, 40, "each token checked once");
    assert!(
        in_batch > 0,
        "40 at once: a burst, so tokens went to the batch thread"
    );
    assert_eq!(
        drain_count(&stack.pubsub.settings, Duration::from_secs(3)).await,
        32,
        "every genuine vote, no forged one, is on the topic"
    );
}
