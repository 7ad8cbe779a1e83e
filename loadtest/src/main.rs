//! Ekklesia's load and demo client:
//! - `keys`: development keys for the local stack;
//! - `members-csv`: a demo membership export (one admin, N voters) for `members-import`;
//! - `journey`: the whole journey through every running service (login, election, tokens,
//!   votes, close, final results), in queue mode and in direct mode;
//! - `demo`: many votes straight at the elections side (the bulk path: it plays the events
//!   side itself, signing tokens and registering their hashes over the signed S2S API, so
//!   thousands of voters need no thousands of logins).

mod journey;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::http::Method;
use base64::Engine;
use chrono::Utc;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::{json, Value};
use shared::domain::TenantId;
use shared::s2s::{Client, Keyring, RetrySettings};
use shared::telemetry::CorrelationId;
use shared::token::{decode_signing_key, encode_public_key, TokenSigner};
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Ekklesia load and demo client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print development keys for a tenant as environment assignments (local stack only).
    Keys {
        #[arg(long, default_value = "demo-party")]
        tenant: String,
    },
    /// Print a demo membership export: one admin (also ops) and `--voters` members.
    MembersCsv {
        #[arg(long, default_value_t = 5)]
        voters: u32,
    },
    /// The whole journey through every running service, in queue and in direct mode.
    Journey {
        #[arg(long, env = "MEMBERS_URL", default_value = "http://127.0.0.1:8082")]
        members_url: String,
        #[arg(long, env = "EVENTS_URL", default_value = "http://127.0.0.1:8081")]
        events_url: String,
        #[arg(long, env = "INGEST_URL", default_value = "http://127.0.0.1:8080")]
        ingest_url: String,
        /// Members voting (the first N of `members-csv`).
        #[arg(long, default_value_t = 5)]
        voters: u32,
    },
    /// Many votes straight at the elections side (bulk path, no logins).
    Demo {
        #[arg(long, env = "INGEST_URL", default_value = "http://127.0.0.1:8080")]
        ingest_url: String,
        #[arg(long, env = "DEMO_TENANT", default_value = "demo-party")]
        tenant: String,
        /// `kid:tenant:seed` (the events side's token signing key).
        #[arg(long, env = "VOTING_TOKEN_SIGNING_KEYS", hide_env_values = true)]
        signing_key: String,
        #[arg(long, env = "S2S_KEYS", hide_env_values = true)]
        s2s_keys: String,
        #[arg(long, default_value_t = 5)]
        voters: usize,
        /// Votes in flight at once (with more than 20 voters only a summary is printed).
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keys { tenant } => {
            let tenant = TenantId::parse(&tenant)?;
            let signer = TokenSigner::generate(format!("{tenant}-dev-1"), tenant.clone());
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let s2s: [u8; 32] = rand::random();
            let receipt: [u8; 32] = rand::random();
            let kid = signer.kid().to_owned();
            println!(
                "VOTING_TOKEN_PUBLIC_KEYS={kid}:{tenant}:{}",
                encode_public_key(&signer.verifying_key())
            );
            println!("VOTING_TOKEN_SIGNING_KEYS={kid}:{tenant}:{}", signer.seed());
            println!("S2S_KEYS={tenant}-s2s-1:{tenant}:{}", b64.encode(s2s));
            println!("RECEIPT_KEY={}", b64.encode(receipt));
            println!(
                "SESSION_SIGNING_KEYS={}",
                shared::session::SessionSigner::generate(
                    "members-dev-1",
                    String::new(),
                    Duration::from_secs(1)
                )
                .config_entry()
            );
            println!("DEMO_TENANT={tenant}");
            Ok(())
        }
        Command::MembersCsv { voters } => {
            print!("{}", journey::members_csv(voters));
            Ok(())
        }
        Command::Journey {
            members_url,
            events_url,
            ingest_url,
            voters,
        } => {
            journey::run(
                journey::Urls {
                    members: members_url,
                    events: events_url,
                    ingest: ingest_url,
                },
                voters,
            )
            .await
        }
        Command::Demo {
            ingest_url,
            tenant,
            signing_key,
            s2s_keys,
            voters,
            concurrency,
        } => {
            demo(
                &ingest_url,
                &tenant,
                &signing_key,
                &s2s_keys,
                voters,
                concurrency.max(1),
            )
            .await
        }
    }
}

