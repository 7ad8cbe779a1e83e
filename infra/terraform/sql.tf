resource "google_sql_database_instance" "main" {
  #checkov:skip=CKV_GCP_79:PostgreSQL 15 on purpose: the migrations and the whole test suite run against 15 (infra/local); a major upgrade is its own change.
  #checkov:skip=CKV_GCP_108:log_connections already records each client's address; log_hostname would add a reverse DNS lookup to every new connection, slowing ingest's scale-out for nothing the address does not tell.
  #checkov:skip=CKV2_GCP_13:log_duration logs every statement (hundreds a second in a vote burst): more log volume and cost than the database itself; Query Insights keeps per-query timings instead.
  name                = "ekklesia"
  database_version    = "POSTGRES_15"
  region              = var.region
  deletion_protection = var.deletion_protection

  settings {
    tier                        = var.db_tier
    edition                     = "ENTERPRISE"
    availability_type           = "ZONAL"
    disk_type                   = "PD_SSD"
    disk_size                   = var.db_disk_size_gb
    disk_autoresize             = true
    disk_autoresize_limit       = var.db_disk_autoresize_limit_gb
    deletion_protection_enabled = var.deletion_protection

    ip_configuration {
      ipv4_enabled    = false
      private_network = google_compute_network.main.id
      # Only the Cloud SQL Auth Proxy (client certificates it fetches with IAM) can connect.
      ssl_mode = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
    }

    # Seven days of backups and WAL: the longest a vote survives in Pub/Sub too, and short on
    # purpose (docs/design.md, "What each mechanism assumes of production").
    backup_configuration {
      enabled                        = true
      start_time                     = "02:00"
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = 7
      backup_retention_settings {
        retained_backups = 7
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7
      hour         = 3
      update_track = "stable"
    }

    # Lock waits on the dashboard come from Query Insights (free on Enterprise); client
    # addresses are not recorded.
    insights_config {
      query_insights_enabled  = true
      query_string_length     = 1024
      record_application_tags = false
      record_client_address   = false
    }

    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }
    database_flags {
      name  = "max_connections"
      value = tostring(local.max_connections)
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      # Statements are never logged with their parameters (ballots, tokens' hashes).
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "pgaudit.log"
      value = "ddl,role"
    }
  }

  lifecycle {
    # Cloud Scheduler raises the tier before large meetings and lowers it after; an apply in
    # between must not undo that (change the base tier with gcloud, docs/deploy.md).
    ignore_changes = [settings[0].tier]
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "main" {
  name     = "ekklesia"
  instance = google_sql_database_instance.main.name
}

# One IAM login per runtime service account (name: its email without .gserviceaccount.com),
# mapped to the role the migrations create for it. Those roles exist only once the migrations
# ran, so the mapping is applied in a second apply with migrations_applied = true
# (docs/deploy.md); the migrate job's own login is the schema owner from the start.
resource "google_sql_user" "runtime" {
  for_each = local.runtimes
  name     = trimsuffix(google_service_account.runtime[each.key].email, ".gserviceaccount.com")
  instance = google_sql_database_instance.main.name
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
  database_roles = (
    each.key == "migrate" ? [each.value.db_role] :
    var.migrations_applied ? [each.value.db_role] : []
  )
}
