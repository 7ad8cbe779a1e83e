# Dashboard, alerts, uptime checks and the budget. Queries are PromQL: Cloud Monitoring's own
# metrics (Cloud Run, Cloud SQL, Pub/Sub) under their PromQL names, and the worker's Prometheus
# metrics from its sidecar (worker_*).
locals {
  sql_database_id = "${var.project_id}:${google_sql_database_instance.main.name}"
  run_requests    = "run_googleapis_com:request_count{monitored_resource=\"cloud_run_revision\"}"
  vote_sub        = "subscription_id=\"${google_pubsub_subscription.worker.name}\""
  dead_sub        = "subscription_id=\"${google_pubsub_subscription.dead_letter.name}\""
  db_alert_at     = floor(local.max_connections * 0.8)

  public_services = {
    ingest     = google_cloud_run_v2_service.ingest.uri
    events-svc = google_cloud_run_v2_service.events_svc.uri
    members-fn = google_cloud_run_v2_service.members_fn.uri
  }
}

resource "google_monitoring_notification_channel" "email" {
  display_name = "ekklesia operators"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }
  depends_on = [google_project_service.apis]
}

# The alerts that also exist as Prometheus rules (infra/monitoring/rules/ekklesia.rules.yml) carry
# the rule's name, lowercased, in user_labels.prometheus_alert: infra/check compares each
# condition's thresholds, range windows and duration with the rule's, and the runbook link with
# the rule's annotation. Cloud Run's, Cloud SQL's and Pub/Sub's own metrics stand in where the
# rule reads a service's /metrics that only the worker's sidecar sends to Cloud Monitoring.
resource "google_monitoring_alert_policy" "ingest_5xx" {
  display_name          = "ingest: more than 5 % of requests fail (5xx) for 60 s"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]
  user_labels           = { prometheus_alert = "ekklesiahigh5xxrate" }
  conditions {
    display_name = "ingest 5xx ratio > 5 %"
    condition_prometheus_query_language {
      query               = "sum(rate(run_googleapis_com:request_count{monitored_resource=\"cloud_run_revision\",service_name=\"ingest\",response_code_class=\"5xx\"}[1m])) / sum(rate(run_googleapis_com:request_count{monitored_resource=\"cloud_run_revision\",service_name=\"ingest\"}[1m])) > 0.05"
      duration            = "60s"
      evaluation_interval = "30s"
    }
  }
  documentation {
    content   = "ingest answers 503 when Pub/Sub or the database fail it (fail fast, Retry-After). Check Pub/Sub and Cloud SQL first; switch the queue flag only knowing why. Runbook: docs/runbook.md#ekklesiahigh5xxrate"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "db_connections" {
  display_name          = "Database connections above 80 % for 60 s"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]
  user_labels           = { prometheus_alert = "ekklesiadbpoolsaturated" }
  conditions {
    display_name = "Cloud SQL backends > 80 % of max_connections (${local.max_connections})"
    condition_prometheus_query_language {
      query               = "sum(cloudsql_googleapis_com:database_postgresql_num_backends{monitored_resource=\"cloudsql_database\",database_id=\"${local.sql_database_id}\"}) / ${local.max_connections} > 0.8"
      duration            = "60s"
      evaluation_interval = "30s"
    }
  }
  conditions {
    display_name = "a worker instance uses > 80 % of its pool"
    condition_prometheus_query_language {
      query               = "max by (instance) (db_pool_in_use / db_pool_max_connections) > 0.8"
      duration            = "60s"
      evaluation_interval = "30s"
    }
  }
  documentation {
    content   = "max_connections is the sum of every service's pool x max instances (infra/terraform/locals.tf). Near it, a service scaled past its share or something else holds connections. Runbook: docs/runbook.md#ekklesiadbpoolsaturated"
    mime_type = "text/markdown"
  }
}

