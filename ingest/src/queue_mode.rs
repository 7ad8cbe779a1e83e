//! The live queue flag: read from `ops.queue_mode` by every instance, changed only through
//! `ops.set_queue_mode` (which audits who, when, old and new), with its entry in the platform
//! organisation's audit chain (`shared::audit`) in the same transaction.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

#[derive(Clone)]
pub struct QueueMode {
    enabled: Arc<AtomicBool>,
    /// When the flag was last read successfully (Unix milliseconds; 0: never).
    read_at: Arc<AtomicI64>,
}

impl QueueMode {
    pub fn new(initial: bool) -> Self {
        Self {
            enabled: Arc::new(AtomicBool::new(initial)),
            read_at: Arc::new(AtomicI64::new(0)),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// When this instance last read the flag (`None`: never; it runs on its default).
    pub fn read_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self.read_at.load(Ordering::Relaxed) {
            0 => None,
            millis => chrono::DateTime::from_timestamp_millis(millis),
        }
    }

    /// The flag as stored; `None` while ops never set it.
    pub async fn read(pool: &PgPool) -> Result<Option<bool>, sqlx::Error> {
        sqlx::query_scalar!("SELECT enabled FROM ops.queue_mode WHERE singleton")
            .fetch_optional(pool)
            .await
    }

    pub async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let stored = Self::read(pool).await?;
        self.read_at
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        if let Some(enabled) = stored {
            let before = self.enabled.swap(enabled, Ordering::Relaxed);
            if before != enabled {
                tracing::info!(queue_mode = enabled, "queue mode changed");
            }
        }
        Ok(())
    }

    /// Follows the stored flag. On a database error the last known mode stays in force.
    pub fn spawn_follower(&self, pool: PgPool, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        shared::db::spawn_periodic(every, "reading the queue flag", move || {
            let (this, pool) = (this.clone(), pool.clone());
            async move { this.refresh(&pool).await }
        })
    }
}

/// The path the queue-mode CLI's changes are audited under.
pub const CLI_PATH: &str = "queue-mode-cli";

/// Sets the flag, writes its audit row and appends the change to `chain` (the platform
/// organisation's audit chain, with `key`), in one transaction; returns (old, new).
pub async fn set(
    pool: &PgPool,
    enabled: bool,
    actor: &str,
    key: &shared::audit::AuditKey,
    chain: &shared::domain::TenantId,
) -> Result<(Option<bool>, bool), sqlx::Error> {
    let mut tx = shared::db::begin_for_tenant(pool, chain).await?;
    let changed = sqlx::query!(
        r#"SELECT old_enabled, new_enabled AS "new_enabled!" FROM ops.set_queue_mode($1, $2)"#,
        enabled,
        actor
    )
    .fetch_one(&mut *tx)
    .await?;
    shared::audit::append_queue_mode_changes(&mut tx, key, chain, CLI_PATH).await?;
    tx.commit().await?;
    Ok((changed.old_enabled, changed.new_enabled))
}