async fn demo(
    ingest_url: &str,
    tenant: &str,
    signing_key: &str,
    s2s_keys: &str,
    voters: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let tenant = TenantId::parse(tenant)?;
    let mut parts = signing_key.splitn(3, ':');
    let (Some(kid), Some(key_tenant), Some(seed)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("VOTING_TOKEN_SIGNING_KEYS must be kid:tenant:seed");
    };
    let key = decode_signing_key(seed).context("VOTING_TOKEN_SIGNING_KEYS: not an Ed25519 seed")?;
    let signer = TokenSigner::new(kid, TenantId::parse(key_tenant)?, key);
    let s2s = Client::new(
        ingest_url,
        Keyring::from_config(s2s_keys).map_err(anyhow::Error::msg)?,
        RetrySettings::default(),
    );
    let http = reqwest::Client::new();
    let corr = CorrelationId::new();

    let election = Uuid::new_v4();
    let options = json!([{"id": "yes", "label": "Yes"}, {"id": "no", "label": "No"}, {"id": "abstain", "label": "Abstain"}]);
    let definition = |status: &str| json!({"kind": "single", "options": options, "max_choices": 1, "status": status, "opens_at": null, "closes_at": null});
    s2s.call(
        &tenant,
        Method::PUT,
        &format!("/internal/v1/elections/{election}"),
        Some(&definition("open")),
        Some(&format!("open-{election}")),
        &corr,
    )
    .await
    .context("opening the election")?;
    println!("election {election} is open: \"Adopt the 2027 budget?\" (yes / no / abstain)");

    let now = Utc::now();
    let mut tokens = Vec::new();
    let mut hashes = Vec::new();
    for _ in 0..voters {
        let (token, hash) = signer.issue(
            election,
            now - chrono::Duration::seconds(5),
            now + chrono::Duration::hours(1),
        );
        tokens.push(token);
        hashes.push(hash.to_hex());
    }
    for (n, chunk) in hashes.chunks(5000).enumerate() {
        s2s.call(
            &tenant,
            Method::POST,
            &format!("/internal/v1/elections/{election}/tokens"),
            Some(&json!({"token_hashes": chunk})),
            Some(&format!("tokens-{election}-{n}")),
            &corr,
        )
        .await
        .context("registering voting tokens")?;
    }
    println!("{voters} voting tokens issued and registered");

    let choices = ["yes", "yes", "no", "abstain", "yes"];
    let verbose = voters <= 20;
    let phase = Instant::now();
    let cast = |i: usize, token: String| {
        let http = http.clone();
        async move {
            let choice = choices[i % choices.len()];
            let started = Instant::now();
            let response = http
                .post(format!("{ingest_url}/v1/elections/{election}/ballots"))
                .bearer_auth(&token)
                .json(&json!({"choices": [choice]}))
                .send()
                .await?;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let status = response.status();
            let body: Value = response.json().await?;
            if !status.is_success() {
                bail!("vote {i} refused: {status} {body}");
            }
            if verbose {
                println!(
                    "voter {} voted {choice:<7} -> {} {} in {latency_ms:.1} ms, receipt {}",
                    i + 1,
                    status.as_u16(),
                    body["status"].as_str().unwrap_or("?"),
                    body["receipt"].as_str().unwrap_or("?")
                );
            }
            anyhow::Ok((
                latency_ms,
                body["receipt"].as_str().unwrap_or_default().to_owned(),
            ))
        }
    };
    let answers: Vec<anyhow::Result<(f64, String)>> =
        futures::stream::iter(tokens.into_iter().enumerate())
            .map(|(i, t)| cast(i, t))
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let accept_phase = phase.elapsed();
    let mut latencies = Vec::new();
    let mut receipts = Vec::new();
    for answer in answers {
        let (latency, receipt) = answer?;
        latencies.push(latency);
        receipts.push(receipt);
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "{voters} votes accepted in {:.2} s ({:.0} votes/s, {concurrency} in flight); latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        accept_phase.as_secs_f64(),
        voters as f64 / accept_phase.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );

    // Drained when the tally holds every ballot.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let results: Value = s2s
            .call(
                &tenant,
                Method::GET,
                &format!("/internal/v1/elections/{election}/results"),
                None,
                None,
                &corr,
            )
            .await
            .context("reading results")?
            .json()?;
        if results["total"].as_u64() == Some(voters as u64) {
            break;
        }
        if Instant::now() > deadline {
            bail!("votes were not recorded within 120 s: is the worker running? {results}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recorded = phase.elapsed();
    println!(
        "all {voters} recorded {:.2} s after the first vote ({:.2} s after the last accept)",
        recorded.as_secs_f64(),
        (recorded - accept_phase).as_secs_f64()
    );
    if verbose {
        for receipt in &receipts {
            let body: Value = http
                .get(format!("{ingest_url}/v1/receipts/{receipt}"))
                .send()
                .await?
                .json()
                .await?;
            if body["status"] != json!("recorded") {
                bail!("a receipt does not say recorded: {body}");
            }
        }
        println!("all {voters} receipts say: recorded");
    }

    s2s.call(
        &tenant,
        Method::PUT,
        &format!("/internal/v1/elections/{election}"),
        Some(&definition("closed")),
        Some(&format!("close-{election}")),
        &corr,
    )
    .await
    .context("closing the election")?;
    println!("election closed; waiting for the queue to drain and the ballots to be sealed...");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let results: Value = s2s
            .call(
                &tenant,
                Method::GET,
                &format!("/internal/v1/elections/{election}/results"),
                None,
                None,
                &corr,
            )
            .await
            .context("reading results")?
            .json()?;
        if results["final"] == json!(true) {
            println!(
                "final results: {} ballots, tally {}",
                results["total"], results["tally"]
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("results not final within 60 s: {results}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
