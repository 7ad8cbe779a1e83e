//! The Pub/Sub side of a drain run: the emulator's address, publishing, the ack-only
//! consumer, and removing the run's topics and subscriptions.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownToken};
use indicatif::ProgressBar;
use shared::config::PubSubSettings;
use shared::vote::VoteMessage;
use tokio::task::JoinHandle;

use super::{DrainSettings, Throughput};
use crate::ceiling;
use crate::machine::{self, CpuWatch};
use crate::scenario::Ui;

pub(super) fn emulator_host() -> anyhow::Result<String> {
    let host = std::env::var("PUBSUB_EMULATOR_HOST")
        .context("PUBSUB_EMULATOR_HOST is not set (source infra/local/env.sh, or use infra/local/loadtest.sh)")?;
    crate::target::loopback(&format!("http://{host}"), "PUBSUB_EMULATOR_HOST")?;
    std::net::TcpStream::connect_timeout(
        &host
            .parse()
            .with_context(|| format!("PUBSUB_EMULATOR_HOST must be IP:PORT, got `{host}`"))?,
        Duration::from_secs(2),
    )
    .with_context(|| {
        format!("the Pub/Sub emulator does not answer at {host} (infra/local/up.sh)")
    })?;
    Ok(host)
}

pub(super) async fn publish_all(
    ps: &PubSubSettings,
    votes: &[VoteMessage],
    ui: Ui,
    cpu: &CpuWatch,
) -> anyhow::Result<Throughput> {
    let publisher =
        shared::pubsub::publisher(ps, Duration::from_secs(60), Duration::from_millis(5)).await?;
    let bar = ui.bar(votes.len() as u64, "publishing the queued votes");
    let before = cpu.sample();
    let started = Instant::now();
    let correlation = shared::telemetry::CorrelationId::new();
    let done = AtomicUsize::new(0);
    let progress = Mutex::new(Vec::new());
    let failures: Vec<String> = futures::stream::iter(votes.iter().map(|v| {
        let publishing = publisher.publish(v.encode(&ceiling::run_vote_keys().1, &correlation.0));
        let (done, progress, bar) = (&done, &progress, &bar);
        async move {
            let outcome = publishing.await;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 500 == 0 || n == votes.len() {
                progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((started.elapsed().as_secs_f64(), n as u64));
            }
            bar.inc(1);
            outcome.err().map(|e| e.to_string())
        }
    }))
    .buffer_unordered(5000)
    .filter_map(|f| async move { f })
    .collect()
    .await;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    if let Some(first) = failures.first() {
        bail!("{} publishes failed (first: {first})", failures.len());
    }
    Ok(Throughput::new(
        votes.len(),
        elapsed,
        progress.into_inner().unwrap_or_else(|p| p.into_inner()),
        machine::share(&before, &cpu.sample()),
    ))
}

/// What the ack-only consumer has seen: the receipts (to count a vote once), the votes in
/// arrival order, and the progress.
#[derive(Default)]
struct Seen {
    receipts: HashSet<String>,
    votes: Vec<VoteMessage>,
    progress: Vec<(f64, u64)>,
}

/// What the ack-only consumer's streams share, and a signal once all `n` votes are in.
#[derive(Clone)]
struct AckOnly {
    seen: Arc<Mutex<Seen>>,
    finished: Arc<tokio::sync::Notify>,
    bar: ProgressBar,
    started: Instant,
    n: usize,
}

impl AckOnly {
    /// Decodes and acks every message of `stream`, doing nothing else.
    async fn consume(self, mut stream: MessageStream) {
        while let Some(Ok((message, handler))) = stream.next().await {
            let decoded = VoteMessage::decode(&ceiling::run_vote_keys().1, &message.data);
            handler.ack();
            if let Ok(vote) = decoded {
                self.count(vote);
            }
        }
    }

