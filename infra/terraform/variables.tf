variable "project_id" {
  description = "The Google Cloud project everything is created in."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id (6-30 of a-z, 0-9, -)."
  }
}

variable "region" {
  description = "Region of every regional resource (Cloud Run, Cloud SQL, Artifact Registry, Scheduler). A Tier 1 region keeps Cloud Run at the prices docs/deploy.md uses."
  type        = string
  default     = "europe-west1"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a region name such as europe-west1."
  }
}

variable "image_tag" {
  description = "Tag (or @sha256:digest) of the ekklesia image in this project's Artifact Registry repository (docs/deploy.md, \"Build and push the image\")."
  type        = string
  validation {
    condition     = can(regex("^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$", var.image_tag))
    error_message = "image_tag must be a Docker tag or @sha256:<digest>."
  }
}

variable "tenants" {
  description = <<-EOT
    The organisations that hold elections, by tenant id, each with its voting-token public keys
    (kid:tenant:base64url-key,..., not a secret: `loadtest keys` prints them next to the seeds).
    Every tenant gets its own Secret Manager secrets for its S2S, token-signing and token-slot
    keys (values are added by hand, docs/deploy.md).
  EOT
  type = map(object({
    voting_token_public_keys = string
  }))
  validation {
    condition     = length(var.tenants) > 0 && alltrue([for id, t in var.tenants : can(regex("^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$", id))])
    error_message = "tenants needs at least one tenant; each id is 2-63 of a-z, 0-9, - (shared::domain::TenantId)."
  }
  validation {
    condition     = alltrue([for id, t in var.tenants : alltrue([for entry in split(",", t.voting_token_public_keys) : try(split(":", trimspace(entry))[1] == id, false)])])
    error_message = "Each entry of a tenant's voting_token_public_keys must be kid:<that tenant>:key."
  }
}

variable "platform_org" {
  description = "PLATFORM_ORG: the organisation whose ops members are platform operators (never a party's tenant id)."
  type        = string
  default     = "platform"
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$", var.platform_org))
    error_message = "platform_org must be a tenant id (2-63 of a-z, 0-9, -)."
  }
}

variable "oidc_issuer" {
  description = "OIDC_ISSUER: the identity provider members log in with (Kenni.is in production), without a trailing slash."
  type        = string
  validation {
    condition     = startswith(var.oidc_issuer, "https://") && !endswith(var.oidc_issuer, "/")
    error_message = "oidc_issuer must be an https URL without a trailing slash."
  }
}

variable "oidc_client_id" {
  description = "OIDC_CLIENT_ID: members-fn's client id at the provider (the client secret goes into Secret Manager)."
  type        = string
  validation {
    condition     = length(trimspace(var.oidc_client_id)) > 0
    error_message = "oidc_client_id must not be empty."
  }
}

variable "members_public_url" {
  description = "members-fn's public base URL as registered with the identity provider (OIDC_REDIRECT_URI is this + /v1/auth/oidc/redirect). Null: its deterministic run.app URL."
  type        = string
  default     = null
  validation {
    condition     = var.members_public_url == null || can(regex("^https://[^/]+$", var.members_public_url))
    error_message = "members_public_url must be https://host without a path or trailing slash."
  }
}

variable "db_tier" {
  description = "Cloud SQL machine tier outside large meetings."
  type        = string
  default     = "db-f1-micro"
  validation {
    condition     = can(regex("^db-(f1-micro|g1-small|custom-[0-9]+-[0-9]+|perf-optimized-N-[0-9]+)$", var.db_tier))
    error_message = "db_tier must be a Cloud SQL Enterprise tier such as db-f1-micro, db-g1-small or db-custom-1-3840."
  }
}

variable "db_tier_large" {
  description = "Cloud SQL tier from the day before a large meeting until an hour after it (Cloud Scheduler switches; each switch restarts the instance for a few minutes)."
  type        = string
  default     = "db-custom-1-3840"
  validation {
    condition     = can(regex("^db-(g1-small|custom-[0-9]+-[0-9]+)$", var.db_tier_large))
    error_message = "db_tier_large must be db-g1-small or a db-custom-CPU-MEMORY tier."
  }
}

variable "db_disk_size_gb" {
  description = "Cloud SQL SSD size in GB (grows automatically up to db_disk_autoresize_limit_gb)."
  type        = number
  default     = 10
  validation {
    condition     = var.db_disk_size_gb >= 10 && var.db_disk_size_gb <= 1000
    error_message = "db_disk_size_gb must be 10 to 1000."
  }
}

variable "db_disk_autoresize_limit_gb" {
  description = "Upper bound of the automatic disk growth, so a runaway table cannot grow the bill without limit."
  type        = number
  default     = 50
  validation {
    condition     = var.db_disk_autoresize_limit_gb >= 10
    error_message = "db_disk_autoresize_limit_gb must be at least 10."
  }
}

variable "deletion_protection" {
  description = "Refuse to destroy the database instance and the Cloud Run services (turn off only to tear a test project down)."
  type        = bool
  default     = true
}

