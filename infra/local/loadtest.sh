#!/usr/bin/env bash
# Load tests on this machine, against a release build of the whole stack.
#
#   infra/local/loadtest.sh <scenario> [loadtest arguments]
#
#   infra/local/loadtest.sh meeting        300 votes/s for 5 s, queue mode then direct mode
#   infra/local/loadtest.sh burst-1000     1,000 votes at once, both modes
#   infra/local/loadtest.sh stress         step the rate up until p99 > 100 ms or errors, both modes
#   infra/local/loadtest.sh tokens         token issuance at 50/s for 10 s (members-fn + events-svc)
#   infra/local/loadtest.sh custom --schedule ramp:50:600:10
#   infra/local/loadtest.sh soak           30 minutes of a meeting: cycles of logins, trickle, one burst,
#                                          results reads and the checks, both modes; memory, CPU, DB size
#   infra/local/loadtest.sh drain          100,000 queued votes (own topic and databases, no services)
#   infra/local/loadtest.sh cold-start     each service's time from process start to /readyz, and its
#                                          idle RSS (database and emulator already up)
#   infra/local/loadtest.sh stop           stop the load-test services (LOADTEST_KEEP_RUNNING=1 runs)
#
# Brings up PostgreSQL, the Pub/Sub emulator and the OIDC provider (up.sh), builds the services
# and loadtest with --release, then starts a load-test instance of the four services beside
# the dev stack of run.sh: ports 18080 (ingest), 18081 (events-svc), 18082 (members-fn) and
# 19090 (worker), its own database (ekklesia_loadtest) and a fresh topic and subscription per
# run (votes-loadtest-<run>, deleted afterwards: the emulator keeps serving the streams of a
# stopped worker and loses what they take, see docs/emulator.md). The queue flag it switches
# and the ballots it writes never touch the dev stack. It loads a demo registry
# (LOADTEST_MEMBERS members, default 2000) and reuses the dev keys of run.sh.
# The services stop when the run ends unless LOADTEST_KEEP_RUNNING=1.
#
# Differences from production settings, on purpose: vote and login rate limits are raised
# (the load generator is one address standing for a whole hall) and ingest re-reads the queue
# flag every 200 ms (the flag is switched between modes). Everything else is the default.
# Traffic goes to 127.0.0.1 only. Reports: target/loadtest/<scenario>-<timestamp>/ (or --out).
# See BENCHMARKS.md for the figures and how to read them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

usage() { sed -n '2,31s/^# \{0,1\}//p' "$0"; }
[[ $# -ge 1 ]] || { usage >&2; exit 2; }
scenario=$1
shift
case $scenario in
  -h | --help) usage; exit 0 ;;
  meeting | burst | burst-1000 | stress | tokens | custom | soak | drain | cold-start | stop) ;;
  *) printf '[loadtest] unknown scenario: %s (try --help)\n' "$scenario" >&2; exit 2 ;;
esac

# The load-test instance: its own database, and a topic and subscription of its own per run.
export EKKLESIA_DB_NAME="${LOADTEST_DB_NAME:-ekklesia_loadtest}"
export PGDATABASE="$EKKLESIA_DB_NAME"
PUBSUB_TOPIC="votes-loadtest-$(date -u +%Y%m%d%H%M%S)-$$"
export PUBSUB_TOPIC
export PUBSUB_SUBSCRIPTION="$PUBSUB_TOPIC-worker"
export PUBSUB_DEAD_LETTER_TOPIC="$PUBSUB_TOPIC-dead-letter"
export PUBSUB_DEAD_LETTER_SUBSCRIPTION="$PUBSUB_TOPIC-dead-letter-sub"
unset EKKLESIA_ADMIN_DATABASE_URL
# shellcheck source=env.sh
source "$here/env.sh"

services=(members-fn events-svc ingest worker)
pidfile() { echo "$EKKLESIA_STATE_DIR/loadtest-$1.pid"; }
topic_file=$EKKLESIA_STATE_DIR/loadtest-topic

# Deletes the run's subscriptions and topics (which also stops the emulator's senders for them).
delete_topic() {
  local topic=$1 base="http://$PUBSUB_EMULATOR_HOST/v1/projects/$PUBSUB_PROJECT_ID"
  [[ $topic =~ ^votes-loadtest-[0-9]+-[0-9]+$ ]] || return 0
  for sub in "$topic-worker" "$topic-dead-letter-sub"; do
    curl -s -o /dev/null --max-time 5 -X DELETE "$base/subscriptions/$sub" || true
  done
  for t in "$topic" "$topic-dead-letter"; do
    curl -s -o /dev/null --max-time 5 -X DELETE "$base/topics/$t" || true
  done
}