    /// Counts a decoded vote once (redeliveries are acked and ignored).
    fn count(&self, vote: VoteMessage) {
        let mut s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if s.receipts.insert(vote.receipt.to_string()) {
            s.votes.push(vote);
            self.bar.inc(1);
            let count = s.votes.len();
            if count.is_multiple_of(500) || count == self.n {
                s.progress
                    .push((self.started.elapsed().as_secs_f64(), count as u64));
            }
            if count >= self.n {
                self.finished.notify_one();
            }
        }
    }

    /// Shuts the streams down (5 s each at most) and takes what they saw.
    async fn stop(&self, tokens: Vec<ShutdownToken>, tasks: Vec<JoinHandle<()>>) -> Seen {
        for token in tokens {
            let _ = tokio::time::timeout(Duration::from_secs(5), token.shutdown()).await;
        }
        for task in tasks {
            task.abort();
        }
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The ack-only consumer: returns its throughput and the decoded votes in arrival order.
pub(super) async fn ack_only(
    ps: &PubSubSettings,
    settings: &DrainSettings,
    ui: Ui,
    cpu: &CpuWatch,
) -> anyhow::Result<(Throughput, Vec<VoteMessage>)> {
    let subscription = ps.subscription_path();
    let subscriber = shared::pubsub::subscriber(ps).await?;
    let n = settings.votes;
    let bar = ui.bar(n as u64, "ack-only consumer");
    let seen = Arc::new(Mutex::new(Seen {
        receipts: HashSet::with_capacity(n),
        votes: Vec::with_capacity(n),
        progress: Vec::new(),
    }));
    let finished = Arc::new(tokio::sync::Notify::new());
    let before = cpu.sample();
    let consumer = AckOnly {
        seen,
        finished,
        bar,
        started: Instant::now(),
        n,
    };
    let (mut tokens, mut tasks) = (Vec::new(), Vec::new());
    for _ in 0..settings.streams {
        let stream = subscriber
            .subscribe(subscription.clone())
            .set_max_outstanding_messages(settings.max_outstanding)
            .set_max_lease_extension(Duration::from_secs(10))
            .build();
        tokens.push(stream.shutdown_token());
        tasks.push(tokio::spawn(consumer.clone().consume(stream)));
    }
    let timed_out = tokio::time::timeout(
        Duration::from_secs(settings.timeout_secs),
        consumer.finished.notified(),
    )
    .await
    .is_err();
    let elapsed = consumer.started.elapsed();
    let share = machine::share(&before, &cpu.sample());
    consumer.bar.finish_and_clear();
    let seen = consumer.stop(tokens, tasks).await;
    if timed_out {
        bail!(
            "the ack-only consumer got {} of {n} votes within {} s",
            seen.votes.len(),
            settings.timeout_secs
        );
    }
    Ok((
        Throughput::new(n, elapsed, seen.progress, share),
        seen.votes,
    ))
}

/// Removes the run's subscriptions and topics from the emulator (it keeps them in memory).
pub(super) async fn delete_pubsub(
    ps: &PubSubSettings,
    topology: &shared::pubsub::Topology,
    more: &[&PubSubSettings],
) -> anyhow::Result<()> {
    let subscriptions = shared::pubsub::subscription_admin(ps).await?;
    let topics = shared::pubsub::topic_admin(ps).await?;
    let mut subs = vec![
        ps.subscription_path(),
        format!(
            "projects/{}/subscriptions/{}",
            ps.project, topology.dead_letter_subscription
        ),
    ];
    subs.extend(more.iter().map(|m| m.subscription_path()));
    for sub in subs {
        let _ = subscriptions
            .delete_subscription()
            .set_subscription(sub)
            .send()
            .await;
    }
    for topic in [
        ps.topic_path(),
        format!(
            "projects/{}/topics/{}",
            ps.project, topology.dead_letter_topic
        ),
    ] {
        let _ = topics.delete_topic().set_topic(topic).send().await;
    }
    Ok(())
}
