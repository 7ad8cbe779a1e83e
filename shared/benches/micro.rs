//! CPU cost of the per-vote work outside the database: voting-token verification (and signing,
//! for comparison), S2S request signing and verification, the vote message's encode/decode,
//! and receipt derive/check. Each benchmark handles one element per iteration, so criterion
//! prints elements/s. `s2s_layer` is the exception that is not pure CPU: the S2S middleware
//! with its idempotency cache, called over loopback HTTP.
//!
//! `cargo bench -p shared --bench micro` (no database or emulator needed). See
//! docs/microbenchmarks.md for the figures and the machine they were measured on.

#![allow(
    clippy::too_many_lines,
    reason = "a scenario test reads top to bottom: its steps are the story it tells"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware;
use axum::routing::post;
use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shared::domain::{TenantId, TokenHash};
use shared::receipt::submission_digest;
use shared::receipt::ReceiptKey;
use shared::s2s::{self, Keyring, S2sKey, Verifier};
use shared::service::Server;
use shared::token::{TokenSigner, TokenVerifier};
use shared::vote::VoteMessage;
use shared::vote_keys::VoteKeys;
use uuid::Uuid;

fn tenant() -> TenantId {
    TenantId::parse("party-a").expect("tenant")
}

fn tokens(c: &mut Criterion) {
    let signer = TokenSigner::generate("party-a-k1", tenant());
    // A realistic key set: three tenants, one of them mid-rotation.
    let verifier = TokenVerifier::new()
        .with_key("party-a-k1", tenant(), signer.verifying_key())
        .with_key(
            "party-a-k0",
            tenant(),
            TokenSigner::generate("party-a-k0", tenant()).verifying_key(),
        )
        .with_key(
            "party-b-k1",
            TenantId::parse("party-b").expect("tenant"),
            TokenSigner::generate("party-b-k1", TenantId::parse("party-b").expect("tenant"))
                .verifying_key(),
        );
    let election = Uuid::new_v4();
    let now = Utc::now();
    let (token, hash) = signer.issue(
        election,
        now - chrono::Duration::seconds(1),
        now + chrono::Duration::hours(1),
    );
    assert_eq!(
        verifier
            .verify(&token, election, now)
            .expect("a fresh token verifies")
            .token_hash(),
        hash
    );

    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&token), black_box(election), black_box(now))
                .expect("valid")
        })
    });
    group.bench_function("issue", |b| {
        b.iter(|| {
            signer.issue(
                black_box(election),
                black_box(now),
                black_box(now + chrono::Duration::hours(1)),
            )
        })
    });
    group.finish();
}

fn s2s_key(id: &str) -> S2sKey {
    S2sKey::new(id, tenant(), rand::random::<[u8; 32]>().to_vec()).expect("key")
}

