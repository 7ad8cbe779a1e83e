//! ingest's edge, as a stranger reaches it: forged tokens spend no voter's budget, one token
//! cannot flood the queue, the internal API is not on the public listener and refuses an
//! unsigned request before reading its body, receipt look-ups are limited and can keep the
//! receipt out of the URL, and the correlation id of a vote is the server's.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use testkit::elections::{Stack, StackOptions, TENANT};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn five_thousand_forged_tokens_leave_a_valid_vote_its_budget() {
    let stack = Stack::start(StackOptions {
        // A budget the forgeries would spend many times over if they were charged.
        extra_env: vec![
            ("RATE_LIMIT_PER_CLIENT", "50".to_owned()),
            ("RATE_LIMIT_GLOBAL", "100".to_owned()),
        ],
        ..Default::default()
    })
    .await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let token = stack.tokens(TENANT, election, 1).await.remove(0);
    // A token of the right shape whose signature does not hold.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let url = format!("{}/v1/elections/{election}/ballots", stack.ingest_url);
    let statuses: Vec<u16> = futures::stream::iter(0..5000)
        .map(|_| {
            let request = stack
                .http
                .post(&url)
                .bearer_auth(&forged)
                .json(&json!({"choices": ["o0"]}));
            async move { request.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == 401),
        "forgeries are 401, never 429"
    );
    let started = Instant::now();
    let vote = stack.vote(election, &token, &["o0"]).await;
    assert_eq!(vote.status(), 202, "{:?}", vote.text().await);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn one_token_cannot_flood_the_queue() {
    let stack = Stack::start(StackOptions {
        extra_env: vec![("RATE_LIMIT_PER_TOKEN", "1".to_owned())],
        ..Default::default()
    })
    .await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let tokens = stack.tokens(TENANT, election, 2).await;
    let mut statuses = Vec::new();
    for i in 0..30 {
        let key = format!("submission-{i}");
        let answer = stack
            .vote_with_key(election, &tokens[0], &["o0"], &key)
            .await;
        if answer.status() == 429 {
            assert!(answer.headers().contains_key("retry-after"));
        }
        statuses.push(answer.status().as_u16());
    }
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert!(
        (1..=12).contains(&accepted),
        "a burst of 10 (and a refill), not 30: {statuses:?}"
    );
    // Another voter is not affected.
    assert_eq!(
        stack.vote(election, &tokens[1], &["o1"]).await.status(),
        202
    );
}

#[tokio::test]
async fn the_internal_api_and_metrics_are_not_on_the_public_listener() {
    let stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    for path in [
        format!("/internal/v1/elections/{election}/results"),
        "/metrics".to_owned(),
    ] {
        let public = stack
            .http
            .get(format!("{}{path}", stack.ingest_url))
            .send()
            .await
            .unwrap();
        assert_eq!(public.status(), 404, "{path} on the public listener");
    }
    let public_doc: Value = stack
        .http
        .get(format!("{}/openapi.json", stack.ingest_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&String> = public_doc["paths"].as_object().unwrap().keys().collect();
    assert!(
        paths.iter().all(|p| !p.starts_with("/internal")),
        "{paths:?}"
    );
    // Each document lists the operational routes its own listener serves, and only those.
    for path in ["/openapi.json", "/healthz", "/readyz"] {
        assert!(paths.contains(&&path.to_owned()), "{path} in {paths:?}");
    }
    assert!(!paths.contains(&&"/metrics".to_owned()), "{paths:?}");
    let internal_doc: Value = stack
        .http
        .get(format!("{}/openapi.json", stack.internal_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(internal_doc["paths"]["/metrics"]["get"].is_object());
    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.internal_url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test]
async fn an_endless_unsigned_body_is_refused_before_it_is_read() {
    let stack = Stack::start(StackOptions::default()).await;
    let addr = stack.internal_url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            format!(
                "PUT /internal/v1/elections/{} HTTP/1.1\r\nHost: {addr}\r\n\
                 Content-Type: application/json\r\nContent-Length: 4000000\r\n\r\n{{\"kind\":",
                uuid::Uuid::new_v4()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The body never comes; the answer must.
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read(&mut stream, &mut buffer),
        )
        .await
        .expect("an answer before the body")
        .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buffer[..n]);
    }
    let waited = started.elapsed();
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        waited < Duration::from_millis(100),
        "answered after {waited:?}"
    );
}

#[tokio::test]
async fn receipt_look_ups_are_limited_and_can_keep_the_receipt_out_of_the_url() {
    let mut stack = Stack::start(StackOptions {
        extra_env: vec![("RECEIPT_RATE_PER_CLIENT", "5".to_owned())],
        ..Default::default()
    })
    .await;
    stack.start_worker(stack.worker_settings()).await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let token = stack.tokens(TENANT, election, 1).await.remove(0);
    let vote: Value = stack
        .vote(election, &token, &["o0"])
        .await
        .json()
        .await
        .unwrap();
    let receipt = vote["receipt"].as_str().unwrap().to_owned();
    stack
        .wait_decided(std::slice::from_ref(&receipt), Duration::from_secs(30))
        .await;
    let lookup = stack
        .http
        .post(format!("{}/v1/receipts:lookup", stack.ingest_url))
        .json(&json!({"receipt": receipt}))
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), 200);
    let body: Value = lookup.json().await.unwrap();
    assert_eq!(body["status"], json!("recorded"));
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(stack.receipt(&receipt).await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let limited = stack
        .http
        .get(format!("{}/v1/receipts/{receipt}", stack.ingest_url))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_vote_carries_a_correlation_id_of_the_servers_own() {
    let stack = Stack::start(StackOptions::default()).await;
    let observer = stack.observer_subscription("observer").await;
    let election = stack.open_election(TENANT, "single", 2, 1).await;
    let token = stack.tokens(TENANT, election, 1).await.remove(0);
    let answer = stack
        .http
        .post(format!(
            "{}/v1/elections/{election}/ballots",
            stack.ingest_url
        ))
        .bearer_auth(&token)
        .header("X-Correlation-ID", "chosen-by-the-client")
        .json(&json!({"choices": ["o0"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let answered = answer.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(answered, "chosen-by-the-client");
    let subscriber = shared::pubsub::subscriber(&stack.pubsub.settings)
        .await
        .unwrap();
    let mut stream = subscriber.subscribe(observer).build();
    let (message, handler) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    handler.ack();
    let published = shared::vote::correlation_of(&message.attributes);
    assert_ne!(published, "chosen-by-the-client");
    assert_eq!(
        published, answered,
        "the id the client is told is the one that travels"
    );
}
