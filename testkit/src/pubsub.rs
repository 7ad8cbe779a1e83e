//! A fresh topic and subscription per test on the Pub/Sub emulator, and helpers to read them.

use std::time::Duration;

use shared::config::PubSubSettings;
use shared::pubsub::Topology;
use uuid::Uuid;

/// A fresh topic, subscription and dead-letter topic, with test-sized redelivery settings.
pub struct TestPubSub {
    pub settings: PubSubSettings,
    pub topology: Topology,
}

impl TestPubSub {
    /// Dead letter after 5 attempts, redelivery backoff 1 to 2 s: a test outage of ten seconds
    /// outlasts every delivery attempt, as an outage of hours does in production.
    pub async fn create() -> Self {
        Self::create_with(5).await
    }

    /// With `max_delivery_attempts` before dead-lettering.
    pub async fn create_with(max_delivery_attempts: i32) -> Self {
        Self::create_with_topology(|topology| {
            topology.max_delivery_attempts = max_delivery_attempts;
        })
        .await
    }

    /// With the topology adjusted by `adjust` (from the test defaults above).
    pub async fn create_with_topology(adjust: impl FnOnce(&mut Topology)) -> Self {
        let host = std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| {
            panic!("PUBSUB_EMULATOR_HOST is not set: run the tests with infra/local/test.sh")
        });
        let id = Uuid::new_v4().simple().to_string();
        let settings = PubSubSettings {
            emulator_host: Some(host),
            project: std::env::var("PUBSUB_PROJECT_ID").unwrap_or_else(|_| "ekklesia-local".into()),
            topic: format!("votes-{id}"),
            subscription: format!("votes-{id}-worker"),
        };
        let mut topology = Topology::for_settings(&settings);
        topology.max_delivery_attempts = 5;
        topology.ack_deadline_seconds = 30;
        topology.minimum_backoff = Duration::from_secs(1);
        topology.maximum_backoff = Duration::from_secs(2);
        adjust(&mut topology);
        topology
            .ensure(&settings)
            .await
            .expect("create topic and subscriptions on the emulator");
        Self { settings, topology }
    }

    pub fn dead_letter_subscription_path(&self) -> String {
        self.topology.dead_letter_subscription_path(&self.settings)
    }
}
