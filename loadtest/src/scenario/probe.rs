//! The probe election: votes on it confirm the mode ingest is in and warm it up.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::Instant;
use uuid::Uuid;

use super::Mode;
use crate::fire::Votes;
use crate::target::Target;

/// A separate election whose votes confirm the mode ingest is in (202 or 201) and warm it up.
pub struct Probe {
    election: Uuid,
    tokens: Vec<String>,
}

impl Probe {
    pub async fn new(target: &Target) -> anyhow::Result<Self> {
        let election = target
            .open_election("Load test probe (mode confirmation and warm-up)")
            .await?;
        Ok(Self {
            election,
            tokens: target.bulk_tokens(election, 200).await?,
        })
    }

    async fn token(&mut self, target: &Target) -> anyhow::Result<String> {
        if self.tokens.is_empty() {
            self.tokens = target.bulk_tokens(self.election, 200).await?;
        }
        self.tokens.pop().context("no probe token")
    }

    async fn vote(&mut self, target: &Target, http: &reqwest::Client) -> anyhow::Result<u16> {
        let token = self.token(target).await?;
        let response = http
            .post(format!(
                "{}/v1/elections/{}/ballots",
                target.ingest_url, self.election
            ))
            .bearer_auth(&token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(Votes::body(0))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .context("probe vote: ingest does not answer")?;
        Ok(response.status().as_u16())
    }

    /// Switches the live flag as ops and waits until ingest answers in `mode`, then sends a
    /// few concurrent warm-up votes (connections, pools, publisher).
    pub async fn switch(
        &mut self,
        target: &Target,
        http: &reqwest::Client,
        mode: Mode,
    ) -> anyhow::Result<Duration> {
        target.set_queue_mode(mode == Mode::Queue).await?;
        // From the change: the PUT may have waited out the flag's change interval.
        let started = Instant::now();
        let deadline = started + Duration::from_secs(15);
        loop {
            let status = self.vote(target, http).await?;
            if status == mode.accepted_status() {
                break;
            }
            if !matches!(status, 201 | 202 | 503) {
                bail!("probe vote answered {status}");
            }
            if Instant::now() > deadline {
                bail!(
                    "ingest did not follow the queue flag ({}) within 15 s",
                    mode.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let followed = started.elapsed();
        for _ in 0..3 {
            let mut warm = Vec::new();
            for _ in 0..8 {
                warm.push(self.token(target).await?);
            }
            let url = format!(
                "{}/v1/elections/{}/ballots",
                target.ingest_url, self.election
            );
            futures::future::join_all(warm.iter().map(|t| {
                http.post(&url)
                    .bearer_auth(t)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(Votes::body(1))
                    .timeout(Duration::from_secs(10))
                    .send()
            }))
            .await;
        }
        Ok(followed)
    }
}
