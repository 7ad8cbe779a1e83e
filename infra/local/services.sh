# shellcheck shell=bash
# Start the whole local stack and load the demo registries; sourced by run.sh and
# schemathesis.sh (from a script with `set -euo pipefail`), which go on from there.
#
#   source infra/local/services.sh
#
# Brings up PostgreSQL, the Pub/Sub emulator and a local OIDC provider, applies the
# migrations, builds and starts every service:
#   members-fn  http://127.0.0.1:8082  login (OIDC with PKCE), session keys
#   events-svc  http://127.0.0.1:8081  elections, voting tokens, results, queue flag
#   ingest      http://127.0.0.1:8080  the vote path (internal API and /metrics: :8079)
#   worker      http://127.0.0.1:9090  metrics/health of the queue consumer
# and loads the demo party's and the platform organisation's membership exports. Leaves the
# stack's variables exported (URLs, DATABASE_*, the dev keys) and `bin` naming the binaries'
# directory. Settings exported before sourcing (rate limits and the like) reach the services.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=env.sh
source "$here/env.sh"

# A fresh emulator: it keeps serving the streams of a stopped worker and loses what they take
# (docs/emulator.md), so a worker restarted on the same subscription could miss votes.
"$here/down.sh" >/dev/null
"$here/up.sh" >/dev/null
"$here/migrate.sh"
cd "$root" || exit 1
cargo build --quiet -p members-fn -p events-svc -p ingest -p worker -p loadtest
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

# Development keys, made once per machine and kept outside the repository.
keys="$EKKLESIA_STATE_DIR/dev-keys.env"
# A file from before a key was added is made again (the local stack's data is demo data).
if [ ! -s "$keys" ] || ! grep -q '^VOTE_KEYS=' "$keys" || ! grep -q '^TOKEN_SLOT_KEYS=' "$keys" || ! grep -q '^AUDIT_KEY=' "$keys"; then
  (umask 077 && "$bin/loadtest" keys --tenant demo-party >"$keys")
fi
set -a
# shellcheck disable=SC1090
source "$keys"
set +a

export DATABASE_MAX_CONNECTIONS=3
export INGEST_ADDR=127.0.0.1:8080 WORKER_ADDR=127.0.0.1:9090 EVENTS_ADDR=127.0.0.1:8081 MEMBERS_ADDR=127.0.0.1:8082
export INGEST_URL=http://127.0.0.1:8080 EVENTS_URL=http://127.0.0.1:8081 MEMBERS_URL=http://127.0.0.1:8082
# ingest serves the elections side's internal API (and its /metrics) on a listener of its own.
export INTERNAL_ADDR=127.0.0.1:8079 ELECTIONS_URL=http://127.0.0.1:8079
export SESSION_JWKS_URL=$MEMBERS_URL/.well-known/jwks.json
# events-svc reads the worker's /readyz and /metrics for the console's live view.
export WORKER_HEALTH_URL=http://127.0.0.1:9090
# The web pages are served by events-svc; members-fn and ingest allow its origin (CORS).
export PAGE_ORIGINS=$EVENTS_URL PAGES_MEMBERS_URL=$MEMBERS_URL PAGES_INGEST_URL=$INGEST_URL
export QUEUE_MODE_DEFAULT=true SEAL_DELAY_MS=3000
# Local only: the production profile refuses dev login.
export EKKLESIA_PROFILE=local DEV_LOGIN_ENABLED=true

start() { # name, database login, binary
  local name=$1 login=$2 pidfile="$EKKLESIA_STATE_DIR/$1.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")" && sleep 1
  fi
  DATABASE_URL="postgres://$login:$login@$PGHOST:$PGPORT/$EKKLESIA_DB_NAME" \
    nohup "$bin/$name" >"$EKKLESIA_STATE_DIR/$name.log" 2>&1 &
  echo $! >"$pidfile"
}
start members-fn members_dev
start events-svc events_dev
start ingest ingest_dev
start worker worker_dev

for url in $MEMBERS_URL/readyz $EVENTS_URL/readyz $INGEST_URL/readyz http://127.0.0.1:9090/readyz; do
  for _ in $(seq 1 50); do
    curl -fsS "$url" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "$url" >/dev/null || { echo "not ready: $url (logs in $EKKLESIA_STATE_DIR)" >&2; exit 1; }
done
echo "members-fn $MEMBERS_URL, events-svc $EVENTS_URL, ingest $INGEST_URL (internal API and /metrics: $ELECTIONS_URL), worker http://127.0.0.1:9090 (each: /openapi.json, /healthz, /readyz, /metrics)"
echo
echo "== loading the demo membership export (members-import)"
"$bin/loadtest" members-csv --voters 5 |
  DATABASE_URL="postgres://members_dev:members_dev@$PGHOST:$PGPORT/$EKKLESIA_DB_NAME" "$bin/members-import" --org demo-party -
echo "== loading the platform organisation's registry (its platform operator switches the queue flag)"
"$bin/loadtest" members-csv --platform-ops |
  DATABASE_URL="postgres://members_dev:members_dev@$PGHOST:$PGPORT/$EKKLESIA_DB_NAME" "$bin/members-import" --org platform -
