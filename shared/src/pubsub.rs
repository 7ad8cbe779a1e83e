//! Pub/Sub clients built the same way in production and against Google's emulator.
//!
//! `google-cloud-pubsub` does not read `PUBSUB_EMULATOR_HOST`, so we do: when it is set every
//! client talks plaintext HTTP/2 to it with anonymous credentials; otherwise the clients use
//! Application Default Credentials (the Cloud Run service account).

use std::time::Duration;

use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{DeadLetterPolicy, RetryPolicy};
use google_cloud_pubsub::retry_policy::RetryableErrors;

use crate::config::PubSubSettings;

pub use google_cloud_gax::client_builder::Error as BuildError;

fn endpoint(settings: &PubSubSettings) -> Option<String> {
    settings.emulator_host.as_ref().map(|host| {
        if host.starts_with("http://") || host.starts_with("https://") {
            host.clone()
        } else {
            format!("http://{host}")
        }
    })
}

/// Builds the client from `$builder` against the emulator (plaintext, anonymous credentials) when one is
/// configured, as is otherwise. A macro, not a function: the publisher and subscriber have
/// builder types of their own, and the admin clients' generic `ClientBuilder::build` is bounded
/// by a trait the gax crate keeps out of its public API.
macro_rules! build_for {
    ($builder:expr, $settings:expr) => {{
        let builder = $builder;
        match endpoint($settings) {
            Some(ep) => {
                builder
                    .with_endpoint(ep)
                    .with_credentials(Anonymous::new().build())
                    .build()
                    .await
            }
            None => builder.build().await,
        }
    }};
}

/// A publisher whose own retries stop within `budget`: the caller bounds its wait with the
/// same budget, so an unreachable Pub/Sub becomes a 503, never a hang (the crate's default
/// keeps retrying for 600 s). `batch_delay` trades a little latency for fewer RPCs.
pub async fn publisher(
    settings: &PubSubSettings,
    budget: Duration,
    batch_delay: Duration,
) -> Result<Publisher, BuildError> {
    let builder = Publisher::builder(settings.topic_path())
        .with_retry_policy(
            RetryableErrors
                .with_time_limit(budget)
                .with_attempt_limit(5),
        )
        .set_delay_threshold(batch_delay)
        .set_message_count_threshold(100);
    build_for!(builder, settings)
}

pub async fn subscriber(settings: &PubSubSettings) -> Result<Subscriber, BuildError> {
    build_for!(Subscriber::builder(), settings)
}

pub async fn topic_admin(settings: &PubSubSettings) -> Result<TopicAdmin, BuildError> {
    build_for!(TopicAdmin::builder(), settings)
}

pub async fn subscription_admin(
    settings: &PubSubSettings,
) -> Result<SubscriptionAdmin, BuildError> {
    build_for!(SubscriptionAdmin::builder(), settings)
}

pub fn is_code(error: &google_cloud_pubsub::Error, code: Code) -> bool {
    error.status().is_some_and(|s| s.code == code)
}

/// The vote topic, the worker subscription (dead-letter policy, redelivery backoff) and the
/// dead-letter topic with a subscription of its own, created if missing. Production creates
/// them with Terraform with the same settings; the local stack and the tests create them here.
///
/// The dead-letter topic is part of the vote path: the worker consumes its subscription too and
/// commits what arrives there like any vote (commit is idempotent). Dead-lettering is therefore
/// not where a vote ends, only where it waits out a long outage with a slower retry.
#[derive(Debug, Clone)]
pub struct Topology {
    pub dead_letter_topic: String,
    pub dead_letter_subscription: String,
    /// Deliveries before a message moves to the dead-letter topic (Pub/Sub allows 5 to 100).
    /// Every crash of a worker holding a message counts as one, so production uses the most.
    pub max_delivery_attempts: i32,
    pub ack_deadline_seconds: i32,
    /// Redelivery backoff after a nack or an expired lease, on both subscriptions.
    pub minimum_backoff: Duration,
    pub maximum_backoff: Duration,
    /// How long Pub/Sub keeps an unacked message (the longest outage a vote survives in the
    /// queue; 7 days is the most Pub/Sub allows).
    pub retention: Duration,
    /// Keep acked messages so the subscription can be replayed with seek (tests, recovery).
    pub retain_acked_messages: bool,
}

impl Topology {
    /// What production uses (and `infra/terraform` sets): 100 delivery attempts with a
    /// 10 s to 600 s backoff keep a vote on the main subscription through roughly 15 hours of a
    /// failing database before it moves to the dead-letter subscription, where it keeps being
    /// retried for the rest of the 7 days' retention.
    pub fn for_settings(settings: &PubSubSettings) -> Self {
        Self {
            dead_letter_topic: format!("{}-dead-letter", settings.topic),
            dead_letter_subscription: format!("{}-dead-letter-sub", settings.topic),
            max_delivery_attempts: 100,
            ack_deadline_seconds: 60,
            minimum_backoff: Duration::from_secs(10),
            maximum_backoff: Duration::from_secs(600),
            retention: Duration::from_secs(7 * 24 * 3600),
            retain_acked_messages: false,
        }
    }

    pub fn dead_letter_subscription_path(&self, settings: &PubSubSettings) -> String {
        format!(
            "projects/{}/subscriptions/{}",
            settings.project, self.dead_letter_subscription
        )
    }

    fn retry_policy(&self) -> RetryPolicy {
        let seconds = |d: Duration| google_cloud_wkt::Duration::clamp(d.as_secs() as i64, 0);
        RetryPolicy::new()
            .set_minimum_backoff(seconds(self.minimum_backoff))
            .set_maximum_backoff(seconds(self.maximum_backoff))
    }

    pub async fn ensure(&self, settings: &PubSubSettings) -> anyhow::Result<()> {
        let topics = topic_admin(settings).await?;
        let subscriptions = subscription_admin(settings).await?;
        let project = &settings.project;
        let dead_letter_topic = format!("projects/{project}/topics/{}", self.dead_letter_topic);
        for topic in [settings.topic_path(), dead_letter_topic.clone()] {
            match topics.create_topic().set_name(&topic).send().await {
                Ok(_) => {}
                Err(e) if is_code(&e, Code::AlreadyExists) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let retention = google_cloud_wkt::Duration::clamp(self.retention.as_secs() as i64, 0);
        let worker = subscriptions
            .create_subscription()
            .set_name(settings.subscription_path())
            .set_topic(settings.topic_path())
            .set_ack_deadline_seconds(self.ack_deadline_seconds)
            .set_retain_acked_messages(self.retain_acked_messages)
            .set_message_retention_duration(retention)
            .set_dead_letter_policy(
                DeadLetterPolicy::new()
                    .set_dead_letter_topic(&dead_letter_topic)
                    .set_max_delivery_attempts(self.max_delivery_attempts),
            )
            .set_retry_policy(self.retry_policy())
            .send()
            .await;
        match worker {
            Ok(_) => {}
            Err(e) if is_code(&e, Code::AlreadyExists) => {}
            Err(e) => return Err(e.into()),
        }
        // No dead-letter policy here: a vote that reached this subscription is retried (with
        // the same backoff) until the worker commits it or retention ends.
        let dead = subscriptions
            .create_subscription()
            .set_name(self.dead_letter_subscription_path(settings))
            .set_topic(&dead_letter_topic)
            .set_ack_deadline_seconds(self.ack_deadline_seconds)
            .set_message_retention_duration(retention)
            .set_retry_policy(self.retry_policy())
            .send()
            .await;
        match dead {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, Code::AlreadyExists) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
