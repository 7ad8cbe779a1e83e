# shellcheck shell=bash
# Shared settings for the local dev/test stack (PostgreSQL 15 + Pub/Sub emulator
# + OIDC provider).
#
# Usage:  source infra/local/env.sh
#
# Sourced by the other infra/local scripts and safe to source from an
# interactive shell: it only sets variables (no `set -e`, no side effects),
# and every value can be overridden by exporting it before sourcing.
# It must stay valid under `set -u`, hence the ${VAR:-default} forms.

# Where the emulator's and the OIDC provider's pid files and logs live (not inside the repo).
export EKKLESIA_STATE_DIR="${EKKLESIA_STATE_DIR:-${XDG_STATE_HOME:-${HOME:-/tmp}/.local/state}/ekklesia}"

# --- PostgreSQL -------------------------------------------------------------
# Debian 12 ships PostgreSQL 15; the scripts manage the cluster "15/main".
export EKKLESIA_PG_VERSION="${EKKLESIA_PG_VERSION:-15}"
export EKKLESIA_PG_CLUSTER="${EKKLESIA_PG_CLUSTER:-main}"
# PGHOST/PGPORT/PGDATABASE are libpq's own variables, so psql picks them up too.
export PGHOST="${PGHOST:-127.0.0.1}"
export PGPORT="${PGPORT:-5432}"
export EKKLESIA_DB_NAME="${EKKLESIA_DB_NAME:-ekklesia}"
export PGDATABASE="${PGDATABASE:-$EKKLESIA_DB_NAME}"
# Schema owner: runs migrations, creates the service roles. Not a superuser.
export EKKLESIA_DB_OWNER="${EKKLESIA_DB_OWNER:-ekklesia_owner}"
export EKKLESIA_DB_OWNER_PASSWORD="${EKKLESIA_DB_OWNER_PASSWORD:-ekklesia_owner}"
# Admin connection (migrations, test fixtures). Password is URL-safe by default;
# percent-encode it yourself if you override it with special characters.
export EKKLESIA_ADMIN_DATABASE_URL="${EKKLESIA_ADMIN_DATABASE_URL:-postgres://${EKKLESIA_DB_OWNER}:${EKKLESIA_DB_OWNER_PASSWORD}@${PGHOST}:${PGPORT}/${EKKLESIA_DB_NAME}}"

# --- Pub/Sub emulator -------------------------------------------------------
# PUBSUB_EMULATOR_HOST is the variable Google's client libraries look for.
export PUBSUB_EMULATOR_HOST="${PUBSUB_EMULATOR_HOST:-127.0.0.1:8085}"
export PUBSUB_PROJECT_ID="${PUBSUB_PROJECT_ID:-ekklesia-local}"
export PUBSUB_TOPIC="${PUBSUB_TOPIC:-votes}"
export PUBSUB_SUBSCRIPTION="${PUBSUB_SUBSCRIPTION:-votes-worker}"
export PUBSUB_DEAD_LETTER_TOPIC="${PUBSUB_DEAD_LETTER_TOPIC:-votes-dead-letter}"
export PUBSUB_DEAD_LETTER_SUBSCRIPTION="${PUBSUB_DEAD_LETTER_SUBSCRIPTION:-votes-dead-letter-sub}"
# Pub/Sub accepts 5..100; after this many failed deliveries a message goes to
# the dead-letter topic, whose subscription the worker consumes too. Production uses 100 with a
# 10-600 s backoff (shared::pubsub::Topology); the local stack retries faster and sooner.
export MAX_DELIVERY_ATTEMPTS="${MAX_DELIVERY_ATTEMPTS:-10}"
# The emulator's launcher script (it `exec`s java, so its pid is the JVM's).
export PUBSUB_EMULATOR_BIN="${PUBSUB_EMULATOR_BIN:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}"

# --- Local OIDC provider (infra/local/oidc, oidc-provider on Node.js) -------------
# Auto-approving, no login page: the account is the request's login_hint (a
# kennitala). One confidential client (client_secret_post, PKCE S256 required).
export OIDC_PORT="${OIDC_PORT:-8090}"
export OIDC_ISSUER="${OIDC_ISSUER:-http://127.0.0.1:${OIDC_PORT}}"
export OIDC_CLIENT_ID="${OIDC_CLIENT_ID:-ekklesia-local}"
export OIDC_CLIENT_SECRET="${OIDC_CLIENT_SECRET:-local-only-secret}"
# Registered with the provider (with http://localhost:8082/v1/auth/oidc/redirect).
export OIDC_REDIRECT_URI="${OIDC_REDIRECT_URI:-http://127.0.0.1:8082/v1/auth/oidc/redirect}"
