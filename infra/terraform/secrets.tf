# Every secret the services read, each readable only by the services that need it. Terraform
# creates the secrets, never their values: versions are added by hand (docs/deploy.md), so no
# key is ever in Terraform state. Keys that belong to one tenant are one secret per tenant,
# read as NAME__<TENANT> (shared::config::Env::list), so onboarding or rotating one tenant never
# shows or touches another's.

resource "google_secret_manager_secret" "vote_keys" {
  secret_id = "vote-keys"
  labels    = { ekklesia = "vote-keys" }
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "receipt_key" {
  secret_id = "receipt-key"
  labels    = { ekklesia = "receipt-key" }
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

# The audit chains' HMAC key (shared::audit): the services that append entries hold it, and
# whoever runs `audit verify`; never the database.
resource "google_secret_manager_secret" "audit_key" {
  secret_id = "audit-key"
  labels    = { ekklesia = "audit-key" }
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "session_signing_keys" {
  secret_id = "session-signing-keys"
  labels    = { ekklesia = "session-signing-keys" }
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "oidc_client_secret" {
  secret_id = "oidc-client-secret"
  labels    = { ekklesia = "oidc-client-secret" }
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "s2s_keys" {
  for_each  = var.tenants
  secret_id = "s2s-keys-${each.key}"
  labels    = { ekklesia = "s2s-keys", tenant = each.key }
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "voting_token_signing_keys" {
  for_each  = var.tenants
  secret_id = "voting-token-signing-keys-${each.key}"
  labels    = { ekklesia = "voting-token-signing-keys", tenant = each.key }
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "token_slot_keys" {
  for_each  = var.tenants
  secret_id = "token-slot-keys-${each.key}"
  labels    = { ekklesia = "token-slot-keys", tenant = each.key }
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

# Who reads what (docs/deploy.md, "Secrets"). ingest's public service needs AUDIT_KEY, and its
# internal service VOTE_KEYS and RECEIPT_KEY, only because their configuration requires them.

resource "google_secret_manager_secret_iam_member" "vote_keys" {
  for_each  = toset(["ingest", "ingest-internal", "worker"])
  secret_id = google_secret_manager_secret.vote_keys.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime[each.key].member
}

resource "google_secret_manager_secret_iam_member" "receipt_key" {
  for_each  = toset(["ingest", "ingest-internal"])
  secret_id = google_secret_manager_secret.receipt_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime[each.key].member
}

resource "google_secret_manager_secret_iam_member" "audit_key" {
  for_each  = toset(["ingest", "ingest-internal", "events-svc"])
  secret_id = google_secret_manager_secret.audit_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime[each.key].member
}

resource "google_secret_manager_secret_iam_member" "session_signing_keys" {
  secret_id = google_secret_manager_secret.session_signing_keys.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime["members-fn"].member
}

resource "google_secret_manager_secret_iam_member" "oidc_client_secret" {
  secret_id = google_secret_manager_secret.oidc_client_secret.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime["members-fn"].member
}

resource "google_secret_manager_secret_iam_member" "s2s_keys_ingest" {
  for_each  = google_secret_manager_secret.s2s_keys
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime["ingest-internal"].member
}

resource "google_secret_manager_secret_iam_member" "s2s_keys_events" {
  for_each  = google_secret_manager_secret.s2s_keys
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime["events-svc"].member
}

resource "google_secret_manager_secret_iam_member" "voting_token_signing_keys" {
  for_each  = google_secret_manager_secret.voting_token_signing_keys
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime["events-svc"].member
}

resource "google_secret_manager_secret_iam_member" "token_slot_keys" {
  for_each  = google_secret_manager_secret.token_slot_keys
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime["events-svc"].member
}
