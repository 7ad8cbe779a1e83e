#!/usr/bin/env bash
# Start the local OpenID Connect provider (idempotent).
#
#   infra/local/oidc-up.sh
#
# Runs infra/local/oidc/provider.mjs (the `oidc-provider` npm package on Node.js)
# at $OIDC_ISSUER unless it already answers there. Installs its node_modules with
# `npm ci` first when they are missing or older than package-lock.json. Records
# the pid in $EKKLESIA_STATE_DIR/oidc.pid (log: oidc.log). One client,
# $OIDC_CLIENT_ID / $OIDC_CLIENT_SECRET (client_secret_post, PKCE S256), and no
# login page: the account is the authorization request's login_hint (a
# kennitala). Keys, sessions and codes live in memory. Stop it with down.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"

log() { printf '[oidc-up] %s\n' "$*"; }
die() { printf '[oidc-up] ERROR: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  -h | --help) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
  "") ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

start_timeout=20
oidc_dir=$here/oidc
discovery=${OIDC_ISSUER%/}/.well-known/openid-configuration

# --- checks -----------------------------------------------------------------
if ! [[ $OIDC_PORT =~ ^[1-9][0-9]{0,4}$ ]] || ((OIDC_PORT > 65535)); then
  die "OIDC_PORT must be a TCP port (1-65535), got '$OIDC_PORT'"
fi
[[ $OIDC_ISSUER =~ ^http://[^/?#]+/?$ ]] ||
  die "OIDC_ISSUER must look like http://HOST:PORT (no path), got '$OIDC_ISSUER'"
for tool in node npm; do
  command -v "$tool" >/dev/null ||
    die "'$tool' not found; the local OIDC provider needs Node.js 18 or newer with npm (apt-get install -y nodejs npm)"
done
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) || die "'node -p' failed; is $(command -v node) Node.js?"
((node_major >= 18)) || die "Node.js $(node --version) is too old; oidc-provider 8 needs 18 or newer (apt-get install -y nodejs npm)"
for tool in curl jq ss setsid flock sha256sum; do
  command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install -y curl jq iproute2 util-linux coreutils)"
done
[[ -f $oidc_dir/provider.mjs && -f $oidc_dir/package-lock.json ]] ||
  die "$oidc_dir/provider.mjs or package-lock.json is missing"

state_dir=$EKKLESIA_STATE_DIR
pid_file=$state_dir/oidc.pid
log_file=$state_dir/oidc.log
mkdir -p "$state_dir"

# Serialise concurrent runs (e.g. two test jobs calling up.sh at once); this
# also keeps two `npm ci` from writing node_modules at the same time. The
# provider is started with fd 9 closed so it does not inherit the lock.
exec 9>"$state_dir/oidc.lock"
flock -w $((start_timeout + 120)) 9 || die "another oidc-up.sh holds $state_dir/oidc.lock"

# --- helpers ----------------------------------------------------------------
# True if $1 is a live (non-zombie) process.
alive() {
  local st
  [[ -r /proc/$1/stat ]] || return 1
  st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}
# True if $1 is a live `node .../oidc/provider.mjs` (guards against pid reuse).
is_provider() {
  [[ $1 =~ ^[0-9]+$ ]] && alive "$1" &&
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'oidc/provider\.mjs'
}
# The issuer named by the discovery document at $OIDC_ISSUER ("" if none answers).
probe() {
  curl -fsS --max-time 2 "$discovery" 2>/dev/null | jq -r '.issuer // empty' 2>/dev/null || true
}
# Pid of whatever listens on $OIDC_PORT (needs root to see other users' processes).
listener_pid() {
  ss -ltnpH "sport = :$OIDC_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true
}
log_tail() { tail -n 20 "$log_file" 2>/dev/null | sed 's/^/    /' >&2 || true; }

# Settings the running provider was started with; compared on later runs.
fingerprint() {
  {
    printf '%s\n' "$OIDC_PORT" "$OIDC_ISSUER" "$OIDC_CLIENT_ID" "$OIDC_CLIENT_SECRET" "$OIDC_REDIRECT_URI"
    cat "$oidc_dir/provider.mjs" "$oidc_dir/package-lock.json"
  } | sha256sum | cut -d' ' -f1
}

# Wait until discovery answers with our issuer; fail early if process $1 dies.
wait_up() {
  local pid=$1 deadline=$((SECONDS + start_timeout)) got
  while :; do
    got=$(probe)
    [[ $got == "${OIDC_ISSUER%/}" ]] && return 0
    if ! alive "$pid"; then
      log_tail
      die "provider process $pid exited during startup; see $log_file (last lines above)"
    fi
    if ((SECONDS >= deadline)); then
      log_tail
      die "provider did not answer $discovery within ${start_timeout}s (pid $pid still running; see $log_file)"
    fi
    sleep 0.2
  done
}

