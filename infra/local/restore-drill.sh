#!/usr/bin/env bash
# Restore drill: back the elections data up, destroy the database, restore it two ways and
# prove the restored database is the same and serves votes.
#
#   infra/local/restore-drill.sh [--ci] [--voters N]
#
# On PostgreSQL clusters of its own (15/drill, then 15/drill-pitr, then 15/drill-dump, one at a
# time on DRILL_PG_PORT, default 5442; 15/main is never touched) with WAL archiving on:
#  1. migrates, starts members-fn, events-svc, ingest and the worker against it (their own
#     ports and Pub/Sub topics), loads a registry and votes through the real services:
#     election A voted, closed and sealed; election B open with votes;
#  2. takes a base backup (pg_basebackup) while A is still open, so the recovery replays the
#     seal and B's votes from archived WAL; after the last vote, notes the recovery target,
#     takes a logical dump (pg_dump, and pg_dumpall --roles-only for the roles), then commits
#     one more vote (after the target: the recovery must not bring it back);
#  3. destroys the cluster (pg_dropcluster), restores into a fresh one by point-in-time
#     recovery to the target, verifies, drops it, restores the logical dump into another fresh
#     one, verifies, drops it.
# Verified each time (infra/local/restore-check.sql before and after): roles, memberships,
# grants, owners, row-level security and its policies, functions and the migrations recorded
# identical; every election's state, tally (the elections side's query), ballot box, token,
# receipt and member counts equal; every election's results as events-svc answers them
# identical; then the services start against the restored database and a new vote is
# recorded. It prints the measured restore times and the data-loss window (the recovery
# target against the last transaction the lost cluster committed).
#
# --ci: 12 voters (about a minute once the services are built); the default is 200. Needs
# root (pg_createcluster, runuser) and an emulator at PUBSUB_EMULATOR_HOST, started here with
# pubsub-up.sh (and stopped again) if none answers. Everything the drill made is removed at the
# end, also on failure: its clusters, services, topics and files (DRILL_WORK_DIR, default
# /var/tmp/ekklesia-restore-drill; DRILL_KEEP=1 keeps the files for a post-mortem).
# Service ports: DRILL_PORT_BASE (default 28080) to DRILL_PORT_BASE+3, and +10 for the worker.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=env.sh
source "$here/env.sh"

usage() { sed -n '2,33s/^# \{0,1\}//p' "$0"; }
voters=200
while (($#)); do
  case $1 in
    --ci) voters=12 ;;
    --voters) voters=${2:?--voters needs a number} && shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
if ! [[ $voters =~ ^[0-9]+$ ]] || ((voters < 6)); then
  echo "--voters must be at least 6" >&2
  exit 2
fi

log() { printf '[drill %4ds] %s\n' $((SECONDS - started)) "$*"; }
die() { printf '[drill] FAILED: %s\n' "$*" >&2; exit 1; }
started=$SECONDS

[[ $(id -u) -eq 0 ]] || die "must run as root (pg_createcluster, pg_dropcluster, runuser)"
for tool in pg_createcluster pg_dropcluster pg_ctlcluster pg_lsclusters pg_basebackup pg_dump \
  pg_dumpall pg_restore psql runuser curl jq ss; do
  command -v "$tool" >/dev/null || die "'$tool' not found"
done

ver=$EKKLESIA_PG_VERSION
port=${DRILL_PG_PORT:-5442}
base_port=${DRILL_PORT_BASE:-28080}
work=${DRILL_WORK_DIR:-/var/tmp/ekklesia-restore-drill}
db=$EKKLESIA_DB_NAME
owner=$EKKLESIA_DB_OWNER
clusters=(drill drill-pitr drill-dump)
run_id="$(date -u +%Y%m%d%H%M%S)-$$"
[[ $port != "$PGPORT" ]] || die "DRILL_PG_PORT must not be the main cluster's port ($PGPORT)"

# A cluster of this drill carries a marker file in its configuration directory; anything else
# with one of these names is not ours to drop.
marker() { echo "/etc/postgresql/$ver/$1/ekklesia-restore-drill"; }
cluster_exists() { [[ -n $(pg_lsclusters -h | awk -v v="$ver" -v c="$1" '$1 == v && $2 == c')  ]]; }
# drop_cluster NAME: drops it if this drill made it; fails if someone else's has that name.
drop_cluster() {
  if cluster_exists "$1"; then
    [[ -f $(marker "$1") ]] || return 1
    pg_dropcluster --stop "$ver" "$1"
  fi
  # pg_dropcluster leaves the files it did not create (the marker, conf.d/drill.conf).
  if [[ -f $(marker "$1") ]]; then rm -rf "/etc/postgresql/$ver/$1"; fi
}