stop_services() {
  local svc pid
  for svc in "${services[@]}"; do
    [[ -f $(pidfile "$svc") ]] || continue
    pid=$(cat "$(pidfile "$svc")")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "release/$svc"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$svc")"
  done
  if [[ -f $topic_file ]]; then
    delete_topic "$(cat "$topic_file")"
    rm -f "$topic_file"
  fi
}

if [[ $scenario == stop ]]; then
  stop_services
  echo "[loadtest] load-test services stopped"
  exit 0
fi

"$here/up.sh" >/dev/null
cd "$root"
echo "[loadtest] building with --release (services and loadtest)"
cargo build --release --quiet -p members-fn -p events-svc -p ingest -p worker -p loadtest
bin="${CARGO_TARGET_DIR:-$root/target}/release"

# Development keys: the ones run.sh made for this machine (kept outside the repository).
keys="$EKKLESIA_STATE_DIR/dev-keys.env"
# A file from before a key was added is made again (the local stack's data is demo data).
if [ ! -s "$keys" ] || ! grep -q '^VOTE_KEYS=' "$keys" || ! grep -q '^TOKEN_SLOT_KEYS=' "$keys" || ! grep -q '^AUDIT_KEY=' "$keys"; then
  (umask 077 && "$bin/loadtest" keys --tenant demo-party >"$keys")
fi
set -a
# shellcheck disable=SC1090
source "$keys"
set +a

if [[ $scenario == drain ]]; then
  # No services: drain makes its own topic and databases (cloned from the migrated template).
  delete_topic "$PUBSUB_TOPIC"
  # The emulator holds the whole backlog in its heap (about 2 KB per queued vote; 512 MB by
  # default, shared with every test's leftover topics): say how full it is before adding 100k.
  emulator_pid=$(cat "$EKKLESIA_STATE_DIR/pubsub.pid" 2>/dev/null || true)
  if [[ $emulator_pid =~ ^[0-9]+$ ]] && command -v jstat >/dev/null; then
    used=$(jstat -gc "$emulator_pid" 2>/dev/null | awk 'NR == 2 { printf "%d", ($3 + $4 + $6 + $8) / 1024 }')
    [[ -n $used ]] && echo "[loadtest] the emulator's heap holds ${used} MB now; 100,000 queued votes add about 200 MB (restart it with down.sh + up.sh, or set CLOUD_PUBSUB_EMULATOR_OPTS=-Xmx3g, if that is close to its limit (default 1536 MB))"
  fi
  status=0
  "$bin/loadtest" drain "$@" || status=$?
  # After a 100,000-vote drain the emulator was seen to keep a core busy with nobody connected
  # (its streaming-pull senders outlive their streams, docs/emulator.md): later runs on it would
  # measure that too. Say so rather than restart an emulator others may be using.
  if [[ $emulator_pid =~ ^[0-9]+$ ]] && [[ -r /proc/$emulator_pid/stat ]]; then
    ticks() { awk '{ print $14 + $15 }' "/proc/$emulator_pid/stat"; }
    before=$(ticks); sleep 2; after=$(ticks)
    busy=$(( (after - before) * 100 / (2 * $(getconf CLK_TCK)) ))
    if (( busy > 30 )); then
      echo "[loadtest] the emulator still uses ${busy} % of a core with the drain over; restart it (infra/local/down.sh && infra/local/up.sh) before measuring anything else"
    fi
  fi
  exit "$status"
fi

"$here/migrate.sh"

export DATABASE_MAX_CONNECTIONS=3
export INGEST_ADDR=127.0.0.1:18080 EVENTS_ADDR=127.0.0.1:18081 MEMBERS_ADDR=127.0.0.1:18082 WORKER_ADDR=127.0.0.1:19090
export INGEST_URL=http://127.0.0.1:18080 EVENTS_URL=http://127.0.0.1:18081 MEMBERS_URL=http://127.0.0.1:18082 WORKER_URL=http://127.0.0.1:19090 WORKER_HEALTH_URL=http://127.0.0.1:19090
export INTERNAL_ADDR=127.0.0.1:18079 ELECTIONS_URL=http://127.0.0.1:18079
export SESSION_JWKS_URL=$MEMBERS_URL/.well-known/jwks.json
export QUEUE_MODE_DEFAULT=true QUEUE_MODE_POLL_MS=200 SEAL_DELAY_MS=3000
export RATE_LIMIT_PER_CLIENT=100000 RATE_LIMIT_GLOBAL=100000 RECEIPT_RATE_PER_CLIENT=100000 RECEIPT_RATE_GLOBAL=100000 LOGIN_RATE_PER_CLIENT=2000 LOGIN_RATE_GLOBAL=2000
export EVENTS_RATE_GLOBAL=100000
# The harness switches the queue flag between its queue and direct runs.
export QUEUE_MODE_CHANGE_INTERVAL_MS=1000
export EKKLESIA_PROFILE=local DEV_LOGIN_ENABLED=true

