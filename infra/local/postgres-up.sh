#!/usr/bin/env bash
# Bring up the local PostgreSQL 15 cluster for ekklesia (idempotent).
#
#   infra/local/postgres-up.sh
#
# Installs PostgreSQL 15 if missing, creates/starts cluster 15/main, tunes it
# for tests, creates the non-superuser schema owner role and the database,
# and checks that password login over TCP works. Service roles are created by
# the project's SQL migrations, not here. Must run as root (apt, runuser,
# pg_ctlcluster). Safe to re-run; reloads/restarts only when a setting changed.
set -euo pipefail

# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

log() { printf '[postgres-up] %s\n' "$*"; }
die() { printf '[postgres-up] ERROR: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  -h | --help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
  "") ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

[[ $(id -u) -eq 0 ]] || die "must run as root (needs apt-get, runuser and pg_ctlcluster)"
[[ $PGPORT =~ ^[0-9]+$ ]] || die "PGPORT must be a number, got '$PGPORT'"

ver=$EKKLESIA_PG_VERSION
cluster=$EKKLESIA_PG_CLUSTER
pg_bin=/usr/lib/postgresql/$ver/bin
# Unix socket directory used for the postgres OS user's peer-auth connection.
sock_dir=/var/run/postgresql
ready_timeout=30

# --- 1. install -------------------------------------------------------------
if [[ ! -x $pg_bin/postgres ]]; then
  log "PostgreSQL $ver server not found at $pg_bin/postgres; installing it"
  log "running: apt-get update"
  apt-get update
  log "running: apt-get install -y postgresql"
  DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
  [[ -x $pg_bin/postgres ]] ||
    die "installed 'postgresql' but $pg_bin/postgres is still missing (this script expects Debian 12 / PostgreSQL $ver)"
fi
for tool in pg_lsclusters pg_createcluster pg_ctlcluster runuser; do
  command -v "$tool" >/dev/null || die "'$tool' not found (package postgresql-common / util-linux)"
done

# Prints "<port> <status>" for our cluster, or nothing if it does not exist.
cluster_info() {
  pg_lsclusters -h | awk -v v="$ver" -v c="$cluster" '$1 == v && $2 == c { print $3, $4 }'
}

# --- 2. create cluster --------------------------------------------------------
if [[ -z $(cluster_info) ]]; then
  log "creating cluster $ver/$cluster on port $PGPORT"
  pg_createcluster --port "$PGPORT" "$ver" "$cluster"
fi
read -r port status < <(cluster_info)
[[ $port == "$PGPORT" ]] ||
  die "cluster $ver/$cluster is configured for port $port but PGPORT=$PGPORT; change one of them"

# --- 3. start -----------------------------------------------------------------
wait_ready() {
  local deadline=$((SECONDS + ready_timeout))
  until pg_isready -q -h "$PGHOST" -p "$PGPORT" -t 1; do
    if ((SECONDS >= deadline)); then
      die "PostgreSQL not accepting connections on $PGHOST:$PGPORT after ${ready_timeout}s; see /var/log/postgresql/postgresql-$ver-$cluster.log"
    fi
    sleep 1
  done
}

if [[ $status == online* ]]; then
  log "cluster $ver/$cluster already running on port $PGPORT"
else
  log "starting cluster $ver/$cluster (status: $status)"
  pg_ctlcluster "$ver" "$cluster" start ||
    die "pg_ctlcluster $ver $cluster start failed; see /var/log/postgresql/postgresql-$ver-$cluster.log"
fi
wait_ready

# psql as the postgres OS user over the Unix socket (peer auth). Explicit
# -h/-p/-U/-d override any PG* variables inherited from env.sh; `cd /` avoids
# "could not change directory to /root" warnings.
psql_super() {
  (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 \
    -h "$sock_dir" -p "$PGPORT" -U postgres -d postgres "$@")
}

