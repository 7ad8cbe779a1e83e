#!/usr/bin/env bash
# Start the Google Pub/Sub emulator and create ekklesia's topics (idempotent).
#
#   infra/local/pubsub-up.sh
#
# Starts the emulator on $PUBSUB_EMULATOR_HOST unless it already answers there,
# records the JVM's pid in $EKKLESIA_STATE_DIR/pubsub.pid (log: pubsub.log),
# then creates/updates via REST: topic $PUBSUB_TOPIC, dead-letter topic
# $PUBSUB_DEAD_LETTER_TOPIC + subscription $PUBSUB_DEAD_LETTER_SUBSCRIPTION, and
# the worker subscription $PUBSUB_SUBSCRIPTION (ack deadline 30 s, dead-letter
# policy, retry backoff 1s..10s). The emulator keeps everything in memory, so
# the resources are recreated whenever it restarts. Stop it with down.sh.
set -euo pipefail

# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

log() { printf '[pubsub-up] %s\n' "$*"; }
die() { printf '[pubsub-up] ERROR: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  -h | --help) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
  "") ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

start_timeout=60
ack_deadline=30

# --- checks -----------------------------------------------------------------
host=${PUBSUB_EMULATOR_HOST%:*}
port=${PUBSUB_EMULATOR_HOST##*:}
[[ -n $host && $host != *:* && $port =~ ^[0-9]+$ ]] ||
  die "PUBSUB_EMULATOR_HOST must look like HOST:PORT (IPv4 or name), got '$PUBSUB_EMULATOR_HOST'"
if ! [[ $MAX_DELIVERY_ATTEMPTS =~ ^[1-9][0-9]*$ ]] || ((MAX_DELIVERY_ATTEMPTS < 5 || MAX_DELIVERY_ATTEMPTS > 100)); then
  die "MAX_DELIVERY_ATTEMPTS must be between 5 and 100 (Pub/Sub limit), got '$MAX_DELIVERY_ATTEMPTS'"
fi
if [[ ! -x $PUBSUB_EMULATOR_BIN ]]; then
  die "Pub/Sub emulator not found at $PUBSUB_EMULATOR_BIN.
  Install it with: apt-get install google-cloud-cli-pubsub-emulator
  (from Google's cloud-sdk apt repository, https://packages.cloud.google.com/apt cloud-sdk main)"
fi
command -v java >/dev/null || die "java not found; the emulator needs Java 11+ (apt-get install -y openjdk-17-jre-headless)"
for tool in curl jq ss setsid flock; do
  command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install -y curl jq iproute2 util-linux)"
done

state_dir=$EKKLESIA_STATE_DIR
pid_file=$state_dir/pubsub.pid
log_file=$state_dir/pubsub.log
mkdir -p "$state_dir"

# Serialise concurrent runs (e.g. two test jobs calling up.sh at once).
# The emulator is started with fd 9 closed so it does not inherit the lock.
exec 9>"$state_dir/pubsub.lock"
flock -w $((start_timeout + 30)) 9 || die "another pubsub-up.sh holds $state_dir/pubsub.lock"

project=$PUBSUB_PROJECT_ID
base=http://$host:$port/v1/projects/$project

# --- helpers ----------------------------------------------------------------
# True if $1 is a live (non-zombie) process.
alive() {
  local st
  [[ -r /proc/$1/stat ]] || return 1
  st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}
# True if $1 is a live emulator JVM (guards against pid reuse).
is_emulator() {
  [[ $1 =~ ^[0-9]+$ ]] && alive "$1" &&
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'cloud-pubsub-emulator'
}
# HTTP status of a cheap emulator request ("000" if nothing answers).
probe() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base/topics" 2>/dev/null || true
}
# Pid of whatever listens on $port (needs root to see other users' processes).
listener_pid() {
  ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true
}
log_tail() { tail -n 20 "$log_file" 2>/dev/null | sed 's/^/    /' >&2 || true; }