# One policy per meeting: during the pre-warm window ingest must have its pre-warmed instances.
resource "time_static" "meeting_start" {
  for_each = local.meetings
  rfc3339  = each.value.starts_at
}

resource "time_static" "meeting_end" {
  for_each = local.meetings
  rfc3339  = each.value.ends_at
}

resource "google_monitoring_alert_policy" "prewarm_missing" {
  for_each              = local.meetings
  display_name          = "ingest: fewer than ${each.value.prewarm_instances} instances during ${each.key}"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]
  conditions {
    display_name = "instances below the pre-warm during ${each.key}"
    condition_prometheus_query_language {
      # From 5 minutes before the start (the pre-warm fired 10 minutes before) to the end.
      query               = "((sum(run_googleapis_com:container_instance_count{monitored_resource=\"cloud_run_revision\",service_name=\"ingest\"}) or on() vector(0)) < ${each.value.prewarm_instances}) and on() (vector(time()) > ${time_static.meeting_start[each.key].unix - 300} < ${time_static.meeting_end[each.key].unix})"
      duration            = "120s"
      evaluation_interval = "60s"
    }
  }
  documentation {
    content   = "The prewarm-${each.key} scheduler job did not run or did not take: run it by hand (gcloud scheduler jobs run prewarm-${each.key}) or set ingest's minimum instances (docs/deploy.md)."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "dead_letter" {
  display_name          = "Votes were dead-lettered"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]
  user_labels           = { prometheus_alert = "ekklesiavotedeadlettered" }
  conditions {
    display_name = "Pub/Sub forwarded votes to the dead-letter topic"
    condition_prometheus_query_language {
      query               = "sum(increase(pubsub_googleapis_com:subscription_dead_letter_message_count{monitored_resource=\"pubsub_subscription\",${local.vote_sub}}[5m])) > 0"
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }
  conditions {
    display_name = "the worker received dead-lettered votes"
    condition_prometheus_query_language {
      query               = "sum(increase(worker_dead_letter_votes_total[5m])) > 0"
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }
  documentation {
    content   = "A vote failed 100 deliveries. The worker drains the dead-letter subscription too, so it is not lost; find out why it failed (worker logs, worker_poison_votes_total). Runbook: docs/runbook.md#ekklesiavotedeadlettered"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "oldest_unacked" {
  display_name          = "A vote has waited more than 30 s for its outcome"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]
  user_labels           = { prometheus_alert = "ekklesiavoteundecidedtoolong" }
  conditions {
    display_name = "oldest undecided vote > 30 s"
    condition_prometheus_query_language {
      query               = "max(votes_undecided_oldest_seconds) > 30"
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }
  conditions {
    display_name = "oldest unacked vote in Pub/Sub > 30 s"
    condition_prometheus_query_language {
      query               = "max(pubsub_googleapis_com:subscription_oldest_unacked_message_age{monitored_resource=\"pubsub_subscription\",${local.vote_sub}}) > 30"
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }
  documentation {
    content   = "The worker is behind or failing to commit: check the worker's logs and the database. Runbook: docs/runbook.md#ekklesiavoteundecidedtoolong"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "worker_stalled" {
  display_name          = "The worker commits nothing while votes wait"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]
  user_labels           = { prometheus_alert = "ekklesiaworkernotcommitting" }
  conditions {
    display_name = "votes undecided, none decided for 2 min"
    condition_prometheus_query_language {
      query               = "sum(votes_undecided) > 0 and sum(rate(worker_votes_total[2m])) == 0"
      duration            = "120s"
      evaluation_interval = "60s"
    }
  }
  conditions {
    # Also when the worker is gone altogether (then it reports neither metric).
    display_name = "Pub/Sub backlog growing, no vote decided for 2 min"
    condition_prometheus_query_language {
      query               = "((sum(rate(worker_votes_total[2m])) or on() vector(0)) == 0) and on() (deriv(sum(pubsub_googleapis_com:subscription_num_undelivered_messages{monitored_resource=\"pubsub_subscription\",${local.vote_sub}})[2m:1m]) > 0)"
      duration            = "120s"
      evaluation_interval = "60s"
    }
  }
  documentation {
    content   = "Is the worker running (min instances 1)? Can it reach the database (readyz) and Pub/Sub (its service account)? Runbook: docs/runbook.md#ekklesiaworkernotcommitting"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "votes_after_seal" {
  display_name          = "A vote arrived after its election was sealed (resealed)"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]
  user_labels           = { prometheus_alert = "ekklesiavoteafterseal" }
  conditions {
    display_name = "worker_votes_after_seal_total increased"
    condition_prometheus_query_language {
      query               = "sum(increase(worker_votes_after_seal_total[10m])) > 0"
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }
  documentation {
    content   = "An ingest instance died holding unwritten ledger entries; the election was sealed again with the vote (docs/design.md, \"Finality and draining\"). Runbook: docs/runbook.md#ekklesiavoteafterseal"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "undecodable" {
  display_name          = "Messages on the vote topic that the worker cannot read"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]
  user_labels           = { prometheus_alert = "ekklesiaundecodablemessages" }
  conditions {
    display_name = "worker_undecodable_total increased"
    condition_prometheus_query_language {
      query               = "sum by (kind) (increase(worker_undecodable_total[5m])) > 0"
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }
  documentation {
    content   = "A publisher without the vote key (forgery, misconfiguration), or a version or key rollout in progress. Runbook: docs/runbook.md#ekklesiaundecodablemessages"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "results_not_final" {
  display_name          = "An election closed more than 10 minutes ago is not sealed"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]
  user_labels           = { prometheus_alert = "ekklesiaresultsnotfinal" }
  conditions {
    display_name = "oldest election awaiting its seal > 600 s"
    condition_prometheus_query_language {
      query               = "elections_awaiting_seal_oldest_seconds > 600"
      duration            = "300s"
      evaluation_interval = "60s"
    }
  }
  documentation {
    content   = "Votes still undecided, a live ingest that cannot write its ledger, or a worker without the vote key. Runbook: docs/runbook.md#ekklesiaresultsnotfinal"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_uptime_check_config" "healthz" {
  for_each     = local.public_services
  display_name = "${each.key} /healthz"
  timeout      = "10s"
  period       = "60s"

  http_check {
    path         = "/healthz"
    port         = 443
    use_ssl      = true
    validate_ssl = true
  }

  monitored_resource {
    type = "uptime_url"
    labels = {
      project_id = var.project_id
      host       = trimprefix(each.value, "https://")
    }
  }
}

# Prometheus's EkklesiaServiceDown (up == 0 for 1 min) as uptime checks: every public
# service's /healthz, checked each minute from several regions; down when no region passes.
resource "google_monitoring_alert_policy" "uptime" {
  display_name          = "A public service fails its /healthz uptime check"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]
  user_labels           = { prometheus_alert = "ekklesiaservicedown" }
  conditions {
    display_name = "/healthz failing from every checker region"
    condition_prometheus_query_language {
      query               = "max by (check_id) (monitoring_googleapis_com:uptime_check_check_passed{monitored_resource=\"uptime_url\",project_id=\"${var.project_id}\"}) == 0"
      duration            = "60s"
      evaluation_interval = "60s"
    }
  }
  documentation {
    content   = "An instance crashed or is unreachable (or the service scaled to zero and cannot start: check its revision's logs). Runbook: docs/runbook.md#ekklesiaservicedown"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_dashboard" "main" {
  dashboard_json = jsonencode({
    displayName = "Ekklesia"
    mosaicLayout = {
      columns = 48
      tiles = [for i, w in [
        { title = "Requests per second by service", q = ["sum by (service_name) (rate(${local.run_requests}[1m]))"] },
        { title = "4xx and 5xx per second by service", q = ["sum by (service_name, response_code_class) (rate(run_googleapis_com:request_count{monitored_resource=\"cloud_run_revision\",response_code_class=~\"4xx|5xx\"}[1m]))"] },
        { title = "p95 latency (ms) by service", q = ["histogram_quantile(0.95, sum by (le, service_name) (rate(run_googleapis_com:request_latencies_bucket{monitored_resource=\"cloud_run_revision\"}[5m])))"] },
        { title = "Instances by service", q = ["sum by (service_name) (run_googleapis_com:container_instance_count{monitored_resource=\"cloud_run_revision\"})"] },
        { title = "Database connections (max_connections ${local.max_connections})", q = ["sum(cloudsql_googleapis_com:database_postgresql_num_backends{monitored_resource=\"cloudsql_database\",database_id=\"${local.sql_database_id}\"})"] },
        { title = "Lock wait time (µs per second)", q = ["sum(rate(cloudsql_googleapis_com:database_postgresql_insights_aggregate_lock_time{monitored_resource=\"cloudsql_instance_database\"}[5m]))"] },
        { title = "Pub/Sub backlog (undelivered votes)", q = ["sum(pubsub_googleapis_com:subscription_num_undelivered_messages{monitored_resource=\"pubsub_subscription\",${local.vote_sub}})", "sum(pubsub_googleapis_com:subscription_num_undelivered_messages{monitored_resource=\"pubsub_subscription\",${local.dead_sub}})"] },
        { title = "Oldest unacked vote (s)", q = ["max(pubsub_googleapis_com:subscription_oldest_unacked_message_age{monitored_resource=\"pubsub_subscription\",${local.vote_sub}})", "max(pubsub_googleapis_com:subscription_oldest_unacked_message_age{monitored_resource=\"pubsub_subscription\",${local.dead_sub}})"] },
        { title = "Dead-lettered votes", q = ["sum(increase(pubsub_googleapis_com:subscription_dead_letter_message_count{monitored_resource=\"pubsub_subscription\",${local.vote_sub}}[5m]))", "sum(increase(worker_dead_letter_votes_total[5m]))"] },
        { title = "Worker commit lag, accept to commit (p95, s)", q = ["histogram_quantile(0.95, sum by (le) (rate(worker_queue_lag_seconds_bucket[5m])))", "histogram_quantile(0.95, sum by (le) (rate(worker_commit_seconds_bucket[5m])))"] },
        { title = "Votes committed per second by outcome", q = ["sum by (outcome) (rate(worker_votes_total[1m]))"] },
        { title = "Accepted votes without an outcome (oldest, s)", q = ["max(votes_undecided_oldest_seconds)"] },
        ] : {
        xPos   = (i % 2) * 24
        yPos   = floor(i / 2) * 16
        width  = 24
        height = 16
        widget = {
          title = w.title
          xyChart = {
            dataSets = [for q in w.q : {
              plotType        = "LINE"
              timeSeriesQuery = { prometheusQuery = q }
            }]
          }
        }
      }]
    }
  })
  depends_on = [google_project_service.apis]
}

resource "google_billing_budget" "envelope" {
  billing_account = var.billing_account_id
  display_name    = "ekklesia monthly envelope"

  budget_filter {
    projects = ["projects/${data.google_project.this.number}"]
  }

  amount {
    specified_amount {
      currency_code = "USD"
      units         = tostring(var.monthly_budget_usd)
    }
  }

  threshold_rules {
    threshold_percent = 0.5
  }
  threshold_rules {
    threshold_percent = 0.9
  }
  threshold_rules {
    threshold_percent = 1.0
  }
  threshold_rules {
    threshold_percent = 1.0
    spend_basis       = "FORECASTED_SPEND"
  }

  all_updates_rule {
    monitoring_notification_channels = [google_monitoring_notification_channel.email.id]
    disable_default_iam_recipients   = false
  }

  depends_on = [google_project_service.apis]
}
