# The vote topic and its subscriptions, exactly as shared::pubsub::Topology::for_settings (what
# the worker assumes; infra/check compares the two): 60 s ack deadline, 10-600 s backoff on both
# subscriptions, 7 days' retention, 100 delivery attempts before the dead-letter topic, whose
# subscription the worker drains too and which has no dead-letter policy of its own.
locals {
  vote_topic = "votes"
}

resource "google_pubsub_topic" "votes" {
  #checkov:skip=CKV_GCP_83:Vote messages are already encrypted and authenticated by ingest with the vote keys (shared::vote_keys); a customer-managed key would add cost and a key to operate, not secrecy.
  name       = local.vote_topic
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "votes_dead_letter" {
  #checkov:skip=CKV_GCP_83:Same messages as the vote topic, encrypted by ingest with the vote keys.
  name       = "${local.vote_topic}-dead-letter"
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "worker" {
  name                       = "${local.vote_topic}-worker"
  topic                      = google_pubsub_topic.votes.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = false

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.votes_dead_letter.id
    max_delivery_attempts = 100
  }

  # Never expire, even after months without a meeting.
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "dead_letter" {
  name                       = "${local.vote_topic}-dead-letter-sub"
  topic                      = google_pubsub_topic.votes_dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = false

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by Pub/Sub's own service agent: it must publish to the dead-letter
# topic and subscribe to the subscription it forwards from.
locals {
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.votes_dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  subscription = google_pubsub_subscription.worker.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
