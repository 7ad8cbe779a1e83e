output "ingest_url" {
  description = "The vote path (public): POST /v1/ballots, receipts."
  value       = google_cloud_run_v2_service.ingest.uri
}

output "ingest_internal_url" {
  description = "The elections side's S2S API (internal ingress; events-svc's ELECTIONS_URL)."
  value       = google_cloud_run_v2_service.ingest_internal.uri
}

output "events_svc_url" {
  description = "Elections, voting tokens, the queue flag (public)."
  value       = google_cloud_run_v2_service.events_svc.uri
}

output "members_fn_url" {
  description = "Login and session keys (public)."
  value       = google_cloud_run_v2_service.members_fn.uri
}

output "oidc_redirect_uri" {
  description = "Register this redirect URI with the identity provider."
  value       = local.oidc_redirect_uri
}

output "image_repository" {
  description = "Push the image here (docs/deploy.md): <repository>/ekklesia:<tag>."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "sql_instance_connection_name" {
  description = "For the Cloud SQL Auth Proxy on an operator's machine."
  value       = google_sql_database_instance.main.connection_name
}

output "max_connections" {
  description = "The database's max_connections: every service's pool x max instances, plus reserve (locals.tf)."
  value       = local.max_connections
}

output "imports_bucket" {
  description = "Upload a member registry export here before running the members-import job (deleted after a day)."
  value       = google_storage_bucket.imports.name
}

output "secrets_to_fill" {
  description = "Secret Manager secrets that need a first version before the services start (docs/deploy.md)."
  value = concat(
    [
      google_secret_manager_secret.vote_keys.secret_id,
      google_secret_manager_secret.receipt_key.secret_id,
      google_secret_manager_secret.session_signing_keys.secret_id,
      google_secret_manager_secret.oidc_client_secret.secret_id,
    ],
    [for s in google_secret_manager_secret.s2s_keys : s.secret_id],
    [for s in google_secret_manager_secret.voting_token_signing_keys : s.secret_id],
    [for s in google_secret_manager_secret.token_slot_keys : s.secret_id],
  )
}

output "database_logins" {
  description = "Each runtime's IAM database login and the role it is mapped to once migrations_applied = true."
  value       = { for name, r in local.runtimes : google_sql_user.runtime[name].name => r.db_role }
}
