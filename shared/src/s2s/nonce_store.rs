//! Spent nonces in PostgreSQL (`ops.s2s_nonces`, migration 9), shared by every instance of the
//! receiving service: a request replayed to another instance, or to one that restarted, is
//! refused like a replay to the same one.

use std::time::Duration;

use sqlx::PgPool;

use super::verifier::VerifyError;

/// Where spent nonces are shared, for a verifier with a timestamp window `window`.
#[derive(Clone)]
pub struct NonceStore {
    pool: PgPool,
    window: Duration,
}

impl NonceStore {
    pub fn new(pool: PgPool, window: Duration) -> Self {
        Self { pool, window }
    }

    /// Records a nonce: [`VerifyError::Replayed`] if any instance spent it already, and
    /// [`VerifyError::Unavailable`] if the database cannot tell (never "probably fresh").
    pub(super) async fn spend(
        &self,
        key_id: &str,
        nonce: &str,
        timestamp: i64,
    ) -> Result<(), VerifyError> {
        let inserted = sqlx::query!(
            "INSERT INTO ops.s2s_nonces (key_id, nonce, signed_at) \
             VALUES ($1, $2, to_timestamp($3)) ON CONFLICT DO NOTHING",
            key_id,
            nonce,
            timestamp as f64
        )
        .execute(&self.pool)
        .await
        .map_err(|e| {
            tracing::warn!(error = %crate::db::redact(&e), "could not spend an S2S nonce");
            VerifyError::Unavailable
        })?
        .rows_affected();
        if inserted == 0 {
            return Err(VerifyError::Replayed);
        }
        Ok(())
    }

    /// Forgets the nonces no replay can reach any more: seen more than `2 × window + 1 s` ago
    /// and signed more than a window ago, both by the database's clock (the rule of the
    /// in-memory cache, see `NonceCache`). Returns how many went.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let retention = self.window * 2 + Duration::from_secs(1);
        Ok(sqlx::query!(
            "DELETE FROM ops.s2s_nonces \
             WHERE seen_at < now() - make_interval(secs => $1) \
               AND signed_at < now() - make_interval(secs => $2)",
            retention.as_secs_f64(),
            self.window.as_secs_f64()
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Prunes now and then every `every`, until the task is aborted.
    pub fn spawn_pruner(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = store.prune().await {
                    tracing::warn!(error = %crate::db::redact(&e), "could not prune spent S2S nonces");
                }
            }
        })
    }
}
