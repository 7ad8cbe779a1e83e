//! What this instance answered 202 for, written to the database in bulk off the vote path.
//!
//! A queued vote is on its way until the worker decides its receipt. To know that nothing
//! accepted before a close is still on its way (in the queue, redelivering after a failure, or
//! dead-lettered), the elections side needs the list of receipts ingest accepted: the worker
//! seals an election, and its results become final, only once every one of them is decided
//! (`elections.drained`). Writing that list synchronously would put the database back on the vote
//! path, so each accepted receipt goes into memory and a background task writes them in bulk
//! every `LEDGER_FLUSH_MS`, together with a watermark (`ops.ingest_ledger.flushed_through`): every
//! vote this instance accepted before that instant is in `elections.accepted_votes`. During a
//! database outage the entries wait in memory and the watermark stands still, so no election
//! closed in the meantime can be sealed without them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::domain::TenantId;
use shared::receipt::Receipt;
use sqlx::PgPool;
use uuid::Uuid;

/// Entries held in memory at most while the database cannot be written (≈ 100 bytes each).
/// Beyond it new entries are dropped and counted: the seal may then come before those votes
/// arrive, and the worker records them after it and seals again.
pub const MAX_PENDING: usize = 1_000_000;

struct Entry {
    tenant: TenantId,
    election_id: Uuid,
    receipt: Receipt,
    accepted_at: DateTime<Utc>,
}

pub struct Ledger {
    instance_id: String,
    /// This instance's view of the queue flag, reported with each heartbeat.
    queue_mode: crate::queue_mode::QueueMode,
    pending: Mutex<Vec<Entry>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl Ledger {
    pub fn new(instance_id: String, queue_mode: crate::queue_mode::QueueMode) -> Self {
        Self {
            instance_id,
            queue_mode,
            pending: Mutex::new(Vec::new()),
            dropped: Default::default(),
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Notes a vote that was just answered 202 (cheap: one push under a lock).
    pub fn accepted(
        &self,
        tenant: &TenantId,
        election_id: Uuid,
        receipt: &Receipt,
        at: DateTime<Utc>,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        pending.push(Entry {
            tenant: tenant.clone(),
            election_id,
            receipt: receipt.clone(),
            accepted_at: at,
        });
    }

    /// Entries waiting to be written.
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes what is pending and moves the watermark; on failure the entries stay pending.
    pub async fn flush(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        // The watermark is read under the same lock the entries are taken under: everything
        // accepted before it is in this snapshot.
        let (batch, watermark) = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut *pending), Utc::now())
        };
        match self.write(pool, &batch, watermark).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let newer = std::mem::replace(&mut *pending, batch);
                pending.extend(newer);
                Err(e)
            }
        }
    }

    async fn write(
        &self,
        pool: &PgPool,
        batch: &[Entry],
        watermark: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let mut by_tenant: BTreeMap<&TenantId, Vec<&Entry>> = BTreeMap::new();
        for entry in batch {
            by_tenant.entry(&entry.tenant).or_default().push(entry);
        }
        let mut tx = pool.begin().await?;
        for (tenant, entries) in by_tenant {
            shared::db::set_tenant(&mut tx, tenant).await?;
            let elections: Vec<Uuid> = entries.iter().map(|e| e.election_id).collect();
            let receipts: Vec<&str> = entries.iter().map(|e| e.receipt.as_str()).collect();
            let times: Vec<DateTime<Utc>> = entries.iter().map(|e| e.accepted_at).collect();
            sqlx::query!(
                "INSERT INTO elections.accepted_votes (org_id, election_id, receipt, accepted_at) \
                 SELECT $1, m.election_id, m.receipt, m.accepted_at \
                 FROM unnest($2::uuid[], $3::text[], $4::timestamptz[]) AS m(election_id, receipt, accepted_at) \
                 ON CONFLICT (receipt) DO NOTHING",
                tenant.as_str(),
                &elections,
                &receipts as &[&str],
                &times
            )
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query!(
            "INSERT INTO ops.ingest_ledger \
                 (instance_id, heartbeat_at, flushed_through, queue_mode, queue_mode_read_at) \
             VALUES ($1, now(), $2, $3, $4) ON CONFLICT (instance_id) DO UPDATE \
             SET heartbeat_at = now(), flushed_through = excluded.flushed_through, \
                 queue_mode = excluded.queue_mode, queue_mode_read_at = excluded.queue_mode_read_at",
            &self.instance_id,
            watermark,
            self.queue_mode.enabled(),
            self.queue_mode.read_at()
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// At a clean stop: write what is left, then leave (nothing waits for this instance).
    pub async fn close(&self, pool: &PgPool) {
        match self.flush(pool).await {
            Ok(_) => {
                let left = sqlx::query!(
                    "DELETE FROM ops.ingest_ledger WHERE instance_id = $1",
                    &self.instance_id
                )
                .execute(pool)
                .await;
                if let Err(e) = left {
                    tracing::warn!(error = %shared::db::redact(&e), "could not remove this instance from the ledger");
                }
            }
            Err(e) => tracing::error!(
                error = %shared::db::redact(&e),
                pending = self.pending(),
                "accepted votes could not be written at shutdown; their elections are sealed without waiting for them"
            ),
        }
    }

    /// Flushes every `every` until the task is aborted.
    pub fn spawn_flusher(
        self: std::sync::Arc<Self>,
        pool: PgPool,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                match self.flush(&pool).await {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("accepted votes are written to the ledger again");
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %shared::db::redact(&e), pending = self.pending(),
                            "could not write accepted votes to the ledger; keeping them and retrying");
                    }
                    Err(_) => {}
                }
            }
        })
    }
}