# Wait until the emulator answers; fail early if process $1 dies.
wait_up() {
  local pid=$1 deadline=$((SECONDS + start_timeout))
  until [[ $(probe) == 200 ]]; do
    if ! alive "$pid"; then
      log_tail
      die "emulator process $pid exited during startup; see $log_file (last lines above)"
    fi
    if ((SECONDS >= deadline)); then
      log_tail
      die "emulator did not answer on $host:$port within ${start_timeout}s (pid $pid still running; see $log_file)"
    fi
    sleep 0.5
  done
}

# --- 1. start the emulator if needed --------------------------------------------
recorded=""
if [[ -f $pid_file ]]; then
  recorded=$(<"$pid_file")
  if ! is_emulator "$recorded"; then
    log "removing stale pid file (pid '$recorded' is not a running emulator)"
    rm -f "$pid_file"
    recorded=""
  fi
fi

if [[ $(probe) == 200 ]]; then
  if [[ -n $recorded ]]; then
    log "emulator already running on $host:$port (pid $recorded)"
  else
    log "WARNING: an emulator already answers on $host:$port but was not started by this script (no pid file); using it, down.sh will not stop it"
  fi
elif [[ -n $recorded ]]; then
  log "emulator pid $recorded is running but not answering yet; waiting"
  wait_up "$recorded"
else
  if [[ -n $(ss -ltnH "sport = :$port" 2>/dev/null) ]]; then
    lp=$(listener_pid)
    die "port $port is in use by another program (pid ${lp:-?}: $(tr '\0' ' ' <"/proc/${lp:-0}/cmdline" 2>/dev/null || echo unknown)); set PUBSUB_EMULATOR_HOST to a free HOST:PORT"
  fi
  # Keep the previous log for post-mortems; the emulator logs every request.
  [[ -f $log_file ]] && mv -f "$log_file" "$log_file.prev"
  # The launcher honours CLOUD_PUBSUB_EMULATOR_OPTS (JVM flags). Cap the heap:
  # by default the JVM may grow to 1/4 of RAM, and this is a tiny fake.
  export CLOUD_PUBSUB_EMULATOR_OPTS="${CLOUD_PUBSUB_EMULATOR_OPTS:--Xmx1536m}"
  log "starting emulator: $PUBSUB_EMULATOR_BIN --host=$host --port=$port (log: $log_file)"
  started=$SECONDS
  # setsid: own session, so it survives this shell and its terminal; -w keeps
  # $! meaningful even if setsid has to fork. The launcher script `exec`s java,
  # so normally $! is the JVM itself. No stdin, output to the log, lock fd closed.
  setsid -w nohup "$PUBSUB_EMULATOR_BIN" --host="$host" --port="$port" \
    </dev/null >"$log_file" 2>&1 9>&- &
  launcher=$!
  wait_up "$launcher"

  # Record the pid of the process that actually listens: the JVM.
  jpid=$(listener_pid)
  if ! is_emulator "${jpid:-x}" || [[ $(cat "/proc/$jpid/comm") != java ]]; then
    die "emulator answers but the listening process (pid '${jpid:-?}') is not the emulator JVM; not recording it"
  fi
  if [[ $jpid != "$launcher" ]]; then
    log "note: launcher pid $launcher differs from JVM pid $jpid; recording the JVM"
  fi
  echo "$jpid" >"$pid_file.tmp" && mv -f "$pid_file.tmp" "$pid_file"
  log "emulator up after $((SECONDS - started))s, pid $jpid"
fi

# --- 2. topics and subscriptions (REST) -------------------------------------------
# api METHOD PATH [JSON] -> sets api_code and api_body. The emulator answers
# 404 "Not Found" to requests without a JSON Content-Type, so always send it.
api() {
  local args=(-sS -X "$1" --max-time 10 -H 'Content-Type: application/json' -w '\n%{http_code}')
  [[ $# -ge 3 ]] && args+=(--data "$3")
  local out
  out=$(curl "${args[@]}" "$base/$2") || die "request $1 $base/$2 failed (emulator down?)"
  api_code=${out##*$'\n'}
  api_body=${out%$'\n'*}
}

# ensure KIND NAME JSON: PUT creates; 409 ALREADY_EXISTS is fine.
ensure() {
  api PUT "$1/$2" "$3"
  case $api_code in
    200) log "created $1/$2" ;;
    409) log "exists  $1/$2" ;;
    *) die "creating $1/$2 failed: HTTP $api_code $api_body" ;;
  esac
}

