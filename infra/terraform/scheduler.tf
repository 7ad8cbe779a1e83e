# The meeting schedule drives Cloud Scheduler: ingest is pre-warmed ten minutes before each
# meeting and set back after it; for a large meeting the database gets a bigger tier the day
# before and its own tier back an hour after. Each job calls the Google API with a service
# account that can do only that (iam.tf). Schedules are cron in UTC (meetings' times end in Z).
locals {
  meetings       = { for m in var.meetings : m.name => m }
  large_meetings = { for m in var.meetings : m.name => m if m.large }
  cron_utc       = "m h D M *"
  ingest_api_uri = "https://run.googleapis.com/v2/${google_cloud_run_v2_service.ingest.id}?updateMask=scaling.minInstanceCount"
  sql_api_uri    = "https://sqladmin.googleapis.com/v1/projects/${var.project_id}/instances/${google_sql_database_instance.main.name}"
}

check "meetings_ahead" {
  assert {
    condition     = alltrue([for m in var.meetings : timecmp(m.ends_at, plantimestamp()) > 0])
    error_message = "A meeting in var.meetings is over: remove it, or its scheduler jobs fire again on the same date next year."
  }
}

resource "google_cloud_scheduler_job" "prewarm" {
  for_each         = local.meetings
  name             = "prewarm-${each.key}"
  region           = var.region
  description      = "Pre-warm ingest to ${each.value.prewarm_instances} instances before ${each.key}"
  schedule         = formatdate(local.cron_utc, timeadd(each.value.starts_at, "-10m"))
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  retry_config {
    retry_count          = 5
    min_backoff_duration = "10s"
    max_backoff_duration = "60s"
  }

  http_target {
    http_method = "PATCH"
    uri         = local.ingest_api_uri
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode(jsonencode({ scaling = { minInstanceCount = each.value.prewarm_instances } }))
    oauth_token {
      service_account_email = google_service_account.scheduler["prewarm"].email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_cloud_scheduler_job" "cooldown" {
  for_each         = local.meetings
  name             = "cooldown-${each.key}"
  region           = var.region
  description      = "ingest back to ${var.ingest_min_instances} minimum instances after ${each.key}"
  schedule         = formatdate(local.cron_utc, each.value.ends_at)
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  retry_config {
    retry_count          = 5
    min_backoff_duration = "10s"
    max_backoff_duration = "60s"
  }

  http_target {
    http_method = "PATCH"
    uri         = local.ingest_api_uri
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode(jsonencode({ scaling = { minInstanceCount = var.ingest_min_instances } }))
    oauth_token {
      service_account_email = google_service_account.scheduler["prewarm"].email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_cloud_scheduler_job" "db_tier_up" {
  for_each         = local.large_meetings
  name             = "db-tier-up-${each.key}"
  region           = var.region
  description      = "Cloud SQL to ${var.db_tier_large} the day before ${each.key} (restarts the instance)"
  schedule         = formatdate(local.cron_utc, timeadd(each.value.starts_at, "-24h"))
  time_zone        = "Etc/UTC"
  attempt_deadline = "120s"

  retry_config {
    retry_count          = 5
    min_backoff_duration = "60s"
    max_backoff_duration = "600s"
  }

  http_target {
    http_method = "PATCH"
    uri         = local.sql_api_uri
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode(jsonencode({ settings = { tier = var.db_tier_large } }))
    oauth_token {
      service_account_email = google_service_account.scheduler["db-tier"].email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_cloud_scheduler_job" "db_tier_down" {
  for_each         = local.large_meetings
  name             = "db-tier-down-${each.key}"
  region           = var.region
  description      = "Cloud SQL back to ${var.db_tier} an hour after ${each.key} (restarts the instance)"
  schedule         = formatdate(local.cron_utc, timeadd(each.value.ends_at, "1h"))
  time_zone        = "Etc/UTC"
  attempt_deadline = "120s"

  retry_config {
    retry_count          = 5
    min_backoff_duration = "60s"
    max_backoff_duration = "600s"
  }

  http_target {
    http_method = "PATCH"
    uri         = local.sql_api_uri
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode(jsonencode({ settings = { tier = var.db_tier } }))
    oauth_token {
      service_account_email = google_service_account.scheduler["db-tier"].email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_project_service.apis]
}
