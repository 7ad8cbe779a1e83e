//! Streaming pull → batches → commit → ack.
//!
//! `STREAMS` pull tasks on the vote subscription and `DEAD_LETTER_STREAMS` on the dead-letter
//! subscription feed one batcher: a vote that Pub/Sub dead-lettered (after every delivery attempt
//! failed, e.g. through a long database outage) is committed like any other, because commit is
//! idempotent; it is counted and logged so an alert sees it. The batcher cuts a batch at
//! `BATCH_SIZE` votes or `BATCH_WAIT_MS` after its first vote; up to `WRITERS` batches commit
//! concurrently. A message is acked only after the transaction holding its effect committed
//! (invariant 1). A batch that fails because the database is unavailable is nacked whole and
//! Pub/Sub redelivers it with the subscription's backoff, while this worker also backs off. A
//! batch that fails for any other reason is split in halves until the message that fails alone
//! is found: its batch-mates commit and are acked, and only it is nacked, so one bad message
//! never spends the delivery attempts of the others.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::ShutdownToken;
use shared::vote::VoteMessage;
use shared::vote_keys::VoteKeys;
use sqlx::PgPool;
use tokio::sync::{mpsc, Semaphore};

use crate::batch::{self, Committed, Outcome};
use crate::configuration::Settings;
use crate::state::WorkerMetrics;

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

/// Which subscription a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Votes,
    DeadLetter,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Votes => "votes",
            Self::DeadLetter => "dead_letter",
        }
    }
}

struct Pending {
    vote: VoteMessage,
    handler: Handler,
    correlation_id: String,
    /// The trace of the request that published it (the batch span links to it).
    trace: opentelemetry::Context,
}

pub struct Consumer {
    pub shutdown_tokens: Vec<ShutdownToken>,
    pub done: tokio::task::JoinHandle<()>,
}

/// What the pull tasks share.
#[derive(Clone)]
struct Intake {
    keys: Arc<VoteKeys>,
    metrics: Arc<WorkerMetrics>,
    activity: Arc<Activity>,
    publish_grace: chrono::Duration,
}

pub fn start(
    settings: &Settings,
    subscriber: &Subscriber,
    pool: PgPool,
    metrics: Arc<WorkerMetrics>,
    activity: Arc<Activity>,
) -> Consumer {
    let (tx, rx) = mpsc::channel::<Pending>(settings.batch_size * 2);
    let intake = Intake {
        keys: settings.vote_keys.clone(),
        metrics: metrics.clone(),
        activity: activity.clone(),
        publish_grace: chrono::Duration::from_std(settings.publish_grace)
            .unwrap_or(chrono::Duration::MAX),
    };
    let subscriptions = std::iter::repeat_n(
        (Source::Votes, settings.pubsub.subscription_path()),
        settings.streams,
    )
    .chain(std::iter::repeat_n(
        (Source::DeadLetter, settings.dead_letter_subscription_path()),
        settings.dead_letter_streams,
    ));
    let mut shutdown_tokens = Vec::new();
    for (stream_no, (source, path)) in subscriptions.enumerate() {
        let mut stream = subscriber
            .subscribe(path)
            .set_max_outstanding_messages(settings.max_outstanding)
            .set_max_lease_extension(settings.lease_extension)
            .build();
        shutdown_tokens.push(stream.shutdown_token());
        let tx = tx.clone();
        let intake = intake.clone();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let (message, handler) = match item {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::error!(stream = stream_no, source = source.as_str(), error = %e, "streaming pull failed");
                        break;
                    }
                };
                intake.activity.touch();
                if let Some(pending) = intake.decode(message, handler, source) {
                    if tx.send(pending).await.is_err() {
                        break;
                    }
                }
            }
            tracing::info!(
                stream = stream_no,
                source = source.as_str(),
                "stream closed"
            );
        });
    }
    drop(tx);
    let done = tokio::spawn(batcher(rx, settings.clone(), pool, metrics, activity));
    Consumer {
        shutdown_tokens,
        done,
    }
}