# --- cleanup, also on failure -------------------------------------------------------------
service_pids=()
emulator_started=""
topics=()
cleanup() {
  local rc=$?
  set +e
  stop_services
  for t in "${topics[@]}"; do delete_topic "$t"; done
  for c in "${clusters[@]}"; do drop_cluster "$c" 2>/dev/null; done
  if [[ -n $emulator_started ]] && [[ $(cat "/proc/$emulator_started/comm" 2>/dev/null) == java ]]; then
    kill -TERM "$emulator_started" 2>/dev/null
    rm -f "$EKKLESIA_STATE_DIR/pubsub.pid"
  fi
  if [[ ${DRILL_KEEP:-0} == 1 ]]; then
    echo "[drill] files kept in $work (they hold the drill's keys and dumps: remove them)"
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT

for c in "${clusters[@]}"; do
  drop_cluster "$c" || die "cluster $ver/$c exists but was not made by this drill; not touching it"
done
[[ -z $(ss -ltnH "sport = :$port") ]] || die "port $port is in use; set DRILL_PG_PORT"
for p in $base_port $((base_port + 1)) $((base_port + 2)) $((base_port + 3)) $((base_port + 10)); do
  [[ -z $(ss -ltnH "sport = :$p") ]] || die "port $p is in use; set DRILL_PORT_BASE"
done
rm -rf "$work"
mkdir -p "$work"/{archive,logs,snapshots}
chown postgres:postgres "$work" "$work/archive"
chmod 0700 "$work"

# --- services -------------------------------------------------------------------------------
cd "$root"
log "building the services (no-op when built)"
cargo build --quiet -p members-fn -p events-svc -p ingest -p worker -p loadtest -p shared
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

# Keys live outside the database (Secret Manager in production), so they survive its loss.
(umask 077 && "$bin/loadtest" keys --tenant demo-party >"$work/keys.env")
set -a
# shellcheck disable=SC1091
source "$work/keys.env"
set +a
"$bin/loadtest" members-csv --voters "$voters" >"$work/members.csv"
mapfile -t national_ids < <(tail -n +2 "$work/members.csv" | cut -d, -f1)

export INGEST_ADDR=127.0.0.1:$base_port INTERNAL_ADDR=127.0.0.1:$((base_port + 3))
export EVENTS_ADDR=127.0.0.1:$((base_port + 1)) MEMBERS_ADDR=127.0.0.1:$((base_port + 2))
export WORKER_ADDR=127.0.0.1:$((base_port + 10))
INGEST_URL=http://$INGEST_ADDR EVENTS_URL=http://$EVENTS_ADDR MEMBERS_URL=http://$MEMBERS_ADDR
export ELECTIONS_URL=http://$INTERNAL_ADDR SESSION_JWKS_URL=$MEMBERS_URL/.well-known/jwks.json
export QUEUE_MODE_DEFAULT=true SEAL_DELAY_MS=1000 DATABASE_MAX_CONNECTIONS=3
export EKKLESIA_PROFILE=local DEV_LOGIN_ENABLED=true
export LOGIN_RATE_PER_CLIENT=100000 LOGIN_RATE_GLOBAL=100000 EVENTS_RATE_GLOBAL=100000
unset OIDC_ISSUER # dev login only: no identity provider in the drill

emulator=http://$PUBSUB_EMULATOR_HOST/v1/projects/$PUBSUB_PROJECT_ID
if ! curl -fsS -o /dev/null --max-time 2 "$emulator/topics"; then
  log "no emulator at $PUBSUB_EMULATOR_HOST: starting one"
  "$here/pubsub-up.sh" >"$work/logs/pubsub-up.log"
  emulator_started=$(cat "$EKKLESIA_STATE_DIR/pubsub.pid")
fi
put() { curl -fsS -o /dev/null --max-time 10 -X PUT -H 'Content-Type: application/json' -d "$2" "$emulator/$1"; }
# A topic and subscriptions per start of the services: the emulator keeps serving a stopped
# worker's stream and would lose what it hands to it (docs/testing.md).
new_topic() {
  local t="votes-drill-$run_id-$1"
  topics+=("$t")
  put "topics/$t" '{}'
  put "topics/$t-dead-letter" '{}'
  put "subscriptions/$t-dead-letter-sub" "{\"topic\": \"projects/$PUBSUB_PROJECT_ID/topics/$t-dead-letter\", \"ackDeadlineSeconds\": 30}"
  put "subscriptions/$t-worker" "$(jq -nc --arg t "projects/$PUBSUB_PROJECT_ID/topics/$t" \
    --arg d "projects/$PUBSUB_PROJECT_ID/topics/$t-dead-letter" \
    '{topic: $t, ackDeadlineSeconds: 30, deadLetterPolicy: {deadLetterTopic: $d, maxDeliveryAttempts: 10},
      retryPolicy: {minimumBackoff: "1s", maximumBackoff: "10s"}}')"
  export PUBSUB_TOPIC=$t PUBSUB_SUBSCRIPTION=$t-worker PUBSUB_DEAD_LETTER_SUBSCRIPTION=$t-dead-letter-sub
}
delete_topic() {
  for sub in "$1-worker" "$1-dead-letter-sub"; do curl -s -o /dev/null --max-time 5 -X DELETE "$emulator/subscriptions/$sub"; done
  for t in "$1" "$1-dead-letter"; do curl -s -o /dev/null --max-time 5 -X DELETE "$emulator/topics/$t"; done
}

