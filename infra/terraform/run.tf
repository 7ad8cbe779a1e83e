# The Cloud Run services, all from the one image (Dockerfile), each with its own service
# account, the Cloud SQL Auth Proxy as a sidecar (the database is reached on 127.0.0.1:5432
# with the account's IAM login), probes on /readyz (startup: the database answers) and
# /healthz (liveness). Every variable each service's configuration requires is set here, as a
# value or from Secret Manager; infra/check checks that against the code.

locals {
  direct_vpc = {
    network    = google_compute_network.main.id
    subnetwork = google_compute_subnetwork.run.id
  }
}

# --- ingest (public): votes, receipts ----------------------------------------------------------
resource "google_cloud_run_v2_service" "ingest" {
  # Public on purpose: voters' browsers call it; every vote carries a signed voting token and every request is rate-limited (docs/design.md, "The edge").
  name                = "ingest"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection
  # Anyone may call it: voters authenticate with voting tokens, not Google identities.
  invoker_iam_disabled = true

  # Cloud Scheduler pre-warms by changing this; an apply must not undo a pre-warm.
  scaling {
    min_instance_count = var.ingest_min_instances
  }

  template {
    service_account = google_service_account.runtime["ingest"].email
    # A new value rolls a new revision, which reads the secrets' latest versions.
    labels = { secrets-revision = var.secrets_revision }

    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    max_instance_request_concurrency = 50
    timeout                          = "30s"

    scaling {
      max_instance_count = local.db_pools["ingest"].max_instances
    }

    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = local.direct_vpc.network
        subnetwork = local.direct_vpc.subnetwork
      }
    }

    containers {
      name       = "ingest"
      image      = local.image
      command    = ["/usr/local/bin/ingest"]
      depends_on = ["cloud-sql-proxy"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      env {
        name  = "INGEST_SERVE"
        value = "public"
      }
      env {
        # Cloud Run's front end appends the client's address to X-Forwarded-For.
        name  = "TRUSTED_PROXY_HOPS"
        value = "1"
      }
      env {
        name  = "DATABASE_URL"
        value = local.database_urls["ingest"]
      }
      env {
        name  = "DATABASE_MAX_CONNECTIONS"
        value = tostring(local.db_pools["ingest"].pool)
      }
      env {
        name  = "PUBSUB_PROJECT_ID"
        value = var.project_id
      }
      env {
        name  = "PUBSUB_TOPIC"
        value = google_pubsub_topic.votes.name
      }
      env {
        name = "VOTE_KEYS"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.vote_keys.secret_id
            version = "latest"
          }
        }
      }
      env {
        name = "RECEIPT_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.receipt_key.secret_id
            version = "latest"
          }
        }
      }
      env {
        name = "AUDIT_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.audit_key.secret_id
            version = "latest"
          }
        }
      }
      dynamic "env" {
        for_each = var.tenants
        content {
          name  = "VOTING_TOKEN_PUBLIC_KEYS__${local.tenant_env_suffix[env.key]}"
          value = env.value.voting_token_public_keys
        }
      }

      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = 5
        timeout_seconds       = 4
        failure_threshold     = 24
        http_get {
          path = "/readyz"
          port = 8080
        }
      }
      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }

    containers {
      name  = "cloud-sql-proxy"
      image = var.cloud_sql_proxy_image
      args  = local.proxy_args
      resources {
        limits = {
          cpu    = "1"
          memory = "256Mi"
        }
        cpu_idle = true
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

  lifecycle {
    ignore_changes = [scaling[0].min_instance_count]
  }

  depends_on = [google_secret_manager_secret_iam_member.vote_keys, google_secret_manager_secret_iam_member.receipt_key, google_secret_manager_secret_iam_member.audit_key]
}

# --- ingest (internal): the elections side's S2S API and /metrics -------------------------------
resource "google_cloud_run_v2_service" "ingest_internal" {
  # Reachable only from the VPC (internal ingress); every call is signed with the tenant's S2S key (HMAC, nonce, timestamp), which events-svc sends and Google identity tokens would only duplicate.
  name                 = "ingest-internal"
  location             = var.region
  ingress              = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection  = var.deletion_protection
  invoker_iam_disabled = true

  template {
    service_account = google_service_account.runtime["ingest-internal"].email
    # A new value rolls a new revision, which reads the secrets' latest versions.
    labels = { secrets-revision = var.secrets_revision }

    execution_environment = "EXECUTION_ENVIRONMENT_GEN2"
    timeout               = "30s"

    scaling {
      max_instance_count = local.db_pools["ingest-internal"].max_instances
    }

    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = local.direct_vpc.network
        subnetwork = local.direct_vpc.subnetwork
      }
    }

    containers {
      name       = "ingest-internal"
      image      = local.image
      command    = ["/usr/local/bin/ingest"]
      depends_on = ["cloud-sql-proxy"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle = true
      }

      env {
        name  = "INGEST_SERVE"
        value = "internal"
      }
      env {
        name  = "DATABASE_URL"
        value = local.database_urls["ingest-internal"]
      }
      env {
        name  = "DATABASE_MAX_CONNECTIONS"
        value = tostring(local.db_pools["ingest-internal"].pool)
      }
      env {
        name  = "PUBSUB_PROJECT_ID"
        value = var.project_id
      }
      env {
        name  = "PUBSUB_TOPIC"
        value = google_pubsub_topic.votes.name
      }
      env {
        name = "VOTE_KEYS"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.vote_keys.secret_id
            version = "latest"
          }
        }
      }
      env {
        name = "RECEIPT_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.receipt_key.secret_id
            version = "latest"
          }
        }
      }
      env {
        name = "AUDIT_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.audit_key.secret_id
            version = "latest"
          }
        }
      }
      dynamic "env" {
        for_each = var.tenants
        content {
          name  = "VOTING_TOKEN_PUBLIC_KEYS__${local.tenant_env_suffix[env.key]}"
          value = env.value.voting_token_public_keys
        }
      }
      dynamic "env" {
        for_each = google_secret_manager_secret.s2s_keys
        content {
          name = "S2S_KEYS__${local.tenant_env_suffix[env.key]}"
          value_source {
            secret_key_ref {
              secret  = env.value.secret_id
              version = "latest"
            }
          }
        }
      }

      startup_probe {
        period_seconds    = 5
        timeout_seconds   = 4
        failure_threshold = 24
        http_get {
          path = "/readyz"
          port = 8080
        }
      }
      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }

    containers {
      name  = "cloud-sql-proxy"
      image = var.cloud_sql_proxy_image
      args  = local.proxy_args
      resources {
        limits = {
          cpu    = "1"
          memory = "256Mi"
        }
        cpu_idle = true
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

  depends_on = [google_secret_manager_secret_iam_member.s2s_keys_ingest, google_secret_manager_secret_iam_member.vote_keys, google_secret_manager_secret_iam_member.receipt_key, google_secret_manager_secret_iam_member.audit_key]
}

# --- worker: drains both subscriptions, seals elections ----------------------------------------
resource "google_cloud_run_v2_service" "worker" {
  name                = "worker"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = var.deletion_protection

  template {
    service_account = google_service_account.runtime["worker"].email
    # A new value rolls a new revision, which reads the secrets' latest versions.
    labels = { secrets-revision = var.secrets_revision }

    execution_environment = "EXECUTION_ENVIRONMENT_GEN2"

    # It holds StreamingPull streams: always one instance, CPU always allocated.
    scaling {
      min_instance_count = 1
      max_instance_count = local.db_pools["worker"].max_instances
    }

    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = local.direct_vpc.network
        subnetwork = local.direct_vpc.subnetwork
      }
    }

    containers {
      name       = "worker"
      image      = local.image
      command    = ["/usr/local/bin/worker"]
      depends_on = ["cloud-sql-proxy"]

      ports {
        container_port = 8080
      }

      # Instance-based billing needs at least 1 vCPU per instance in all; the sidecars share it.
      resources {
        limits = {
          cpu    = "0.5"
          memory = "512Mi"
        }
        cpu_idle = false
      }

      env {
        name  = "DATABASE_URL"
        value = local.database_urls["worker"]
      }
      env {
        name  = "DATABASE_MAX_CONNECTIONS"
        value = tostring(local.db_pools["worker"].pool)
      }
      env {
        name  = "WRITERS"
        value = "2"
      }
      env {
        name  = "PUBSUB_PROJECT_ID"
        value = var.project_id
      }
      env {
        name  = "PUBSUB_TOPIC"
        value = google_pubsub_topic.votes.name
      }
      env {
        name  = "PUBSUB_SUBSCRIPTION"
        value = google_pubsub_subscription.worker.name
      }
      env {
        name  = "PUBSUB_DEAD_LETTER_SUBSCRIPTION"
        value = google_pubsub_subscription.dead_letter.name
      }
      env {
        name = "VOTE_KEYS"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.vote_keys.secret_id
            version = "latest"
          }
        }
      }

      startup_probe {
        period_seconds    = 5
        timeout_seconds   = 4
        failure_threshold = 24
        http_get {
          path = "/readyz"
          port = 8080
        }
      }
      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }

    containers {
      name  = "cloud-sql-proxy"
      image = var.cloud_sql_proxy_image
      args  = local.proxy_args
      resources {
        limits = {
          cpu    = "0.25"
          memory = "128Mi"
        }
        cpu_idle = false
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

    # Scrapes the worker's /metrics on port 8080 (its default) into Managed Service for
    # Prometheus: commit lag, dead-lettered votes, votes after a seal.
    containers {
      name       = "prometheus"
      image      = var.prometheus_sidecar_image
      depends_on = ["worker"]
      resources {
        limits = {
          cpu    = "0.25"
          memory = "128Mi"
        }
        cpu_idle = false
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.vote_keys]
}

# --- events-svc: elections, voting tokens, queue flag -------------------------------------------
resource "google_cloud_run_v2_service" "events_svc" {
  # Public on purpose: members' and admins' browsers call it with session tokens (EdDSA, verified against members-fn's keys).
  name                 = "events-svc"
  location             = var.region
  ingress              = "INGRESS_TRAFFIC_ALL"
  deletion_protection  = var.deletion_protection
  invoker_iam_disabled = true

  template {
    service_account = google_service_account.runtime["events-svc"].email
    # A new value rolls a new revision, which reads the secrets' latest versions.
    labels = { secrets-revision = var.secrets_revision }

    execution_environment = "EXECUTION_ENVIRONMENT_GEN2"
    timeout               = "30s"

    scaling {
      max_instance_count = local.db_pools["events-svc"].max_instances
    }

    # All traffic through the VPC: ingest's internal service accepts only requests from it
    # (Private Google Access on the subnet), and events-svc calls nothing on the internet.
    vpc_access {
      egress = "ALL_TRAFFIC"
      network_interfaces {
        network    = local.direct_vpc.network
        subnetwork = local.direct_vpc.subnetwork
      }
    }

    containers {
      name       = "events-svc"
      image      = local.image
      command    = ["/usr/local/bin/events-svc"]
      depends_on = ["cloud-sql-proxy"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      env {
        name  = "DATABASE_URL"
        value = local.database_urls["events-svc"]
      }
      env {
        name  = "DATABASE_MAX_CONNECTIONS"
        value = tostring(local.db_pools["events-svc"].pool)
      }
      env {
        name  = "ELECTIONS_URL"
        value = google_cloud_run_v2_service.ingest_internal.uri
      }
      env {
        name  = "SESSION_JWKS_URL"
        value = "${google_cloud_run_v2_service.members_fn.uri}/.well-known/jwks.json"
      }
      env {
        name  = "PLATFORM_ORG"
        value = var.platform_org
      }
      dynamic "env" {
        for_each = google_secret_manager_secret.s2s_keys
        content {
          name = "S2S_KEYS__${local.tenant_env_suffix[env.key]}"
          value_source {
            secret_key_ref {
              secret  = env.value.secret_id
              version = "latest"
            }
          }
        }
      }
      dynamic "env" {
        for_each = google_secret_manager_secret.voting_token_signing_keys
        content {
          name = "VOTING_TOKEN_SIGNING_KEYS__${local.tenant_env_suffix[env.key]}"
          value_source {
            secret_key_ref {
              secret  = env.value.secret_id
              version = "latest"
            }
          }
        }
      }
      dynamic "env" {
        for_each = google_secret_manager_secret.token_slot_keys
        content {
          name = "TOKEN_SLOT_KEYS__${local.tenant_env_suffix[env.key]}"
          value_source {
            secret_key_ref {
              secret  = env.value.secret_id
              version = "latest"
            }
          }
        }
      }

      env {
        name = "AUDIT_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.audit_key.secret_id
            version = "latest"
          }
        }
      }

      startup_probe {
        period_seconds    = 5
        timeout_seconds   = 4
        failure_threshold = 24
        http_get {
          path = "/readyz"
          port = 8080
        }
      }
      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }

    containers {
      name  = "cloud-sql-proxy"
      image = var.cloud_sql_proxy_image
      args  = local.proxy_args
      resources {
        limits = {
          cpu    = "1"
          memory = "256Mi"
        }
        cpu_idle = true
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

  depends_on = [
    google_secret_manager_secret_iam_member.s2s_keys_events,
    google_secret_manager_secret_iam_member.voting_token_signing_keys,
    google_secret_manager_secret_iam_member.token_slot_keys,
    google_secret_manager_secret_iam_member.audit_key,
  ]
}

# --- members-fn: login, session tokens and their keys --------------------------------------------
resource "google_cloud_run_v2_service" "members_fn" {
  # Public on purpose: members log in from their browsers through the identity provider (OIDC with PKCE, bound to the browser).
  name                 = "members-fn"
  location             = var.region
  ingress              = "INGRESS_TRAFFIC_ALL"
  deletion_protection  = var.deletion_protection
  invoker_iam_disabled = true

  template {
    service_account = google_service_account.runtime["members-fn"].email
    # A new value rolls a new revision, which reads the secrets' latest versions.
    labels = { secrets-revision = var.secrets_revision }

    execution_environment = "EXECUTION_ENVIRONMENT_GEN2"
    timeout               = "30s"

    scaling {
      max_instance_count = local.db_pools["members-fn"].max_instances
    }

    # Private ranges only: the identity provider is on the internet.
    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = local.direct_vpc.network
        subnetwork = local.direct_vpc.subnetwork
      }
    }

    containers {
      name       = "members-fn"
      image      = local.image
      command    = ["/usr/local/bin/members-fn"]
      depends_on = ["cloud-sql-proxy"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      env {
        name  = "EKKLESIA_PROFILE"
        value = "production"
      }
      env {
        name  = "DATABASE_URL"
        value = local.database_urls["members-fn"]
      }
      env {
        name  = "DATABASE_MAX_CONNECTIONS"
        value = tostring(local.db_pools["members-fn"].pool)
      }
      env {
        name  = "OIDC_ISSUER"
        value = var.oidc_issuer
      }
      env {
        name  = "OIDC_CLIENT_ID"
        value = var.oidc_client_id
      }
      env {
        name  = "OIDC_REDIRECT_URI"
        value = local.oidc_redirect_uri
      }
      env {
        name = "OIDC_CLIENT_SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.oidc_client_secret.secret_id
            version = "latest"
          }
        }
      }
      env {
        name = "SESSION_SIGNING_KEYS"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.session_signing_keys.secret_id
            version = "latest"
          }
        }
      }

      startup_probe {
        period_seconds    = 5
        timeout_seconds   = 4
        failure_threshold = 24
        http_get {
          path = "/readyz"
          port = 8080
        }
      }
      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }

    containers {
      name  = "cloud-sql-proxy"
      image = var.cloud_sql_proxy_image
      args  = local.proxy_args
      resources {
        limits = {
          cpu    = "1"
          memory = "256Mi"
        }
        cpu_idle = true
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

  depends_on = [
    google_secret_manager_secret_iam_member.session_signing_keys,
    google_secret_manager_secret_iam_member.oidc_client_secret,
  ]
}