variable "ingest_min_instances" {
  description = "ingest's minimum instances outside pre-warm windows (the scheduler sets it back to this after each meeting)."
  type        = number
  default     = 0
  validation {
    condition     = var.ingest_min_instances >= 0 && var.ingest_min_instances <= 5
    error_message = "ingest_min_instances must be 0 to 5 (pre-warming for meetings is done by the schedule)."
  }
}

variable "ingest_max_instances" {
  description = "ingest's maximum instances; the database's max_connections is derived from it (locals.tf)."
  type        = number
  default     = 100
  validation {
    condition     = var.ingest_max_instances >= 1 && var.ingest_max_instances <= 100
    error_message = "ingest_max_instances must be 1 to 100 (the max_connections arithmetic in locals.tf is sized for 100)."
  }
}

variable "meetings" {
  description = <<-EOT
    The meeting schedule. For each meeting, Cloud Scheduler pre-warms ingest (min instances
    prewarm_instances) ten minutes before starts_at and sets it back to ingest_min_instances at
    ends_at; a large meeting also gets the database tier db_tier_large from 24 hours before
    starts_at until an hour after ends_at. Times are RFC 3339 in UTC (2027-03-14T10:00:00Z). Cloud
    Scheduler has no year in its schedules: remove a meeting once it is over, or it fires again
    on the same date next year (a check warns about past meetings).
  EOT
  type = list(object({
    name              = string
    starts_at         = string
    ends_at           = string
    large             = optional(bool, false)
    prewarm_instances = optional(number, 10)
  }))
  default = []
  validation {
    condition     = alltrue([for m in var.meetings : can(regex("^[a-z][a-z0-9-]{0,30}$", m.name))])
    error_message = "Each meeting name must be 1-31 of a-z, 0-9, - starting with a letter (it names the scheduler jobs)."
  }
  validation {
    condition     = length(distinct([for m in var.meetings : m.name])) == length(var.meetings)
    error_message = "Meeting names must be unique."
  }
  validation {
    condition     = alltrue([for m in var.meetings : endswith(m.starts_at, "Z") && endswith(m.ends_at, "Z") && try(timecmp(m.starts_at, m.ends_at) < 0, false)])
    error_message = "Each meeting needs starts_at and ends_at in RFC 3339 UTC (ending in Z; the schedules are cron in UTC), starts_at before ends_at."
  }
  validation {
    condition     = alltrue([for m in var.meetings : m.prewarm_instances >= 10 && m.prewarm_instances <= 20])
    error_message = "prewarm_instances must be 10 to 20."
  }
}

variable "alert_email" {
  description = "Where alerts and budget notifications go (an email notification channel is created for it)."
  type        = string
  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be an email address."
  }
}

variable "billing_account_id" {
  description = "The billing account the project is charged to (XXXXXX-XXXXXX-XXXXXX), for the budget alert."
  type        = string
  validation {
    condition     = can(regex("^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$", var.billing_account_id))
    error_message = "billing_account_id must look like 012345-6789AB-CDEF01."
  }
}

variable "monthly_budget_usd" {
  description = "The monthly envelope; the budget alert notifies at 50 %, 90 % and 100 % of it, and when the forecast passes it."
  type        = number
  default     = 50
  validation {
    condition     = var.monthly_budget_usd >= 1
    error_message = "monthly_budget_usd must be at least 1."
  }
}

variable "cloud_sql_proxy_image" {
  description = "Cloud SQL Auth Proxy sidecar image (private IP, automatic IAM database authentication)."
  type        = string
  default     = "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.18.2"
}

variable "prometheus_sidecar_image" {
  description = "Managed Service for Prometheus sidecar: scrapes the worker's /metrics (port 8080) into Cloud Monitoring."
  type        = string
  default     = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0"
}

variable "migrations_applied" {
  description = "Set to true once the migrate job has run on this database: then each service's IAM login is granted the role the migrations created for it (docs/deploy.md, first deployment)."
  type        = bool
  default     = false
}

variable "secrets_revision" {
  description = "Bump after adding secret versions (key rotation): every service rolls a new revision, which reads the latest versions (docs/deploy.md, \"Rotating a key\")."
  type        = string
  default     = "1"
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{0,62}$", var.secrets_revision))
    error_message = "secrets_revision must be a label value (a-z, 0-9, _, -)."
  }
}

variable "soak" {
  description = <<-EOT
    The soak test the day before each large meeting: a Cloud Run job (`loadtest soak`, from the
    same image) against a staging deployment's public URLs, never this one's (it casts votes).
    Null: no soak job and no schedule for it.
  EOT
  type = object({
    ingest_url  = string
    events_url  = string
    members_url = string
    minutes     = optional(number, 30)
  })
  default = null
  validation {
    condition     = var.soak == null || alltrue([for u in [try(var.soak.ingest_url, ""), try(var.soak.events_url, ""), try(var.soak.members_url, "")] : can(regex("^https://[^/]+$", u))])
    error_message = "soak's URLs must each be https://host without a path or trailing slash."
  }
  validation {
    condition     = var.soak == null || try(var.soak.minutes >= 1 && var.soak.minutes <= 120, false)
    error_message = "soak.minutes must be 1 to 120."
  }
}
