//! Streaming pull → batches → commit → ack.
//!
//! `STREAMS` pull tasks feed one batcher; the batcher cuts a batch at `BATCH_SIZE` votes or
//! `BATCH_WAIT_MS` after its first vote; up to `WRITERS` batches commit concurrently. A message
//! is acked only after the transaction holding its effect committed (invariant 1); when the
//! transaction fails every message of the batch is nacked and Pub/Sub redelivers it with the
//! subscription's backoff, while this worker also backs off before its next batch.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::ShutdownToken;
use shared::vote::VoteMessage;
use sqlx::PgPool;
use tokio::sync::{mpsc, Semaphore};

use crate::batch::{self, Outcome};
use crate::configuration::Settings;
use crate::startup::WorkerMetrics;

/// What the progress reporter needs to know.
#[derive(Default)]
pub struct Activity {
    pub in_flight: AtomicUsize,
    pub failing: AtomicBool,
    last_message: std::sync::Mutex<Option<Instant>>,
}

impl Activity {
    fn touch(&self) {
        *self.last_message.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Caught up: nothing received for `quiet`, nothing uncommitted, last batch did not fail.
    pub fn idle(&self, quiet: Duration) -> bool {
        let last = *self.last_message.lock().unwrap_or_else(|p| p.into_inner());
        self.in_flight.load(Ordering::SeqCst) == 0
            && !self.failing.load(Ordering::SeqCst)
            && last.is_none_or(|t| t.elapsed() >= quiet)
    }
}

struct Pending {
    vote: VoteMessage,
    handler: Handler,
    correlation_id: String,
}

pub struct Consumer {
    pub shutdown_tokens: Vec<ShutdownToken>,
    pub done: tokio::task::JoinHandle<()>,
}

pub fn start(
    settings: &Settings,
    subscriber: &Subscriber,
    pool: PgPool,
    metrics: Arc<WorkerMetrics>,
    activity: Arc<Activity>,
) -> Consumer {
    let (tx, rx) = mpsc::channel::<Pending>(settings.batch_size * 2);
    let mut shutdown_tokens = Vec::new();
    for stream_no in 0..settings.streams {
        let mut stream = subscriber
            .subscribe(settings.pubsub.subscription_path())
            .set_max_outstanding_messages(settings.max_outstanding)
            .set_max_lease_extension(settings.lease_extension)
            .build();
        shutdown_tokens.push(stream.shutdown_token());
        let tx = tx.clone();
        let metrics = metrics.clone();
        let activity = activity.clone();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let (message, handler) = match item {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::error!(stream = stream_no, error = %e, "streaming pull failed");
                        break;
                    }
                };
                activity.touch();
                if let Some(pending) = decode(message, handler, &metrics) {
                    if tx.send(pending).await.is_err() {
                        break;
                    }
                }
            }
            tracing::info!(stream = stream_no, "stream closed");
        });
    }
    drop(tx);
    let done = tokio::spawn(batcher(rx, settings.clone(), pool, metrics, activity));
    Consumer {
        shutdown_tokens,
        done,
    }
}

/// An undecodable message is nacked: after the subscription's max delivery attempts Pub/Sub
/// moves it to the dead-letter topic. Its content is never logged.
fn decode(message: Message, handler: Handler, metrics: &WorkerMetrics) -> Option<Pending> {
    let correlation_id = shared::vote::correlation_of(&message.attributes).to_owned();
    match VoteMessage::decode(&message.data) {
        Ok(vote) => Some(Pending {
            vote,
            handler,
            correlation_id,
        }),
        Err(e) => {
            metrics.undecodable.inc();
            tracing::warn!(
                message_id = %message.message_id,
                correlation_id = %correlation_id,
                delivery_attempt = ?handler.delivery_attempt(),
                error = %e,
                "undecodable message; nacked (dead-lettered after max delivery attempts)"
            );
            handler.nack();
            None
        }
    }
}

async fn batcher(
    mut rx: mpsc::Receiver<Pending>,
    settings: Settings,
    pool: PgPool,
    metrics: Arc<WorkerMetrics>,
    activity: Arc<Activity>,
) {
    let writers = Arc::new(Semaphore::new(settings.writers));
    let backoff = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let mut open = true;
    while open {
        // Wait for the first vote of the next batch, then fill until size or deadline.
        let Some(first) = rx.recv().await else { break };
        let deadline = tokio::time::Instant::now() + settings.batch_wait;
        let mut batch = Vec::with_capacity(settings.batch_size);
        batch.push(first);
        while batch.len() < settings.batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => batch.push(p),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        let wait = *backoff.lock().unwrap_or_else(|p| p.into_inner());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let Ok(permit) = writers.clone().acquire_owned().await else {
            break;
        };
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        let pool = pool.clone();
        let metrics = metrics.clone();
        let activity = activity.clone();
        let backoff = backoff.clone();
        tokio::spawn(async move {
            let ok = write(&pool, batch, &metrics).await;
            {
                let mut b = backoff.lock().unwrap_or_else(|p| p.into_inner());
                *b = if ok {
                    Duration::ZERO
                } else {
                    (*b * 2).clamp(Duration::from_millis(200), Duration::from_secs(5))
                };
            }
            activity.failing.store(!ok, Ordering::SeqCst);
            activity.in_flight.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
        });
    }
    // Let in-flight batches finish (their acks are what the drain is for).
    let _ = writers.acquire_many(settings.writers as u32).await;
}

/// Commits one batch and acks it; on failure nacks it. Returns whether it committed.
async fn write(pool: &PgPool, batch: Vec<Pending>, metrics: &WorkerMetrics) -> bool {
    let votes: Vec<VoteMessage> = batch.iter().map(|p| p.vote.clone()).collect();
    let started = Instant::now();
    match batch::commit(pool, &votes).await {
        Ok(outcomes) => {
            let committed_at = chrono::Utc::now();
            metrics.batch_size.observe(batch.len() as f64);
            metrics
                .commit_latency
                .observe(started.elapsed().as_secs_f64());
            for (pending, outcome) in batch.into_iter().zip(outcomes) {
                let lag = (committed_at - pending.vote.accepted_at)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0;
                metrics.queue_lag.observe(lag);
                match outcome {
                    Outcome::Recorded => metrics.outcomes.with_label_values(&["recorded"]).inc(),
                    Outcome::Duplicate => {
                        metrics.outcomes.with_label_values(&["duplicate"]).inc();
                        tracing::info!(correlation_id = %pending.correlation_id, election_id = %pending.vote.election_id,
                            tenant = %pending.vote.tenant, "duplicate delivery ignored");
                    }
                    Outcome::Rejected(reason) => {
                        metrics.outcomes.with_label_values(&[reason.as_str()]).inc();
                        tracing::info!(correlation_id = %pending.correlation_id, election_id = %pending.vote.election_id,
                            tenant = %pending.vote.tenant, reason = reason.as_str(), "vote rejected");
                    }
                }
                // Ack only now: the transaction holding this vote's effect has committed.
                pending.handler.ack();
            }
            true
        }
        Err(e) => {
            metrics.failed_batches.inc();
            let correlation_ids: Vec<&str> = batch
                .iter()
                .take(5)
                .map(|p| p.correlation_id.as_str())
                .collect();
            tracing::warn!(error = %shared::db::redact(&e), size = batch.len(), ?correlation_ids,
                "batch transaction failed; nacking for redelivery");
            for pending in batch {
                pending.handler.nack();
            }
            false
        }
    }
}