/// The headers of one signed request, as the server sees them.
fn signed(key: &S2sKey, path: &str, body: &[u8], now: i64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in s2s::sign(key, &Method::POST, path, body, now) {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    headers
}

fn s2s_calls(c: &mut Criterion) {
    let key = s2s_key("party-a-s2s");
    // The server knows the current and the previous key of this tenant.
    let keyring = Keyring::new(vec![key.clone(), s2s_key("party-a-s2s-old")]);
    let election = Uuid::new_v4();
    let path = format!("/internal/v1/elections/{election}/tokens");
    // What events-svc sends when a member takes a token: one token hash.
    let body = serde_json::to_vec(
        &serde_json::json!({"token_hashes": [TokenHash::of_token_id(b"x").to_hex()]}),
    )
    .expect("json");
    let now = Utc::now().timestamp();

    let mut group = c.benchmark_group("s2s");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| {
        b.iter(|| {
            s2s::sign(
                black_box(&key),
                &Method::POST,
                black_box(&path),
                black_box(&body),
                now,
            )
        })
    });
    // Every request carries a fresh nonce and a spent nonce is refused, so the requests are
    // signed outside the timed part; a fresh verifier every 5,000 requests keeps its nonce
    // cache small (none of these nonces is old enough to be forgotten).
    // Without a nonce store `verify` never waits, so polling it once on a current-thread
    // runtime costs next to nothing.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    group.bench_function("verify", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(5_000);
                left -= n;
                let verifier = Verifier::new(keyring.clone());
                let requests: Vec<HeaderMap> =
                    (0..n).map(|_| signed(&key, &path, &body, now)).collect();
                let start = Instant::now();
                runtime.block_on(async {
                    for headers in &requests {
                        verifier
                            .verify(&Method::POST, &path, black_box(headers), &body, now)
                            .await
                            .expect("valid");
                    }
                });
                elapsed += start.elapsed();
            }
            elapsed
        })
    });
    // The same with 20,000 nonces inside the window (a busy token-issuing phase: events-svc
    // registers each token hash with one S2S call). The verifier used to scan its whole nonce
    // cache on every call once it held more than 10,000; now it looks at the oldest entry only
    // and stops, since that one is still in reach. The timed request is a replay of one already
    // seen: it does the same work (HMAC check, pruning) and is refused at the insert, so the
    // cache stays at 20,000 entries however many iterations criterion runs.
    // (Filled once, outside the closure: criterion calls the closure once per sample.)
    let busy = Verifier::new(keyring.clone());
    let mut last = HeaderMap::new();
    runtime.block_on(async {
        for _ in 0..20_000 {
            last = signed(&key, &path, &body, now);
            busy.verify(&Method::POST, &path, &last, &body, now)
                .await
                .expect("valid");
        }
    });
    group.bench_function("verify_with_20k_nonces_in_window", |b| {
        b.to_async(&runtime).iter(|| async {
            busy.verify(&Method::POST, &path, black_box(&last), &body, now)
                .await
                .expect_err("a replay")
        })
    });
    group.finish();
}

/// The S2S layer (`s2s::verify_layer`) in front of a trivial handler, over loopback HTTP, with
/// an idempotency key as events-svc sends one with every token registration (a fresh random
/// key each time). The figures include the HTTP round trip; `no_idempotency_key` is the same
/// request without a key, for comparison in the same run.
fn s2s_layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let key = s2s_key("party-a-s2s");
    let verifier = Arc::new(Verifier::new(Keyring::new(vec![key.clone()])));
    let path = format!("/internal/v1/elections/{}/tokens", Uuid::new_v4());
    let body = serde_json::to_vec(
        &serde_json::json!({"token_hashes": [TokenHash::of_token_id(b"x").to_hex()]}),
    )
    .expect("json");
    let router = axum::Router::new()
        .route(&path, post(|| async { StatusCode::CREATED }))
        .layer(middleware::from_fn_with_state(verifier, s2s::verify_layer));
    let addr = runtime.block_on(async {
        let server = Server::bind("bench", "127.0.0.1:0".parse().expect("addr"), router)
            .await
            .expect("bind");
        let addr = server.local_addr();
        tokio::spawn(server.run_until(std::future::pending()));
        addr
    });
    let http = reqwest::Client::new();
    let url = format!("http://{addr}{path}");
    let send = |idempotency_key: Option<String>| {
        let mut request = http
            .post(&url)
            .headers(signed(&key, &path, &body, Utc::now().timestamp()))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(k) = idempotency_key {
            request = request.header(s2s::IDEMPOTENCY_KEY, k);
        }
        async move {
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), StatusCode::CREATED);
            response.bytes().await.expect("body")
        }
    };
    // 20,000 answers stored within the window: a busy token-issuing phase.
    runtime.block_on(async {
        for i in 0..20_000 {
            send(Some(format!("token-{i}"))).await;
        }
    });

    let mut group = c.benchmark_group("s2s_layer");
    group.throughput(Throughput::Elements(1));
    group.bench_function("no_idempotency_key", |b| {
        b.to_async(&runtime).iter(|| send(None))
    });
    // A retry of a request already answered: served from the cache, which stays at 20,000
    // answers however many iterations criterion runs.
    group.bench_function("idempotent_retry_with_20k_answers", |b| {
        b.to_async(&runtime)
            .iter(|| send(Some("token-0".to_owned())))
    });
    group.finish();
}

