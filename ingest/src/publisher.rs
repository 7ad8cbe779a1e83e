//! Where an accepted vote is published. Adaptive batching: a vote that arrives while no other
//! is being published goes out at once in a Publish request of its own; one that arrives while
//! another is in flight waits up to `PUBLISH_BATCH_DELAY_MS` to share a request. A quiet meeting
//! pays no batching delay, a burst still shares requests. Either way the 202 waits for Pub/Sub's
//! acknowledgement.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use prometheus::IntCounterVec;

use shared::config::PubSubSettings;
use shared::pubsub::BuildError;

pub struct VotePublisher {
    /// No delay: the message is sent as soon as the publisher's task sees it.
    immediate: Publisher,
    batching: Publisher,
    in_flight: AtomicUsize,
    /// `votes_published_total{path="immediate"|"batched"}`.
    paths: IntCounterVec,
}

/// Counts a publish as in flight until it is dropped (finished, failed or timed out).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl VotePublisher {
    pub async fn build(
        settings: &PubSubSettings,
        budget: Duration,
        batch_delay: Duration,
        paths: IntCounterVec,
    ) -> Result<Self, BuildError> {
        Ok(Self {
            immediate: shared::pubsub::publisher(settings, budget, Duration::ZERO).await?,
            batching: shared::pubsub::publisher(settings, budget, batch_delay).await?,
            in_flight: AtomicUsize::new(0),
            paths,
        })
    }

    /// Publishes `message`; the message id once Pub/Sub has it.
    pub async fn publish(
        &self,
        message: Message,
    ) -> Result<String, google_cloud_pubsub::error::PublishError> {
        let alone = self.in_flight.fetch_add(1, Ordering::SeqCst) == 0;
        let _in_flight = InFlight(&self.in_flight);
        let (publisher, path) = if alone {
            (&self.immediate, "immediate")
        } else {
            (&self.batching, "batched")
        };
        self.paths.with_label_values(&[path]).inc();
        publisher.publish(message).await
    }

    /// Sends whatever is still held (shutdown).
    pub async fn flush(&self) {
        tokio::join!(self.immediate.flush(), self.batching.flush());
    }
}
