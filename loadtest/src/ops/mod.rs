//! `ops canary` and `ops status`: what the person on duty runs before and during a meeting.
//!
//! The canary casts one vote end to end in an election of its own (created, opened, voted,
//! closed and sealed through the real services, as an admin of the tenant), times each hop and
//! names the first one that fails. The status shows every service's readiness, the queue flag
//! and what each ingest instance has seen of it, the votes still on their way, the elections
//! waiting for their seal, and the worker's dead-letter and undecodable counts.
//!
//! The canary lives in `canary`, the status in `status`.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::json;

use crate::target::call_json;

mod canary;
mod status;

pub use canary::{canary, CanaryReport, Hop, Patience};
pub use status::{status, IngestView, Status};

/// Where the services are.
#[derive(Debug, Clone)]
pub struct Urls {
    pub members: String,
    pub events: String,
    pub ingest: String,
    /// ingest's internal listener (its `/metrics` and the internal API).
    pub elections: String,
    pub worker: String,
}

/// A session by dev login (local profile only).
pub async fn dev_login(members: &str, national_id: &str) -> anyhow::Result<String> {
    let http = crate::target::api_client(Duration::from_secs(15));
    let (status, _, body) = call_json(
        &http,
        Method::POST,
        &format!("{members}/v1/auth/dev-login"),
        None,
        Some(json!({ "national_id": national_id })),
    )
    .await?;
    if status != 200 {
        bail!("dev login: {status} {body}");
    }
    Ok(body["session_token"]
        .as_str()
        .context("no session token")?
        .to_owned())
}
