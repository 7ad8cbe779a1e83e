# The soak test: `loadtest soak` from the same image as a Cloud Run job, against the staging
# deployment (var.soak), run by Cloud Scheduler the day before each large meeting so a
# regression in the image about to serve the meeting shows while there is time to roll back.
# It talks to staging's public URLs only: no database, no secret, no role in this project.
locals {
  soak_enabled = var.soak != null
  soak_args = local.soak_enabled ? [
    "soak",
    "--minutes", tostring(var.soak.minutes),
    "--ingest", var.soak.ingest_url,
    "--events", var.soak.events_url,
    "--members", var.soak.members_url,
  ] : []
}

resource "google_service_account" "soak" {
  count        = local.soak_enabled ? 1 : 0
  account_id   = "ekk-soak"
  display_name = "soak job: loadtest soak against staging (holds no role)"
  depends_on   = [google_project_service.apis]
}

resource "google_cloud_run_v2_job" "soak" {
  count               = local.soak_enabled ? 1 : 0
  name                = "soak"
  location            = var.region
  deletion_protection = false

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account       = google_service_account.soak[0].email
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"
      max_retries           = 0
      # The run itself plus setup and the report.
      timeout = "${(var.soak.minutes + 15) * 60}s"

      containers {
        name    = "soak"
        image   = local.image
        command = ["/usr/local/bin/loadtest"]
        args    = local.soak_args
        resources {
          limits = {
            cpu    = "2"
            memory = "2Gi"
          }
        }
      }
    }
  }
}

resource "google_cloud_run_v2_job_iam_member" "soak_runner" {
  count    = local.soak_enabled ? 1 : 0
  name     = google_cloud_run_v2_job.soak[0].name
  location = google_cloud_run_v2_job.soak[0].location
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler["soak"].member
}

resource "google_cloud_scheduler_job" "soak" {
  for_each         = local.soak_enabled ? local.large_meetings : {}
  name             = "soak-${each.key}"
  region           = var.region
  description      = "Soak test of staging (${var.soak.minutes} min) the day before ${each.key}"
  schedule         = formatdate(local.cron_utc, timeadd(each.value.starts_at, "-24h"))
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "30s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/${google_cloud_run_v2_job.soak[0].id}:run"
    oauth_token {
      service_account_email = google_service_account.scheduler["soak"].email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.soak_runner]
}
