#!/usr/bin/env bash
# Run the whole stack locally and show it working.
#
#   infra/local/run.sh
#
# Brings up PostgreSQL and the Pub/Sub emulator, applies the migrations, builds and starts
# ingest (http://127.0.0.1:8080) and the worker (metrics on http://127.0.0.1:9090), then runs a
# demo election: a few members vote through the queue, the worker records the ballots, the
# election is closed and sealed, and the final tally is printed. The services keep running
# afterwards; stop everything with infra/local/down.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=env.sh
source "$here/env.sh"

"$here/up.sh" >/dev/null
"$here/migrate.sh"
cd "$root"
cargo build --quiet -p ingest -p worker -p loadtest
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

# Development keys, made once per machine and kept outside the repository.
keys="$EKKLESIA_STATE_DIR/dev-keys.env"
if [ ! -s "$keys" ]; then
  (umask 077 && "$bin/loadtest" keys --tenant demo-party >"$keys")
fi
set -a
# shellcheck disable=SC1090
source "$keys"
set +a

export DATABASE_MAX_CONNECTIONS=3
export INGEST_ADDR=127.0.0.1:8080 WORKER_ADDR=127.0.0.1:9090 INGEST_URL=http://127.0.0.1:8080
export QUEUE_MODE_DEFAULT=true SEAL_DELAY_MS=3000

start() { # name, database login, binary
  local name=$1 login=$2 pidfile="$EKKLESIA_STATE_DIR/$1.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")" && sleep 1
  fi
  DATABASE_URL="postgres://$login:$login@$PGHOST:$PGPORT/$EKKLESIA_DB_NAME" \
    nohup "$bin/$name" >"$EKKLESIA_STATE_DIR/$name.log" 2>&1 &
  echo $! >"$pidfile"
}
start ingest ingest_dev
start worker worker_dev

for url in http://127.0.0.1:8080/readyz http://127.0.0.1:9090/readyz; do
  for _ in $(seq 1 50); do
    curl -fsS "$url" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "$url" >/dev/null || { echo "not ready: $url (logs in $EKKLESIA_STATE_DIR)" >&2; exit 1; }
done
echo "ingest on http://127.0.0.1:8080 (OpenAPI: /openapi.json), worker metrics on http://127.0.0.1:9090/metrics"
"$bin/queue-mode" --database-url "$EKKLESIA_ADMIN_DATABASE_URL" get
echo
"$bin/loadtest" demo --voters 5
echo
echo "The stack keeps running. Logs: $EKKLESIA_STATE_DIR/{ingest,worker}.log"
echo "Flip the queue flag: $bin/queue-mode --database-url \$EKKLESIA_ADMIN_DATABASE_URL set off --actor you@example"
echo "Stop everything: infra/local/down.sh"