stop_services
echo "$PUBSUB_TOPIC" >"$topic_file"
if [[ ${LOADTEST_KEEP_RUNNING:-0} != 1 ]]; then
  trap stop_services EXIT
fi
start_service() {
  local svc=$1 port login wrapper=()
  case $svc in
    members-fn) port=18082 login=members_dev ;; events-svc) port=18081 login=events_dev ;;
    ingest) port=18080 login=ingest_dev ;; worker) port=19090 login=worker_dev ;;
  esac
  if command -v ss >/dev/null && [[ -n $(ss -ltnH "sport = :$port" 2>/dev/null) ]]; then
    echo "[loadtest] port $port is in use by another program; stop it first" >&2
    exit 1
  fi
  # LOADTEST_INGEST_WRAPPER runs ingest under a profiler, e.g. "valgrind --tool=callgrind"
  # (BENCHMARKS.md, CPU per vote): word-split on purpose.
  [[ $svc == ingest && -n ${LOADTEST_INGEST_WRAPPER:-} ]] && read -r -a wrapper <<<"$LOADTEST_INGEST_WRAPPER"
  # LOADTEST_INGEST_BIN runs another build of ingest, for an A/B against an older commit
  # (its path must end in release/ingest, which is how the stop finds it).
  local program=$bin/$svc
  [[ $svc == ingest && -n ${LOADTEST_INGEST_BIN:-} ]] && program=$LOADTEST_INGEST_BIN
  DATABASE_URL="postgres://$login:$login@$PGHOST:$PGPORT/$EKKLESIA_DB_NAME" \
    nohup "${wrapper[@]}" "$program" >"$EKKLESIA_STATE_DIR/loadtest-$svc.log" 2>&1 &
  echo $! >"$(pidfile "$svc")"
}

if [[ $scenario == cold-start ]]; then
  # One service at a time, in dependency order, each timed from its spawn to its first 200 on
  # /readyz (polled every 5 ms); its RSS read 2 s later, idle.
  printf '| service | start → /readyz | RSS idle |\n|---|---|---|\n'
  for svc in "${services[@]}"; do
    case $svc in
      members-fn) url=$MEMBERS_URL ;; events-svc) url=$EVENTS_URL ;; ingest) url=$INGEST_URL ;; worker) url=$WORKER_URL ;;
    esac
    t0=$(date +%s%N)
    start_service "$svc"
    ready=
    for _ in $(seq 1 4000); do
      if curl -fsS --max-time 1 "$url/readyz" >/dev/null 2>&1; then ready=$(date +%s%N); break; fi
      sleep 0.005
    done
    [[ -n $ready ]] || { echo "[loadtest] $svc not ready (log: $EKKLESIA_STATE_DIR/loadtest-$svc.log)" >&2; exit 1; }
    sleep 2
    rss=$(awk '/^VmRSS:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$(cat "$(pidfile "$svc")")/status")
    printf '| %s | %d ms | %s |\n' "$svc" $(((ready - t0) / 1000000)) "$rss"
  done
  exit 0
fi

for svc in "${services[@]}"; do
  start_service "$svc"
done
for url in $MEMBERS_URL/readyz $EVENTS_URL/readyz $INGEST_URL/readyz $WORKER_URL/readyz; do
  for _ in $(seq 1 300); do
    curl -fsS "$url" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "$url" >/dev/null || { echo "[loadtest] not ready: $url (logs: $EKKLESIA_STATE_DIR/loadtest-*.log)" >&2; exit 1; }
done

"$bin/loadtest" members-csv --voters "${LOADTEST_MEMBERS:-2000}" |
  DATABASE_URL="postgres://members_dev:members_dev@$PGHOST:$PGPORT/$EKKLESIA_DB_NAME" "$bin/members-import" --org demo-party - >/dev/null
# The platform operator who switches the queue flag (`ops` only in the platform organisation).
"$bin/loadtest" members-csv --platform-ops |
  DATABASE_URL="postgres://members_dev:members_dev@$PGHOST:$PGPORT/$EKKLESIA_DB_NAME" "$bin/members-import" --org platform - >/dev/null
echo "[loadtest] stack up (release): ingest $INGEST_URL, events-svc $EVENTS_URL, members-fn $MEMBERS_URL, worker $WORKER_URL"

pids=()
for svc in "${services[@]}"; do
  pids+=(--pid "$svc=$(cat "$(pidfile "$svc")")")
done
status=0
"$bin/loadtest" "$scenario" "${pids[@]}" "$@" || status=$?
exit $status
