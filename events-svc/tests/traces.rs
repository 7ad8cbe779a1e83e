//! Traces, received by a real OTLP/gRPC collector endpoint (the trace service of
//! `opentelemetry-proto`, served by tonic on its own thread): a queue-mode vote's trace is linked
//! from the worker's batch span, an S2S call continues its caller's trace, no exported attribute
//! holds a token, hash, receipt, choice, national id or member id, and a sample ratio of 0
//! exports nothing.
//!
//! A test binary of its own, the one exception to one binary per crate: tracing caches each
//! callsite's interest process-wide, and in the binary shared with the other tests, tests
//! running at the same time registered the S2S callsites before this test's subscriber existed,
//! so their spans were at times never offered to it (a flaky "events-svc's S2S calls are
//! traced").

#![allow(
    clippy::too_many_lines,
    reason = "a scenario test reads top to bottom: its steps are the story it tells"
)]

// The world the other tests use; this binary needs only part of it.
#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::collections::HashMap;

use crate::support::{World, TENANT};
use reqwest::Method;
use serde_json::json;
use shared::traces::{TraceSettings, Tracing};
use testkit::otlp::{collector, AnyValue, KeyValue, Span};
use uuid::Uuid;

fn tracing_to(endpoint: &str, ratio: f64) -> Tracing {
    Tracing::new(
        "ekklesia-test",
        &TraceSettings {
            endpoint: Some(endpoint.to_owned()),
            sample_ratio: ratio,
        },
    )
    .unwrap()
    .expect("an endpoint is configured")
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).map(text)
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Runs the journey the assertions look at: an admin opens an election (S2S calls), a member
/// gets a token and votes in queue mode, the worker records it. Returns what must never be
/// exported.
async fn a_vote(world: &World) -> Vec<String> {
    let admin_id = world.person(TENANT, &["member", "admin"]).await;
    let admin = world.dev_login(&admin_id).await;
    let created = world
        .events(
            Method::POST,
            "/v1/elections",
            &admin,
            Some(json!({
                "title": "Motion", "question": "Adopt?", "kind": "single",
                "options": [{"id": "option-zebra", "label": "Zebra"}, {"id": "option-yak", "label": "Yak"}],
                "max_choices": 1,
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let election: Uuid = created.body["id"].as_str().unwrap().parse().unwrap();
    let opened = world
        .events(
            Method::POST,
            &format!("/v1/elections/{election}/open"),
            &admin,
            None,
        )
        .await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let voter_id = world.person(TENANT, &["member"]).await;
    let voter = world.dev_login(&voter_id).await;
    let issued = world.token(&voter, election).await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    let token = issued.body["token"].as_str().unwrap().to_owned();
    let vote = world.vote(&token, election, &["option-zebra"]).await;
    assert_eq!(vote.status, 202, "{}", vote.body);
    let receipt = vote.body["receipt"].as_str().unwrap().to_owned();
    world.wait_decided(&receipt).await;
    let member_ids: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM members.members WHERE national_id = ANY($1)")
            .bind([&admin_id, &voter_id])
            .fetch_all(&world.db.owner)
            .await
            .unwrap();
    let hash: String = sqlx::query_scalar(
        "SELECT encode(token_hash, 'hex') FROM elections.voting_tokens WHERE election_id = $1 AND used",
    )
    .bind(election)
    .fetch_one(&world.db.owner)
    .await
    .unwrap();
    let mut forbidden = vec![
        token,
        hash,
        receipt,
        "option-zebra".into(),
        admin_id,
        voter_id,
    ];
    forbidden.extend(member_ids);
    forbidden
}

#[tokio::test]
async fn a_vote_is_traced_across_the_queue_and_the_elections_side_without_secrets() {
    let (endpoint, received) = collector();
    let tracing = tracing_to(&endpoint, 1.0);
    // Every service of the world runs on this thread: they all trace through this subscriber.
    let _subscriber =
        tracing::subscriber::set_default(shared::telemetry::subscriber("test", Some(&tracing)));
    let world = World::start(true).await;
    let forbidden = a_vote(&world).await;
    tracing.flush();
    let spans = received.lock().unwrap().clone();
    assert!(!spans.is_empty(), "nothing was exported");
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();

    // The worker's batch span links to the span that published the vote.
    let publish = spans
        .iter()
        .find(|s| s.name == "publish")
        .expect("ingest's publish span");
    let batch = spans
        .iter()
        .find(|s| s.name == "batch" && !s.links.is_empty())
        .expect("a worker batch span with links");
    assert!(
        batch
            .links
            .iter()
            .any(|l| l.trace_id == publish.trace_id && l.span_id == publish.span_id),
        "the batch span links to the vote's publish span"
    );

    // Each S2S call continues in the elections side's request span, in the caller's trace.
    let calls: Vec<&Span> = spans.iter().filter(|s| s.name == "s2s call").collect();
    assert!(!calls.is_empty(), "events-svc's S2S calls are traced");
    for call in &calls {
        let continued = spans
            .iter()
            .find(|s| s.parent_span_id == call.span_id && s.name == "request")
            .unwrap_or_else(|| panic!("no request span continues {:?}", attribute(call, "route")));
        assert_eq!(continued.trace_id, call.trace_id);
        assert!(
            attribute(continued, "route").is_some_and(|r| r.starts_with("/internal/")),
            "{:?}",
            attribute(continued, "route")
        );
        assert!(by_id.contains_key(&call.span_id));
    }

    // No exported value (span attributes, event attributes, link attributes, names) holds
    // anything that ties a voter to a vote.
    for span in &spans {
        let mut values: Vec<String> = span.attributes.iter().map(text).collect();
        values.push(span.name.clone());
        for event in &span.events {
            values.push(event.name.clone());
            values.extend(event.attributes.iter().map(text));
        }
        for link in &span.links {
            values.extend(link.attributes.iter().map(text));
        }
        for value in values {
            for secret in &forbidden {
                assert!(
                    !value.contains(secret.as_str()),
                    "span {:?} exports a forbidden value in {value:?}",
                    span.name
                );
            }
        }
    }
}

#[tokio::test]
async fn with_a_sample_ratio_of_zero_nothing_is_exported() {
    let (endpoint, received) = collector();
    let tracing = tracing_to(&endpoint, 0.0);
    let _subscriber =
        tracing::subscriber::set_default(shared::telemetry::subscriber("test", Some(&tracing)));
    let world = World::start(true).await;
    a_vote(&world).await;
    // The flush returns once the exporter answered: nothing sampled, nothing sent.
    tracing.flush();
    assert_eq!(received.lock().unwrap().len(), 0);
}