# --- 1. already running? ------------------------------------------------------
recorded=""
if [[ -f $pid_file ]]; then
  recorded=$(<"$pid_file")
  if ! is_provider "$recorded"; then
    log "removing stale pid file (pid '$recorded' is not a running provider)"
    rm -f "$pid_file" "$state_dir/oidc.config"
    recorded=""
  fi
fi

answering=$(probe)
if [[ -n $answering ]]; then
  [[ $answering == "${OIDC_ISSUER%/}" ]] ||
    die "$discovery answers with issuer '$answering', not '$OIDC_ISSUER'; stop that provider or change OIDC_PORT/OIDC_ISSUER"
  if [[ -n $recorded ]]; then
    log "provider already running at $OIDC_ISSUER (pid $recorded)"
    if [[ $(cat "$state_dir/oidc.config" 2>/dev/null) != "$(fingerprint)" ]]; then
      log "WARNING: it was started with other OIDC_* settings or an older provider.mjs/lockfile; run down.sh and oidc-up.sh to restart it"
    fi
  else
    log "WARNING: a provider already answers at $OIDC_ISSUER but was not started by this script (no pid file); using it, down.sh will not stop it"
  fi
  exit 0
fi
if [[ -n $recorded ]]; then
  # Only recorded once it answered (under the lock), so it serves another
  # OIDC_PORT/OIDC_ISSUER than the ones now in the environment, or is wedged.
  die "provider pid $recorded (from $pid_file) is running but $discovery does not answer; it was started with other OIDC_PORT/OIDC_ISSUER settings or hangs (see $log_file); stop it with down.sh first"
fi
if [[ -n $(ss -ltnH "sport = :$OIDC_PORT" 2>/dev/null) ]]; then
  lp=$(listener_pid)
  die "port $OIDC_PORT is in use by another program (pid ${lp:-?}: $(tr '\0' ' ' <"/proc/${lp:-0}/cmdline" 2>/dev/null || echo unknown)); set OIDC_PORT to a free port"
fi

# --- 2. node_modules ----------------------------------------------------------------
# npm ci only when node_modules is missing or was installed from another lockfile
# (we record the lockfile's hash after a successful install).
stamp=$oidc_dir/node_modules/.ekklesia-lock.sha256
lock_sum=$(sha256sum "$oidc_dir/package-lock.json" | cut -d' ' -f1)
if [[ -f $oidc_dir/node_modules/oidc-provider/package.json && $(cat "$stamp" 2>/dev/null) == "$lock_sum" ]]; then
  log "node_modules up to date with package-lock.json"
else
  log "installing node_modules: npm ci --no-audit --no-fund (in $oidc_dir)"
  started=$SECONDS
  (cd "$oidc_dir" && npm ci --no-audit --no-fund 9>&-) ||
    die "npm ci failed in $oidc_dir (is the npm registry reachable?)"
  echo "$lock_sum" >"$stamp"
  log "node_modules installed in $((SECONDS - started))s"
fi
version=$(node -p "require('$oidc_dir/node_modules/oidc-provider/package.json').version" 2>/dev/null || echo '?')

# --- 3. start -------------------------------------------------------------------
# Keep the previous log for post-mortems.
[[ -f $log_file ]] && mv -f "$log_file" "$log_file.prev"
log "starting oidc-provider $version: node $oidc_dir/provider.mjs (issuer $OIDC_ISSUER, log: $log_file)"
started=$SECONDS
# setsid: own session, so it survives this shell and its terminal. No stdin,
# output to the log, lock fd closed. The OIDC_* variables come from env.sh.
(cd "$oidc_dir" && exec setsid -w nohup node "$oidc_dir/provider.mjs" </dev/null >"$log_file" 2>&1 9>&-) &
launcher=$!
wait_up "$launcher"

# Record the pid of the process that actually listens: node.
npid=$(listener_pid)
if ! is_provider "${npid:-x}"; then
  die "provider answers but the listening process (pid '${npid:-?}') is not node .../oidc/provider.mjs; not recording it"
fi
echo "$npid" >"$pid_file.tmp" && mv -f "$pid_file.tmp" "$pid_file"
fingerprint >"$state_dir/oidc.config"
log "provider up after $((SECONDS - started))s, pid $npid"
log "ready: OIDC_ISSUER=$OIDC_ISSUER client $OIDC_CLIENT_ID redirect_uri $OIDC_REDIRECT_URI"