impl Intake {
    /// A message that is not a vote is counted and logged without its content. One that no
    /// worker will ever decode (malformed, forged, altered) is acked: it was never an accepted
    /// vote, and the count is what an alert watches. One this worker cannot read but a newer one
    /// may (another version, a key not rolled out here yet) is nacked for that worker.
    fn decode(&self, message: Message, handler: Handler, source: Source) -> Option<Pending> {
        let correlation_id = shared::vote::correlation_of(&message.attributes).to_owned();
        self.metrics
            .received
            .with_label_values(&[source.as_str()])
            .inc();
        if source == Source::DeadLetter {
            self.metrics.dead_letter_received.inc();
            tracing::warn!(message_id = %message.message_id, correlation_id = %correlation_id,
                "a dead-lettered vote arrived; committing it like any other");
        }
        match VoteMessage::decode(&self.keys, &message.data) {
            Ok(mut vote) => {
                if let Some(published) = original_publish_time(&message) {
                    vote.accepted_at =
                        bounded_accepted_at(vote.accepted_at, published, self.publish_grace);
                }
                Some(Pending {
                    vote,
                    handler,
                    correlation_id,
                    trace: shared::traces::from_attributes(&message.attributes),
                })
            }
            Err(e) => {
                self.metrics
                    .undecodable
                    .with_label_values(&[e.kind()])
                    .inc();
                let permanent = e.is_permanent();
                tracing::error!(
                    message_id = %message.message_id,
                    correlation_id = %correlation_id,
                    source = source.as_str(),
                    delivery_attempt = ?handler.delivery_attempt(),
                    error = %e,
                    action = if permanent { "acked" } else { "nacked" },
                    "a message that is not a vote this worker can read"
                );
                if permanent {
                    handler.ack();
                } else {
                    handler.nack();
                }
                None
            }
        }
    }
}

/// When the vote was first published: Pub/Sub's own stamp, or for a dead-lettered message the
/// stamp of the original (which Pub/Sub copies into an attribute).
fn original_publish_time(message: &Message) -> Option<DateTime<Utc>> {
    if let Some(raw) = message
        .attributes
        .get(shared::vote::ATTR_DEAD_LETTER_PUBLISH_TIME)
    {
        return DateTime::parse_from_rfc3339(raw)
            .ok()
            .map(|t| t.with_timezone(&Utc));
    }
    let stamp = message.publish_time.as_ref()?;
    DateTime::from_timestamp(stamp.seconds(), stamp.nanos().max(0) as u32)
}