# start_services PHASE: the four services against the drill cluster, until stop_services.
start_services() {
  new_topic "$1"
  local svc login
  for svc in members-fn:members_dev events-svc:events_dev ingest:ingest_dev worker:worker_dev; do
    login=${svc#*:} svc=${svc%%:*}
    DATABASE_URL="postgres://$login:$login@127.0.0.1:$port/$db" \
      "$bin/$svc" >"$work/logs/$1-$svc.log" 2>&1 &
    service_pids+=($!)
  done
  for url in "$MEMBERS_URL" "$EVENTS_URL" "$INGEST_URL" "http://$WORKER_ADDR"; do
    wait_for "$url ready" 30 curl -fsS -o /dev/null "$url/readyz" ||
      die "$url not ready (logs: $work/logs/$1-*.log)"
  done
}
stop_services() {
  local pid
  for pid in "${service_pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${service_pids[@]}"; do wait "$pid" 2>/dev/null; done
  service_pids=()
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
  local what=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "[drill] timed out waiting for $what" >&2; return 1; }
    sleep 0.2
  done
}

# call METHOD URL BEARER [JSON]: the answer's body; fails on anything but 2xx.
call() {
  curl -fsS -X "$1" "$2" -H "Authorization: Bearer $3" ${4:+-H 'Content-Type: application/json' -d "$4"}
}
session() {
  curl -fsS -X POST "$MEMBERS_URL/v1/auth/dev-login" -H 'Content-Type: application/json' \
    -d "{\"national_id\": \"$1\"}" | jq -er .session_token
}
new_election() {
  local id
  id=$(call POST "$EVENTS_URL/v1/elections" "$admin" "{\"title\": \"Restore drill\", \"question\": \"$1\",
    \"kind\": \"single\", \"options\": [{\"id\": \"yes\", \"label\": \"Yes\"}, {\"id\": \"no\", \"label\": \"No\"},
    {\"id\": \"abstain\", \"label\": \"Abstain\"}], \"max_choices\": 1}" | jq -er .id)
  call POST "$EVENTS_URL/v1/elections/$id/open" "$admin" >/dev/null
  echo "$id"
}
# vote ELECTION VOTER: voter VOTER (1..) logs in, takes a token and votes; prints the receipt.
vote() {
  local s token choices=(yes yes no abstain yes no)
  s=$(session "${national_ids[$2]}")
  token=$(call POST "$EVENTS_URL/v1/elections/$1/token" "$s" | jq -er .token)
  call POST "$INGEST_URL/v1/elections/$1/ballots" "$token" \
    "{\"choices\": [\"${choices[$(($2 % ${#choices[@]}))]}\"]}" | jq -er .receipt
}
recorded() { [[ $(curl -fsS "$INGEST_URL/v1/receipts/$1" | jq -r .status) == recorded ]]; }
final() { [[ $(call GET "$EVENTS_URL/v1/elections/$1/results" "$admin" | jq -r .final) == true ]]; }
results() { call GET "$EVENTS_URL/v1/elections/$1/results" "$admin" | jq -S .; }

# --- the drill's own cluster ------------------------------------------------------------------
psql_super() { (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$port" "$@"); }
# new_cluster NAME [archive]: a fresh, empty, running cluster on $port.
new_cluster() {
  pg_createcluster --port "$port" "$ver" "$1" >/dev/null
  touch "$(marker "$1")"
  cat >"/etc/postgresql/$ver/$1/conf.d/drill.conf" <<EOF
listen_addresses = '127.0.0.1'
# The data-loss window is measured from commit timestamps.
track_commit_timestamp = on
EOF
  if [[ ${2:-} == archive ]]; then
    cat >>"/etc/postgresql/$ver/$1/conf.d/drill.conf" <<EOF
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $work/archive/%f && cp %p $work/archive/%f'
# A quiet cluster still archives its last transactions within this bound (the loss on a crash).
archive_timeout = 60
EOF
  fi
}
# start_cluster NAME: started, and out of recovery (a restored one has replayed and promoted).
start_cluster() {
  pg_ctlcluster "$ver" "$1" start
  wait_for "cluster $1 accepting writes" 300 writable ||
    die "cluster $1 did not come up writable (see /var/log/postgresql/postgresql-$ver-$1.log)"
}
writable() { [[ $(psql_super -d postgres -Atc "SELECT NOT pg_is_in_recovery()") == t ]]; }
admin_url="postgres://$owner:$EKKLESIA_DB_OWNER_PASSWORD@127.0.0.1:$port/$db"

# snapshot FILE: what a restore must bring back (restore-check.sql), as the superuser.
snapshot() {
  psql_super -d "$db" -At -F ' | ' -f - <"$here/restore-check.sql" >"$1"
}
# results_snapshot FILE: every election's results as events-svc answers them.
results_snapshot() {
  for e in "$election_a" "$election_b"; do results "$e"; done >"$1"
}

# verify NAME: the restored cluster against the snapshot taken at the recovery target.
verify() {
  snapshot "$work/snapshots/$1.txt"
  if ! diff -u "$work/snapshots/source.txt" "$work/snapshots/$1.txt" >"$work/snapshots/$1.diff"; then
    cat "$work/snapshots/$1.diff" >&2
    die "$1: the restored database differs from the one backed up (above)"
  fi
  log "$1: roles, grants, owners, row-level security, policies, migrations, elections, ballots, tokens, receipts and members identical ($(wc -l <"$work/snapshots/$1.txt") catalog and data lines)"
  if [[ -n ${2:-} ]]; then
    [[ $(psql_super -d "$db" -Atc "SELECT count(*) FROM elections.receipts WHERE receipt = '$2'") == 0 ]] ||
      die "$1: the vote committed after the recovery target came back"
    log "$1: the vote committed after the target is absent, as it must be"
  fi
  start_services "$1"
  admin=$(session "${national_ids[0]}")
  results_snapshot "$work/snapshots/$1-results.json"
  diff -u "$work/snapshots/source-results.json" "$work/snapshots/$1-results.json" >&2 ||
    die "$1: events-svc answers different results (above)"
  log "$1: every election's results identical through events-svc (A final: $(jq -c .tally <(results "$election_a")))"
  local receipt
  receipt=$(vote "$election_b" "$((voters - 1))")
  wait_for "the new vote recorded" 60 recorded "$receipt" || die "$1: a vote after the restore was not recorded"
  log "$1: services started against the restored database; a new vote was recorded"
  stop_services
}

# --- 1. the data set --------------------------------------------------------------------------
log "creating cluster $ver/drill on port $port with WAL archiving"
new_cluster drill archive
start_cluster drill
psql_super -d postgres -v role="$owner" -v pw="$EKKLESIA_DB_OWNER_PASSWORD" -v db="$db" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L CREATEDB CREATEROLE', :'role', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') \gexec
SQL
EKKLESIA_ADMIN_DATABASE_URL=$admin_url "$bin/migrate" >/dev/null
psql -X -q -w -v ON_ERROR_STOP=1 "$admin_url" -f "$here/dev-logins.sql"
start_services source
DATABASE_URL="postgres://members_dev:members_dev@127.0.0.1:$port/$db" \
  "$bin/members-import" --org demo-party - <"$work/members.csv" >/dev/null
admin=$(session "${national_ids[0]}")
half=$((voters / 2))
log "election A: $((voters - 2)) votes"
election_a=$(new_election "Adopt the budget?")
receipts=()
for ((v = 1; v <= voters - 2; v++)); do receipts+=("$(vote "$election_a" "$v")"); done
for r in "${receipts[@]}"; do wait_for "receipts recorded" 60 recorded "$r" || die "a vote in A was not recorded"; done

log "base backup (pg_basebackup, while A is open: its ballots are ciphertext in the ballot box)"
t=$SECONDS
(cd / && runuser -u postgres -- pg_basebackup -h /var/run/postgresql -p "$port" -D "$work/base" \
  -X stream -c fast --no-password)
log "base backup taken in $((SECONDS - t)) s ($(du -sh "$work/base" | cut -f1))"

call POST "$EVENTS_URL/v1/elections/$election_a/close" "$admin" >/dev/null
wait_for "A sealed and final" 60 final "$election_a" || die "election A never became final"
log "election A closed and sealed: $(jq -c '{total, tally, final}' <(results "$election_a"))"
election_b=$(new_election "Elect the treasurer?")
receipts=()
for ((v = 1; v <= half; v++)); do receipts+=("$(vote "$election_b" "$v")"); done
for r in "${receipts[@]}"; do wait_for "receipts recorded" 60 recorded "$r" || die "a vote in B was not recorded"; done
log "election B open with $half votes"

# --- 2. the recovery target, the logical dump, a transaction after the target ------------------
results_snapshot "$work/snapshots/source-results.json"
snapshot "$work/snapshots/source.txt"
target=$(psql_super -d "$db" -Atc "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
log "recovery target $target (after the last vote and the snapshot)"
t=$SECONDS
(cd / && runuser -u postgres -- pg_dumpall -h /var/run/postgresql -p "$port" --roles-only) >"$work/roles.sql"
(cd / && runuser -u postgres -- pg_dump -h /var/run/postgresql -p "$port" -Fc "$db") >"$work/$db.dump"
chmod 0600 "$work/roles.sql" "$work/$db.dump"
log "logical dump taken in $((SECONDS - t)) s ($(du -h "$work/$db.dump" | cut -f1); roles: $(grep -c '^CREATE ROLE' "$work/roles.sql"))"
late=$(vote "$election_b" "$((half + 1))")
wait_for "the late vote recorded" 60 recorded "$late" || die "the vote after the target was not recorded"
log "one more vote committed after the target (it is what a restore to the target loses)"
stop_services
last_commit=$(psql_super -d postgres -Atc "SELECT timestamp FROM pg_last_committed_xact()")
# Archive the open WAL segment (a crash would lose it; archive_timeout bounds how much).
psql_super -d postgres -Atc "SELECT pg_walfile_name(pg_switch_wal())" >"$work/last-wal"
wait_for "the last WAL segment archived" 60 test -f "$work/archive/$(cat "$work/last-wal")" ||
  die "WAL segment $(cat "$work/last-wal") was not archived"

log "destroying cluster $ver/drill (data directory and all)"
drop_cluster drill

# --- 3a. point-in-time recovery into a fresh cluster -------------------------------------------
log "PITR: fresh cluster $ver/drill-pitr from the base backup, WAL replayed to $target"
t=$SECONDS
new_cluster drill-pitr
data=/var/lib/postgresql/$ver/drill-pitr
rm -rf "${data:?}"/*
cp -a "$work/base/." "$data/"
cat >>"/etc/postgresql/$ver/drill-pitr/conf.d/drill.conf" <<EOF
restore_command = 'cp $work/archive/%f %p'
recovery_target_time = '$target'
recovery_target_action = 'promote'
EOF
touch "$data/recovery.signal"
chown -R postgres:postgres "$data"
start_cluster drill-pitr
pitr_time=$((SECONDS - t))
replayed=$(psql_super -d postgres -Atc "SELECT timestamp FROM pg_last_committed_xact()")
window=$(psql_super -d postgres -Atc "SELECT round(extract(epoch FROM timestamptz '$last_commit' - timestamptz '$target')::numeric, 3)")
log "PITR restored in $pitr_time s (cluster creation, copy, WAL replay, promotion)"
log "data-loss window: the lost cluster's last commit $last_commit, target $target, last commit replayed $replayed: ${window} s of commits lost by restoring to the target"
verify pitr "$late"
drop_cluster drill-pitr

# --- 3b. the logical dump into a fresh cluster --------------------------------------------------
log "logical: fresh cluster $ver/drill-dump, roles then the database"
t=$SECONDS
new_cluster drill-dump
start_cluster drill-dump
# The superuser exists in every cluster; its line would only fail.
grep -v -E '^(CREATE|ALTER) ROLE postgres( |;)' "$work/roles.sql" | psql_super -d postgres >/dev/null
(cd / && runuser -u postgres -- pg_restore -h /var/run/postgresql -p "$port" --create --exit-on-error \
  -d postgres) <"$work/$db.dump"
dump_time=$((SECONDS - t))
log "logical dump restored in $dump_time s (data-loss window: everything after the dump started, here the one late vote)"
verify dump "$late"
drop_cluster drill-dump

log "restore drill passed: $voters members, PITR ${pitr_time} s, logical ${dump_time} s, data-loss window ${window} s, total $((SECONDS - started)) s"
