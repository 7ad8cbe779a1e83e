# One service account per Cloud Run service and job, holding only what it needs; the list is
# documented in docs/deploy.md ("Service accounts") and checked by infra/check.
resource "google_service_account" "runtime" {
  for_each     = local.runtimes
  account_id   = "ekk-${each.key}"
  display_name = each.value.description
  depends_on   = [google_project_service.apis]
}

# Every runtime logs into the database through the Cloud SQL Auth Proxy with its own identity.
resource "google_project_iam_member" "cloudsql_client" {
  for_each = local.runtimes
  project  = var.project_id
  role     = "roles/cloudsql.client"
  member   = google_service_account.runtime[each.key].member
}

resource "google_project_iam_member" "cloudsql_instance_user" {
  for_each = local.runtimes
  project  = var.project_id
  role     = "roles/cloudsql.instanceUser"
  member   = google_service_account.runtime[each.key].member
}

# The worker's Prometheus sidecar writes its metrics to Cloud Monitoring.
resource "google_project_iam_member" "worker_metric_writer" {
  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = google_service_account.runtime["worker"].member
}

resource "google_pubsub_topic_iam_member" "ingest_publisher" {
  topic  = google_pubsub_topic.votes.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.runtime["ingest"].member
}

resource "google_pubsub_subscription_iam_member" "worker_votes" {
  subscription = google_pubsub_subscription.worker.id
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.runtime["worker"].member
}

resource "google_pubsub_subscription_iam_member" "worker_dead_letter" {
  subscription = google_pubsub_subscription.dead_letter.id
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.runtime["worker"].member
}

resource "google_storage_bucket_iam_member" "members_import_reader" {
  bucket = google_storage_bucket.imports.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.runtime["members-import"].member
}

# Cloud Scheduler's identities, each able to do one thing.
resource "google_service_account" "scheduler" {
  for_each = merge(
    {
      prewarm = "Cloud Scheduler: sets ingest's minimum instances before and after meetings"
      db-tier = "Cloud Scheduler: switches the Cloud SQL tier around large meetings"
    },
    local.soak_enabled ? { soak = "Cloud Scheduler: runs the soak job (soak.tf) the day before large meetings" } : {},
  )
  account_id   = "ekk-sched-${each.key}"
  display_name = each.value
  depends_on   = [google_project_service.apis]
}

resource "google_project_iam_custom_role" "ingest_scaling" {
  role_id     = "ekklesiaIngestScaling"
  title       = "Ekklesia: change ingest's scaling"
  description = "Read and update one Cloud Run service (bound on ingest only)."
  permissions = ["run.services.get", "run.services.update"]
}

resource "google_cloud_run_v2_service_iam_member" "prewarm" {
  name     = google_cloud_run_v2_service.ingest.name
  location = google_cloud_run_v2_service.ingest.location
  role     = google_project_iam_custom_role.ingest_scaling.id
  member   = google_service_account.scheduler["prewarm"].member
}

# Updating a service acts as its runtime identity, so the pre-warm account may act as ingest's
# (and as nothing else).
resource "google_service_account_iam_member" "prewarm_acts_as_ingest" {
  service_account_id = google_service_account.runtime["ingest"].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.scheduler["prewarm"].member
}

resource "google_project_iam_custom_role" "sql_tier" {
  role_id     = "ekklesiaSqlTier"
  title       = "Ekklesia: change the Cloud SQL tier"
  description = "Read and update a Cloud SQL instance (bound on the ekklesia instance only)."
  permissions = ["cloudsql.instances.get", "cloudsql.instances.update"]
}

resource "google_project_iam_member" "db_tier" {
  project = var.project_id
  role    = google_project_iam_custom_role.sql_tier.id
  member  = google_service_account.scheduler["db-tier"].member
  condition {
    title      = "ekklesia-instance-only"
    expression = "resource.name == \"projects/${var.project_id}/instances/${google_sql_database_instance.main.name}\""
  }
}
