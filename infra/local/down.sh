#!/usr/bin/env bash
# Stop the local stack started by up.sh (idempotent).
#
#   infra/local/down.sh              stop the Pub/Sub emulator and the OIDC provider
#   infra/local/down.sh --postgres   also stop PostgreSQL cluster 15/main
#
# The emulator and the OIDC provider are stopped by the pids recorded in
# $EKKLESIA_STATE_DIR/pubsub.pid and oidc.pid and nothing else: SIGTERM, then
# SIGKILL after a bounded wait. PostgreSQL is left running by default because
# it is cheap to keep and slow-ish to restart.
set -euo pipefail

# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

log() { printf '[down] %s\n' "$*"; }
die() { printf '[down] ERROR: %s\n' "$*" >&2; exit 1; }

stop_postgres=0
for arg in "$@"; do
  case $arg in
    --postgres) stop_postgres=1 ;;
    -h | --help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

term_wait=15 # seconds to wait after SIGTERM (the JVM usually exits in 1-3 s, node at once)
kill_wait=5  # seconds to wait after SIGKILL

# Services started by run.sh: SIGTERM lets them drain.
for svc in worker ingest events-svc members-fn prometheus; do
  svc_pid_file=$EKKLESIA_STATE_DIR/$svc.pid
  if [[ -f $svc_pid_file ]]; then
    svc_pid=$(cat "$svc_pid_file")
    if kill -0 "$svc_pid" 2>/dev/null && grep -q "$svc" "/proc/$svc_pid/cmdline" 2>/dev/null; then
      log "stopping $svc (pid $svc_pid)"
      kill -TERM "$svc_pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$svc_pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL "$svc_pid" 2>/dev/null || true
    fi
    rm -f "$svc_pid_file"
  fi
done

pid_file=$EKKLESIA_STATE_DIR/pubsub.pid
port=${PUBSUB_EMULATOR_HOST##*:}

# A zombie still answers `kill -0`, so look at the process state instead.
# (The emulator is reparented to pid 1, which may be slow to reap it.)
alive() {
  local st
  [[ -r /proc/$1/stat ]] || return 1
  st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}
# Guard against pid reuse: only touch a process that is the emulator.
is_emulator() {
  alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'cloud-pubsub-emulator'
}
# Same for the OIDC provider: `node .../infra/local/oidc/provider.mjs`.
is_oidc_provider() {
  alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'oidc/provider\.mjs'
}
# wait_gone PID SECONDS: 0 once the process is gone, 1 on timeout.
wait_gone() {
  local deadline=$((SECONDS + $2))
  while alive "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# --- Pub/Sub emulator -----------------------------------------------------------
if [[ ! -f $pid_file ]]; then
  log "emulator: no pid file ($pid_file), nothing to stop"
else
  pid=$(<"$pid_file")
  if ! [[ $pid =~ ^[0-9]+$ ]]; then
    log "emulator: pid file contains '$pid', not a pid; removing it"
  elif ! is_emulator "$pid"; then
    log "emulator: pid $pid is not running (or is not the emulator); removing stale pid file"
  else
    log "emulator: stopping pid $pid (SIGTERM)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$term_wait"; then
      log "emulator: pid $pid still alive after ${term_wait}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" "$kill_wait" || die "emulator pid $pid survived SIGKILL (pid file kept: $pid_file)"
    fi
    log "emulator: stopped"
  fi
  rm -f "$pid_file"
fi
# Tell the user if something still serves the port (e.g. an emulator started
# by hand or via gcloud); we deliberately do not kill what we did not start.
if [[ $port =~ ^[0-9]+$ ]] && command -v ss >/dev/null &&
  [[ -n $(ss -ltnH "sport = :$port" 2>/dev/null) ]]; then
  log "WARNING: something is still listening on port $port (not started by pubsub-up.sh): $(ss -ltnpH "sport = :$port" | awk '{ print $NF }')"
fi

# --- OIDC provider ----------------------------------------------------------------
oidc_pid_file=$EKKLESIA_STATE_DIR/oidc.pid
if [[ ! -f $oidc_pid_file ]]; then
  log "oidc: no pid file ($oidc_pid_file), nothing to stop"
else
  pid=$(<"$oidc_pid_file")
  if ! [[ $pid =~ ^[0-9]+$ ]]; then
    log "oidc: pid file contains '$pid', not a pid; removing it"
  elif ! is_oidc_provider "$pid"; then
    log "oidc: pid $pid is not running (or is not the provider); removing stale pid file"
  else
    log "oidc: stopping pid $pid (SIGTERM)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$term_wait"; then
      log "oidc: pid $pid still alive after ${term_wait}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" "$kill_wait" || die "oidc provider pid $pid survived SIGKILL (pid file kept: $oidc_pid_file)"
    fi
    log "oidc: stopped"
  fi
  rm -f "$oidc_pid_file" "$EKKLESIA_STATE_DIR/oidc.config"
fi
if [[ $OIDC_PORT =~ ^[0-9]+$ ]] && command -v ss >/dev/null &&
  [[ -n $(ss -ltnH "sport = :$OIDC_PORT" 2>/dev/null) ]]; then
  log "WARNING: something is still listening on port $OIDC_PORT (not started by oidc-up.sh): $(ss -ltnpH "sport = :$OIDC_PORT" | awk '{ print $NF }')"
fi

# --- PostgreSQL -------------------------------------------------------------------
if ((stop_postgres)); then
  ver=$EKKLESIA_PG_VERSION cluster=$EKKLESIA_PG_CLUSTER
  command -v pg_lsclusters >/dev/null || die "pg_lsclusters not found; is PostgreSQL installed?"
  status=$(pg_lsclusters -h | awk -v v="$ver" -v c="$cluster" '$1 == v && $2 == c { print $4 }')
  if [[ -z $status ]]; then
    log "postgres: cluster $ver/$cluster does not exist, nothing to stop"
  elif [[ $status == online* ]]; then
    [[ $(id -u) -eq 0 ]] || die "stopping PostgreSQL needs root"
    log "postgres: stopping cluster $ver/$cluster"
    pg_ctlcluster "$ver" "$cluster" stop || die "pg_ctlcluster $ver $cluster stop failed"
    log "postgres: stopped"
  else
    log "postgres: cluster $ver/$cluster already $status"
  fi
else
  log "postgres: left running (use --postgres to stop it)"
fi