topic_path() { echo "projects/$project/topics/$1"; }

ensure topics "$PUBSUB_TOPIC" '{}'
ensure topics "$PUBSUB_DEAD_LETTER_TOPIC" '{}'
# The worker consumes the dead-letter subscription too (a dead-lettered vote is committed like
# any other), so it retries with the same backoff and has no dead-letter policy of its own.
ensure subscriptions "$PUBSUB_DEAD_LETTER_SUBSCRIPTION" "$(jq -nc \
  --arg t "$(topic_path "$PUBSUB_DEAD_LETTER_TOPIC")" --argjson ack "$ack_deadline" \
  '{topic: $t, ackDeadlineSeconds: $ack, retryPolicy: {minimumBackoff: "1s", maximumBackoff: "10s"}}')"

# The worker subscription's wanted settings (the updatable part).
want=$(jq -nc --arg dlt "$(topic_path "$PUBSUB_DEAD_LETTER_TOPIC")" \
  --argjson n "$MAX_DELIVERY_ATTEMPTS" --argjson ack "$ack_deadline" '{
    ackDeadlineSeconds: $ack,
    deadLetterPolicy: {deadLetterTopic: $dlt, maxDeliveryAttempts: $n},
    retryPolicy: {minimumBackoff: "1s", maximumBackoff: "10s"}
  }')
sub_topic=$(topic_path "$PUBSUB_TOPIC")
ensure subscriptions "$PUBSUB_SUBSCRIPTION" "$(jq -c --arg t "$sub_topic" '. + {topic: $t}' <<<"$want")"

# If it already existed (e.g. MAX_DELIVERY_ATTEMPTS changed since), converge it.
api GET "subscriptions/$PUBSUB_SUBSCRIPTION"
[[ $api_code == 200 ]] || die "GET subscription $PUBSUB_SUBSCRIPTION failed: HTTP $api_code $api_body"
actual=$api_body
[[ $(jq -r .topic <<<"$actual") == "$sub_topic" ]] ||
  die "subscription $PUBSUB_SUBSCRIPTION is attached to $(jq -r .topic <<<"$actual"), not $sub_topic; restart the emulator (down.sh && up.sh)"
if ! jq -e --argjson w "$want" '{ackDeadlineSeconds, deadLetterPolicy, retryPolicy} == $w' <<<"$actual" >/dev/null; then
  log "updating subscriptions/$PUBSUB_SUBSCRIPTION to the wanted ack deadline / dead-letter / retry policy"
  api PATCH "subscriptions/$PUBSUB_SUBSCRIPTION" "$(jq -nc --argjson w "$want" \
    '{subscription: $w, updateMask: "ackDeadlineSeconds,deadLetterPolicy,retryPolicy"}')"
  [[ $api_code == 200 ]] || die "updating subscription failed: HTTP $api_code $api_body"
  api GET "subscriptions/$PUBSUB_SUBSCRIPTION"
  actual=$api_body
fi

# Verify from the emulator's point of view, not from what we sent.
jq -e --argjson w "$want" '{ackDeadlineSeconds, deadLetterPolicy, retryPolicy} == $w' <<<"$actual" >/dev/null ||
  die "subscription $PUBSUB_SUBSCRIPTION does not have the expected settings: $actual"
log "verified subscriptions/$PUBSUB_SUBSCRIPTION: $(jq -c '{ackDeadlineSeconds, deadLetterPolicy, retryPolicy}' <<<"$actual")"
log "ready: PUBSUB_EMULATOR_HOST=$PUBSUB_EMULATOR_HOST project=$project"
