#!/usr/bin/env bash
# Run the whole stack locally and show it working.
#
#   infra/local/run.sh [--monitoring]
#
# With --monitoring it also starts Prometheus (Debian's package, installed if missing) on
# http://127.0.0.1:9099, scraping every service with the alert rules of infra/monitoring, so a
# meeting can be rehearsed with real graphs.
#
# Brings up PostgreSQL, the Pub/Sub emulator and a local OIDC provider, applies the
# migrations, builds and starts every service:
#   members-fn  http://127.0.0.1:8082  login (OIDC with PKCE), session keys
#   events-svc  http://127.0.0.1:8081  elections, voting tokens, results, queue flag
#   ingest      http://127.0.0.1:8080  the vote path
#   worker      http://127.0.0.1:9090  metrics/health of the queue consumer
# loads a demo membership export into the registry, then walks the whole journey twice (queue
# mode, then direct mode): members log in, get a voting token, vote, the admin closes the
# election and the final results are printed. The services keep running afterwards; stop
# everything with infra/local/down.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
monitoring=false
[[ ${1:-} == --monitoring ]] && monitoring=true
# The stack up to the demo registries (shared with schemathesis.sh).
# shellcheck source=services.sh
source "$here/services.sh"
if $monitoring; then
  "$here/monitoring-check.sh" >/dev/null
  mkdir -p "$EKKLESIA_STATE_DIR/prometheus"
  nohup prometheus --config.file="$here/../monitoring/prometheus.yml" \
    --web.listen-address=127.0.0.1:9099 --storage.tsdb.path="$EKKLESIA_STATE_DIR/prometheus" \
    >"$EKKLESIA_STATE_DIR/prometheus.log" 2>&1 &
  echo $! >"$EKKLESIA_STATE_DIR/prometheus.pid"
  echo "Prometheus http://127.0.0.1:9099 (alerts: /alerts; every service scraped every 5 s)"
fi
echo
echo "== the journey"
"$bin/loadtest" journey --voters 5
echo
echo "The stack keeps running. Logs: $EKKLESIA_STATE_DIR/{members-fn,events-svc,ingest,worker}.log"
echo "Queue flag: PUT $EVENTS_URL/v1/ops/queue-mode (a platform operator: ops in the platform organisation), or $bin/queue-mode --database-url \$EKKLESIA_ADMIN_DATABASE_URL get"
echo "Voter page: $EVENTS_URL/pages/vote   Meeting console (admins, platform operators): $EVENTS_URL/pages/console (dev login by kennitala; see the demo export)"
echo "Stop everything: infra/local/down.sh"
