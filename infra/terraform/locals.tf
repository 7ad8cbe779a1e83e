locals {
  image = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/ekklesia${startswith(var.image_tag, "@") ? "" : ":"}${var.image_tag}"

  # Per-tenant variables are NAME__<TENANT> (shared::config::Env::list), one secret each.
  tenant_env_suffix = { for id in keys(var.tenants) : id => upper(replace(id, "-", "_")) }

  # Runtime identities: one service account per Cloud Run service or job, each mapped to the
  # database role the migrations grant it (null: no database login).
  runtimes = {
    ingest          = { description = "ingest (public): votes and receipts", db_role = "ekklesia_ingest" }
    ingest-internal = { description = "ingest (internal): the elections side's S2S API", db_role = "ekklesia_ingest" }
    worker          = { description = "worker: commits votes from Pub/Sub, seals elections", db_role = "ekklesia_worker" }
    events-svc      = { description = "events-svc: elections, voting tokens, queue flag", db_role = "ekklesia_events" }
    members-fn      = { description = "members-fn: login and session tokens", db_role = "ekklesia_members" }
    members-import  = { description = "members-import job: loads a member registry export", db_role = "ekklesia_members" }
    # The schema owner: runs the migrations, which create the roles above.
    migrate = { description = "migrate job: applies the SQL migrations", db_role = "cloudsqlsuperuser" }
  }

  # Database connections. Every pool is strict (DATABASE_MAX_CONNECTIONS, acquire timeout 2 s),
  # so the most a service can hold is pool x max instances; max_connections is their sum plus
  # what Cloud SQL and operators need, and each service's max instances is capped here, next to
  # its pool, so the two cannot drift apart (docs/deploy.md, "Database connections"):
  #
  #   ingest           2 x 100 = 200   (ledger flush + receipts/direct-mode votes per instance)
  #   ingest-internal  2 x   4 =   8
  #   worker           3 x   3 =   9   (WRITERS=2 batch writers + the progress/seal loop)
  #   events-svc       2 x  10 =  20
  #   members-fn       2 x  10 =  20
  #   migrate job      1 x   1 =   1
  #   members-import   3 x   1 =   3
  #   reserved                    13   (superuser_reserved_connections 3, operators' psql /
  #                                     queue-mode CLI / Cloud SQL Studio 10)
  #   max_connections           = 274
  db_pools = {
    ingest          = { pool = 2, max_instances = var.ingest_max_instances }
    ingest-internal = { pool = 2, max_instances = 4 }
    worker          = { pool = 3, max_instances = 3 }
    events-svc      = { pool = 2, max_instances = 10 }
    members-fn      = { pool = 2, max_instances = 10 }
    migrate         = { pool = 1, max_instances = 1 }
    members-import  = { pool = 3, max_instances = 1 }
  }
  db_reserved_connections = 13
  max_connections         = sum([for p in local.db_pools : p.pool * p.max_instances]) + local.db_reserved_connections

  # postgres://<IAM user>@127.0.0.1:5432/ekklesia: the Cloud SQL Auth Proxy sidecar listens on
  # loopback and logs in with the service account's token (automatic IAM database
  # authentication), so the URL holds no password and is not a secret. Plain TCP on loopback
  # only; the proxy speaks TLS to the instance.
  database_urls = {
    for name, r in local.runtimes :
    name => "postgres://${urlencode(google_sql_user.runtime[name].name)}@127.0.0.1:5432/${google_sql_database.main.name}?sslmode=disable"
  }

  proxy_http_port = 9801
  proxy_args = [
    "--private-ip",
    "--auto-iam-authn",
    "--port=5432",
    "--health-check",
    "--http-address=0.0.0.0",
    "--http-port=${local.proxy_http_port}",
    "--exit-zero-on-sigterm",
    "--structured-logs",
    google_sql_database_instance.main.connection_name,
  ]

  members_base_url  = coalesce(var.members_public_url, "https://members-fn-${data.google_project.this.number}.${var.region}.run.app")
  oidc_redirect_uri = "${local.members_base_url}/v1/auth/oidc/redirect"
}