/// A vote cannot have been accepted long before Pub/Sub received it: ingest publishes within its
/// publish budget or answers 503. So `accepted_at` counts as no earlier than the publish time
/// minus `grace` (configured above that budget): whoever holds a vote key cannot publish after a
/// close a vote dated before it.
pub fn bounded_accepted_at(
    accepted_at: DateTime<Utc>,
    published: DateTime<Utc>,
    grace: chrono::Duration,
) -> DateTime<Utc> {
    accepted_at.max(published.checked_sub_signed(grace).unwrap_or(accepted_at))
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
        let keys = settings.vote_keys.clone();
        let metrics = metrics.clone();
        let activity = activity.clone();
        let backoff = backoff.clone();
        tokio::spawn(async move {
            let ok = write(&pool, &keys, batch, &metrics).await;
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

/// How one slice of a batch ended.
#[derive(Debug)]
pub enum PartEnd {
    Committed(Committed),
    /// It failed on its own (one message): nothing else in the batch is held back by it.
    Poison(sqlx::Error),
    /// The database is unavailable: not attempted further, retried later.
    Unavailable(sqlx::Error),
}

/// Commits `0..len` through `attempt`, splitting a slice that fails for a reason other than an
/// unavailable database in halves until the failing messages stand alone. Stops at the first
/// unavailability and reports every slice not committed by then as unavailable.
pub async fn commit_isolating<F, Fut>(len: usize, mut attempt: F) -> Vec<(Range<usize>, PartEnd)>
where
    F: FnMut(Range<usize>) -> Fut,
    Fut: std::future::Future<Output = Result<Committed, sqlx::Error>>,
{
    let mut ends = Vec::new();
    let mut todo: Vec<Range<usize>> = Vec::with_capacity(16);
    todo.push(0..len);
    while let Some(part) = todo.pop() {
        match attempt(part.clone()).await {
            Ok(committed) => ends.push((part, PartEnd::Committed(committed))),
            Err(e) if shared::db::is_transient(&e) => {
                ends.push((part, PartEnd::Unavailable(e)));
                // Everything left waits for the database as well (one error stands for all).
                ends.extend(
                    todo.drain(..)
                        .map(|rest| (rest, PartEnd::Unavailable(sqlx::Error::PoolTimedOut))),
                );
            }
            Err(e) if part.len() == 1 => ends.push((part, PartEnd::Poison(e))),
            Err(_) => {
                let middle = part.start + part.len() / 2;
                todo.push(middle..part.end);
                todo.push(part.start..middle);
            }
        }
    }
    ends
}

/// Commits one batch and acks it; what could not be committed is nacked. Returns false when the
/// database was unavailable (the caller backs off). Its span links to every vote's trace.
async fn write(
    pool: &PgPool,
    keys: &VoteKeys,
    batch: Vec<Pending>,
    metrics: &WorkerMetrics,
) -> bool {
    use opentelemetry::trace::TraceContextExt;
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!("batch", size = batch.len());
    for pending in &batch {
        let linked = pending.trace.span().span_context().clone();
        if linked.is_valid() {
            span.add_link(linked);
        }
    }
    write_batch(pool, keys, batch, metrics)
        .instrument(span)
        .await
}

async fn write_batch(
    pool: &PgPool,
    keys: &VoteKeys,
    batch: Vec<Pending>,
    metrics: &WorkerMetrics,
) -> bool {
    let votes: Vec<VoteMessage> = batch.iter().map(|p| p.vote.clone()).collect();
    let ends = commit_isolating(batch.len(), |range| {
        let started = Instant::now();
        let votes = &votes[range];
        async move {
            let result = batch::commit(pool, keys, votes).await;
            if result.is_ok() {
                metrics.batch_size.observe(votes.len() as f64);
                metrics
                    .commit_latency
                    .observe(started.elapsed().as_secs_f64());
            }
            result
        }
    })
    .await;
    let mut handlers: Vec<Option<Pending>> = batch.into_iter().map(Some).collect();
    let mut available = true;
    for (range, end) in ends {
        let part: Vec<Pending> = handlers[range]
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        match end {
            PartEnd::Committed(committed) => acknowledge(part, committed, metrics),
            PartEnd::Poison(e) => {
                metrics.poison.inc();
                for pending in part {
                    tracing::error!(error = %shared::db::redact(&e), correlation_id = %pending.correlation_id,
                        election_id = %pending.vote.election_id, tenant = %pending.vote.tenant,
                        "a vote fails to commit on its own; nacked for redelivery, its batch-mates committed");
                    pending.handler.nack();
                }
            }
            PartEnd::Unavailable(e) => {
                if available {
                    metrics.failed_batches.inc();
                    tracing::warn!(error = %shared::db::redact(&e), size = part.len(),
                        "database unavailable; nacking for redelivery");
                }
                available = false;
                for pending in part {
                    pending.handler.nack();
                }
            }
        }
    }
    available
}

/// Acks a committed part of a batch, counting each outcome.
fn acknowledge(part: Vec<Pending>, committed: Committed, metrics: &WorkerMetrics) {
    let committed_at = Utc::now();
    for election in &committed.reopened_seals {
        metrics.votes_after_seal.inc();
        tracing::error!(election_id = %election,
            "a vote accepted before the close arrived after the seal: recorded, the election is sealed again");
    }
    for (pending, outcome) in part.into_iter().zip(committed.outcomes) {
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
}

#[cfg(test)]
mod tests;