fn vote_messages(c: &mut Criterion) {
    let key = ReceiptKey::new(rand::random::<[u8; 32]>().to_vec()).expect("receipt key");
    let election = Uuid::new_v4();
    let token_id: [u8; 32] = rand::random();
    let choices: Vec<String> = vec!["o1".into(), "o3".into(), "o2".into()];
    let submission = submission_digest(&choices, None);
    let message = VoteMessage {
        tenant: tenant(),
        election_id: election,
        token_hash: TokenHash::of_token_id(&token_id),
        receipt: key.derive(election, &token_id, &submission),
        choices,
        accepted_at: Utc::now(),
    };
    let keys = VoteKeys::from_config(&VoteKeys::generate_config("bench")).expect("vote keys");
    let correlation = Uuid::new_v4().to_string();
    let encoded = message.encode(&keys, &correlation);
    assert_eq!(
        VoteMessage::decode(&keys, &encoded.data).expect("decodes"),
        message
    );

    let mut group = c.benchmark_group("vote_message");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        b.iter(|| black_box(&message).encode(&keys, black_box(&correlation)))
    });
    group.bench_function("decode", |b| {
        b.iter(|| VoteMessage::decode(&keys, black_box(&encoded.data)).expect("decodes"))
    });
    group.finish();
}

fn receipts(c: &mut Criterion) {
    let key = ReceiptKey::new(rand::random::<[u8; 32]>().to_vec()).expect("receipt key");
    let election = Uuid::new_v4();
    let token_id: [u8; 32] = rand::random();
    let submission = submission_digest(&["o1".to_string()], None);
    let receipt = key.derive(election, &token_id, &submission);
    assert_eq!(
        key.check(receipt.as_str()).expect("valid receipt").1,
        election
    );

    let mut group = c.benchmark_group("receipt");
    group.throughput(Throughput::Elements(1));
    group.bench_function("derive", |b| {
        b.iter(|| key.derive(black_box(election), black_box(&token_id), &submission))
    });
    group.bench_function("check", |b| {
        b.iter(|| key.check(black_box(receipt.as_str())).expect("valid"))
    });
    group.finish();
}

/// The signature check alone, by the two Ed25519 implementations in the build: ed25519-dalek
/// and aws-lc-rs (which jsonwebtoken already links). A vote's token is about 250 bytes.
fn ed25519(c: &mut Criterion) {
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let message = [b'a'; 250];
    let signature = key.sign(&message);
    let dalek = key.verifying_key();
    let aws = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ED25519,
        dalek.to_bytes(),
    )
    .expect("key");
    let mut group = c.benchmark_group("ed25519_verify");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dalek_verify_strict", |b| {
        b.iter(|| {
            dalek
                .verify_strict(black_box(&message), black_box(&signature))
                .expect("valid")
        })
    });
    let bytes = signature.to_bytes();
    group.bench_function("aws_lc_rs", |b| {
        b.iter(|| {
            aws.verify_sig(black_box(&message), black_box(&bytes))
                .expect("valid")
        })
    });
    group.finish();

    // Per signature, when `n` tokens (each signed by the same key, as every token of a tenant
    // is) are checked together.
    let mut group = c.benchmark_group("ed25519_verify_batch");
    for n in [1usize, 4, 16, 64, 256] {
        let messages: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let mut m = message.to_vec();
                m[..8].copy_from_slice(&(i as u64).to_le_bytes());
                m
            })
            .collect();
        let signatures: Vec<_> = messages.iter().map(|m| key.sign(m)).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let keys = vec![dalek; n];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("dalek_verify_batch/{n}"), |b| {
            b.iter(|| {
                ed25519_dalek::verify_batch(black_box(&refs), black_box(&signatures), &keys)
                    .expect("valid")
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    ed25519,
    tokens,
    s2s_calls,
    s2s_layer,
    vote_messages,
    receipts
);
criterion_main!(benches);
