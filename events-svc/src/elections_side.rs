//! The elections side's internal API (served by ingest), called over the signed S2S client:
//! election definitions and status, voting-token hashes, results. Every write carries an
//! idempotency key, so the client's retries never apply a change twice.

use axum::http::Method;
use shared::domain::{ElectionDefinition, Results, TenantId, TokenHash};
use shared::s2s::{CallError, Client};
use shared::telemetry::CorrelationId;
use uuid::Uuid;

use crate::slots::MAX_HASHES_PER_CALL;

#[derive(Clone)]
pub struct ElectionsSide {
    client: Client,
}

impl ElectionsSide {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Sends the definition with its current status. One key per (election, status): a
    /// status is reached once, so a retry of the same change is recognised as one.
    pub async fn put_election(
        &self,
        definition: &ElectionDefinition,
        correlation: &CorrelationId,
    ) -> Result<(), CallError> {
        let body = serde_json::json!({
            "kind": definition.kind(),
            "options": definition.options(),
            "max_choices": definition.max_choices(),
            "status": definition.status(),
            "opens_at": definition.opens_at(),
            "closes_at": definition.closes_at(),
        });
        let key = format!(
            "election-{}-{}",
            definition.id(),
            definition.status().as_str()
        );
        self.client
            .call(
                definition.tenant(),
                Method::PUT,
                &format!("/internal/v1/elections/{}", definition.id()),
                Some(&body),
                Some(&key),
                correlation,
            )
            .await
            .map(|_| ())
    }

    /// Registers voting-token hashes, in the order given, one call per
    /// [`MAX_HASHES_PER_CALL`]; a token may be handed out only after its hash is registered.
    /// Registering a hash twice is harmless (the elections side ignores it).
    pub async fn register_tokens(
        &self,
        tenant: &TenantId,
        election: Uuid,
        hashes: &[TokenHash],
        correlation: &CorrelationId,
    ) -> Result<(), CallError> {
        for part in hashes.chunks(MAX_HASHES_PER_CALL) {
            let hex: Vec<String> = part.iter().map(TokenHash::to_hex).collect();
            let body = serde_json::json!({ "token_hashes": hex });
            // A random key (not a hash): idempotency stores must not index token hashes.
            let key = format!("tokens-{}", Uuid::new_v4());
            self.client
                .call(
                    tenant,
                    Method::POST,
                    &format!("/internal/v1/elections/{election}/tokens"),
                    Some(&body),
                    Some(&key),
                    correlation,
                )
                .await?;
        }
        Ok(())
    }

    /// The election's results as the elections side has them: turnout before the seal, tally
    /// after.
    pub async fn results(
        &self,
        tenant: &TenantId,
        election: Uuid,
        correlation: &CorrelationId,
    ) -> Result<Results, CallError> {
        self.client
            .call(
                tenant,
                Method::GET,
                &format!("/internal/v1/elections/{election}/results"),
                None,
                None,
                correlation,
            )
            .await?
            .json()
    }
}