# --- 4. tune for tests ----------------------------------------------------------
# max_connections: parallel test binaries each open a pool. fsync and
# synchronous_commit stay on so tests see production durability semantics.
declare -A want=([max_connections]=300 [fsync]=on [synchronous_commit]=on)
changed=()
for name in "${!want[@]}"; do
  cur=$(psql_super -At -v name="$name" <<<"SELECT setting FROM pg_settings WHERE name = :'name';")
  if [[ $cur != "${want[$name]}" ]]; then
    log "setting $name = ${want[$name]} (was $cur)"
    # ALTER SYSTEM cannot take a bound parameter; both values are our constants.
    psql_super -c "ALTER SYSTEM SET $name = '${want[$name]}'"
    changed+=("$name")
  fi
done
if ((${#changed[@]})); then
  psql_super -At -c 'SELECT pg_reload_conf()' >/dev/null
  sleep 1 # reload is asynchronous
  # Settings with context=postmaster (max_connections) need a full restart.
  pending=$(psql_super -At -c "SELECT string_agg(name, ',') FROM pg_settings
    WHERE pending_restart AND name IN ('max_connections', 'fsync', 'synchronous_commit')")
  if [[ -n $pending ]]; then
    log "restarting cluster to apply: $pending"
    pg_ctlcluster "$ver" "$cluster" restart ||
      die "pg_ctlcluster $ver $cluster restart failed; see /var/log/postgresql/postgresql-$ver-$cluster.log"
    wait_ready
  fi
else
  log "settings already applied (max_connections=300, fsync=on, synchronous_commit=on)"
fi

# --- 5. owner role and database --------------------------------------------------
# \gexec runs the generated statement only when the WHERE clause matches, which
# makes CREATE idempotent (CREATE DATABASE cannot run inside a DO block).
# The ALTER ROLE runs every time so the role converges to the wanted state
# (login, password, CREATEDB/CREATEROLE, never SUPERUSER).
log "ensuring role $EKKLESIA_DB_OWNER and database $EKKLESIA_DB_NAME"
psql_super -v role="$EKKLESIA_DB_OWNER" -v pw="$EKKLESIA_DB_OWNER_PASSWORD" -v db="$EKKLESIA_DB_NAME" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L CREATEDB CREATEROLE NOSUPERUSER NOREPLICATION NOBYPASSRLS', :'role', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'role')
FROM pg_database WHERE datname = :'db' AND pg_get_userbyid(datdba) <> :'role' \gexec
SQL

# --- 6. verify password login over TCP --------------------------------------------
# -w: never prompt (no stdin in CI). The URL carries the password.
try_login() {
  psql -X -w -At "$1" -c "SELECT current_user || ' super=' || rolsuper FROM pg_roles WHERE rolname = current_user" 2>&1
}
if ! out=$(try_login "$EKKLESIA_ADMIN_DATABASE_URL"); then
  hba=$(psql_super -At -c 'SHOW hba_file')
  die "password login as $EKKLESIA_DB_OWNER via $PGHOST:$PGPORT failed: $out
  Check $hba has e.g. 'host all all 127.0.0.1/32 scram-sha-256' (Debian's default)."
fi
[[ $out == "$EKKLESIA_DB_OWNER super=false" ]] ||
  die "unexpected login check result: '$out' (the owner role must not be a superuser)"
# A wrong password must be rejected, otherwise pg_hba uses 'trust' for TCP.
bad_url="postgres://${EKKLESIA_DB_OWNER}:definitely-wrong-password@${PGHOST}:${PGPORT}/${EKKLESIA_DB_NAME}"
if try_login "$bad_url" >/dev/null; then
  die "login with a WRONG password succeeded: pg_hba.conf trusts TCP connections; use scram-sha-256 for 127.0.0.1/32"
fi
method=$(psql_super -At -c "SELECT auth_method FROM pg_hba_file_rules
  WHERE type = 'host' AND address = '127.0.0.1' AND error IS NULL ORDER BY line_number LIMIT 1")
listen=$(psql_super -At -c 'SHOW listen_addresses')
case $listen in
  localhost | 127.0.0.1 | "localhost,127.0.0.1" | "127.0.0.1,localhost") ;;
  *) log "WARNING: listen_addresses='$listen' (not loopback-only); this script does not change it" ;;
esac

log "ready: PostgreSQL $ver/$cluster on $PGHOST:$PGPORT (listen_addresses=$listen, 127.0.0.1 auth=${method:-?}), db=$EKKLESIA_DB_NAME owner=$EKKLESIA_DB_OWNER"
