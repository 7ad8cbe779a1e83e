resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "billingbudgets.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
  ])
  service = each.value
  # Turning an API off would take down whatever uses it; removing it from this list must not.
  disable_on_destroy = false
}

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption; the image holds no secret or key (Dockerfile), so a customer-managed key would add cost and a key to operate for nothing it protects.
  repository_id = "ekklesia"
  location      = var.region
  format        = "DOCKER"
  description   = "The ekklesia image (every service's binary); docs/deploy.md builds and pushes it."

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.apis]
}

# The private network Cloud SQL and the services meet on: Cloud SQL has no public address, the
# services reach it (and events-svc reaches ingest's internal service) through Direct VPC
# egress, which costs nothing beyond the traffic.
resource "google_compute_network" "main" {
  name                    = "ekklesia"
  auto_create_subnetworks = false
  depends_on              = [google_project_service.apis]
}

# Nothing needs to reach into this network (Cloud Run only sends from it; Cloud SQL answers on
# the peering): say so explicitly rather than relying on the implied rule.
resource "google_compute_firewall" "deny_ingress" {
  name      = "ekklesia-deny-all-ingress"
  network   = google_compute_network.main.id
  direction = "INGRESS"
  priority  = 65534
  deny {
    protocol = "all"
  }
  source_ranges = ["0.0.0.0/0"]
  log_config {
    metadata = "EXCLUDE_ALL_METADATA"
  }
}

resource "google_compute_subnetwork" "run" {
  #checkov:skip=CKV_GCP_26:VPC flow logs are billed per GB and would log every vote request's connection to Pub/Sub and the database; Cloud Run request logs and the alerts cover what operators need.
  name          = "ekklesia-run"
  region        = var.region
  network       = google_compute_network.main.id
  ip_cidr_range = "10.8.0.0/22"
  # Requests to *.run.app routed into the VPC count as internal (ingest's internal service).
  private_ip_google_access = true
}

resource "google_compute_global_address" "private_services" {
  name          = "ekklesia-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
  network       = google_compute_network.main.id
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.main.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
}

# The member registry exports the import job reads (personal data: kept one day).
resource "google_storage_bucket" "imports" {
  #checkov:skip=CKV_GCP_62:Access logs to another bucket would keep the names of every export; Data Access audit logs (google_project_iam_audit_config below) record who read them.
  #checkov:skip=CKV_GCP_78:No versioning on purpose: an export holds national ids and must be gone a day after the import, not kept as old versions.
  name                        = "${var.project_id}-ekklesia-imports"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# Who read a registry export, and who (or which service) read a key.
resource "google_project_iam_audit_config" "data_access" {
  for_each = toset(["storage.googleapis.com", "secretmanager.googleapis.com"])
  project  = var.project_id
  service  = each.value
  audit_log_config {
    log_type = "DATA_READ"
  }
}
