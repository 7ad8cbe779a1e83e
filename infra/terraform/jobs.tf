# Jobs from the same image: the migrations and the member-registry import. Each has the Cloud
# SQL Auth Proxy as a sidecar; the job's binary asks it to quit when done
# (CLOUD_SQL_PROXY_QUIT_URL, shared::db::quit_proxy), so the task ends with the job's exit code.
locals {
  job_proxy_args = concat(["--quitquitquit", "--admin-port=9091"], local.proxy_args)
  proxy_quit_url = "http://127.0.0.1:9091/quitquitquit"
}

resource "google_cloud_run_v2_job" "migrate" {
  name                = "migrate"
  location            = var.region
  deletion_protection = false

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account       = google_service_account.runtime["migrate"].email
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"
      max_retries           = 0
      timeout               = "600s"

      vpc_access {
        egress = "PRIVATE_RANGES_ONLY"
        network_interfaces {
          network    = local.direct_vpc.network
          subnetwork = local.direct_vpc.subnetwork
        }
      }

      containers {
        name       = "migrate"
        image      = local.image
        command    = ["/usr/local/bin/migrate"]
        depends_on = ["cloud-sql-proxy"]
        env {
          name  = "DATABASE_URL"
          value = local.database_urls["migrate"]
        }
        env {
          name  = "CLOUD_SQL_PROXY_QUIT_URL"
          value = local.proxy_quit_url
        }
        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }
      }

      containers {
        name  = "cloud-sql-proxy"
        image = var.cloud_sql_proxy_image
        args  = local.job_proxy_args
        resources {
          limits = {
            cpu    = "1"
            memory = "256Mi"
          }
        }
        startup_probe {
          period_seconds    = 2
          timeout_seconds   = 2
          failure_threshold = 30
          http_get {
            path = "/startup"
            port = local.proxy_http_port
          }
        }
      }
    }
  }
}

# gcloud run jobs execute members-import --region REGION --wait \
#   --args=--org,party-a,/imports/party-a.csv      (docs/deploy.md, "Onboard a tenant")
resource "google_cloud_run_v2_job" "members_import" {
  name                = "members-import"
  location            = var.region
  deletion_protection = false

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account       = google_service_account.runtime["members-import"].email
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"
      max_retries           = 0
      timeout               = "900s"

      vpc_access {
        egress = "PRIVATE_RANGES_ONLY"
        network_interfaces {
          network    = local.direct_vpc.network
          subnetwork = local.direct_vpc.subnetwork
        }
      }

      volumes {
        name = "imports"
        gcs {
          bucket    = google_storage_bucket.imports.name
          read_only = true
        }
      }

      containers {
        name       = "members-import"
        image      = local.image
        command    = ["/usr/local/bin/members-import"]
        depends_on = ["cloud-sql-proxy"]
        env {
          name  = "DATABASE_URL"
          value = local.database_urls["members-import"]
        }
        env {
          name  = "DATABASE_MAX_CONNECTIONS"
          value = tostring(local.db_pools["members-import"].pool)
        }
        env {
          name  = "PLATFORM_ORG"
          value = var.platform_org
        }
        env {
          name  = "CLOUD_SQL_PROXY_QUIT_URL"
          value = local.proxy_quit_url
        }
        volume_mounts {
          name       = "imports"
          mount_path = "/imports"
        }
        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }
      }

      containers {
        name  = "cloud-sql-proxy"
        image = var.cloud_sql_proxy_image
        args  = local.job_proxy_args
        resources {
          limits = {
            cpu    = "1"
            memory = "256Mi"
          }
        }
        startup_probe {
          period_seconds    = 2
          timeout_seconds   = 2
          failure_threshold = 30
          http_get {
            path = "/startup"
            port = local.proxy_http_port
          }
        }
      }
    }
  }
}
