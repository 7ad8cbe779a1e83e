#!/usr/bin/env bash
# Bring up the whole local dev/test stack (idempotent).
#
#   infra/local/up.sh
#
# Runs postgres-up.sh, then pubsub-up.sh, then oidc-up.sh, then prints what is
# running and the variables to export (or simply: source infra/local/env.sh).
# Stop with down.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"

case "${1:-}" in
  -h | --help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
  "") ;;
  *) printf '[up] ERROR: unknown argument: %s (try --help)\n' "$1" >&2; exit 1 ;;
esac

"$here/postgres-up.sh"
"$here/pubsub-up.sh"
"$here/oidc-up.sh"

pg_server=$(psql -X -w -At "$EKKLESIA_ADMIN_DATABASE_URL" -c 'SHOW server_version' 2>/dev/null || echo '?')
pubsub_pid=$(cat "$EKKLESIA_STATE_DIR/pubsub.pid" 2>/dev/null || echo 'not managed by pubsub-up.sh')
oidc_pid=$(cat "$EKKLESIA_STATE_DIR/oidc.pid" 2>/dev/null || echo 'not managed by oidc-up.sh')

cat <<EOF

== local stack is up ==
PostgreSQL $pg_server  cluster $EKKLESIA_PG_VERSION/$EKKLESIA_PG_CLUSTER on $PGHOST:$PGPORT, database $EKKLESIA_DB_NAME (owner $EKKLESIA_DB_OWNER)
Pub/Sub emulator        $PUBSUB_EMULATOR_HOST, project $PUBSUB_PROJECT_ID, pid $pubsub_pid, log $EKKLESIA_STATE_DIR/pubsub.log
  topic $PUBSUB_TOPIC -> subscription $PUBSUB_SUBSCRIPTION (dead letter after $MAX_DELIVERY_ATTEMPTS attempts)
  dead-letter topic $PUBSUB_DEAD_LETTER_TOPIC -> subscription $PUBSUB_DEAD_LETTER_SUBSCRIPTION
OIDC provider           $OIDC_ISSUER, pid $oidc_pid, log $EKKLESIA_STATE_DIR/oidc.log
  client $OIDC_CLIENT_ID (client_secret_post, PKCE S256), redirect_uri $OIDC_REDIRECT_URI; account = login_hint

Export these (or run: source $here/env.sh):
EOF
for var in EKKLESIA_STATE_DIR PGHOST PGPORT PGDATABASE EKKLESIA_ADMIN_DATABASE_URL \
  PUBSUB_EMULATOR_HOST PUBSUB_PROJECT_ID PUBSUB_TOPIC PUBSUB_SUBSCRIPTION \
  PUBSUB_DEAD_LETTER_TOPIC PUBSUB_DEAD_LETTER_SUBSCRIPTION MAX_DELIVERY_ATTEMPTS \
  OIDC_PORT OIDC_ISSUER OIDC_CLIENT_ID OIDC_CLIENT_SECRET OIDC_REDIRECT_URI; do
  printf 'export %s=%q\n' "$var" "${!var}"
done
printf '\nStop: %s/down.sh  (add --postgres to stop PostgreSQL too)\n' "$here"
