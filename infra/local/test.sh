#!/usr/bin/env bash
# Run the whole test suite against the real local stack.
#
#   infra/local/test.sh [extra cargo test arguments]
#
# Brings up PostgreSQL 15 (installing it if missing) and Google's Pub/Sub emulator, applies the
# migrations and the local service logins, then runs every crate's tests, formatting and lint
# checks, then the checks by tools the project did not write (schemathesis against the running
# stack, cargo fuzz), each on a short fixed budget (docs/testing.md has the long runs). Each test creates its own database (cloned from a migrated template) and its own topic
# and subscription, so the suite can run in parallel and leaves the dev database alone.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
# Builds read the committed query data (.sqlx/) and need no database; sqlx-check.sh below is
# the one online build, and it fails when .sqlx/ is stale.
export SQLX_OFFLINE=true

# A fresh emulator per run: it never forgets a topic or subscription, and keeps serving the
# streams of stopped clients (docs/emulator.md), so one that ran earlier suites carries their
# load and heap into this one. This also stops services run.sh started.
"$here/down.sh" >/dev/null
"$here/up.sh" >/dev/null
"$here/migrate.sh"

cd "$root"
# Test databases of earlier runs are dropped; each test makes its own.
psql -X -q -w "$EKKLESIA_ADMIN_DATABASE_URL" -At -c \
  "SELECT datname FROM pg_database WHERE datname LIKE 'ekklesia_test_%'" |
  while read -r db; do psql -X -q -w "$EKKLESIA_ADMIN_DATABASE_URL" -c "DROP DATABASE IF EXISTS \"$db\"" || true; done

echo "== promtool: the alert rules and their unit tests"
"$here/monitoring-check.sh"
echo "== migration policy: every migration expands the schema or is a marked contract step"
"$here/migration-check.sh"
echo "== terraform fmt, checkov, hadolint: the deployment"
"$here/infra-check.sh"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== test support stays out of the services: no normal dependency on testkit"
for crate in ingest worker events-svc members-fn; do
  if cargo tree --quiet -e normal -p "$crate" | grep -qE '(^| )testkit v'; then
    echo "$crate links testkit (test support) into its binary: make it a dev-dependency" >&2
    exit 1
  fi
done
echo "== sqlx-check: the committed offline query data (.sqlx/) matches the queries"
"$here/sqlx-check.sh"
echo "== cargo deny: licences, bans and sources of every dependency"
"$here/deny.sh"
echo "== cargo test"
cargo test --workspace "$@"

# Tools no one here wrote, each on a fixed, short budget (the long runs: docs/testing.md).
echo "== schemathesis: every listener's OpenAPI document against its answers"
"$here/schemathesis.sh" "${SCHEMATHESIS_EXAMPLES:-20}"
echo "== restore drill: base backup + WAL and logical dump, destroyed, restored both ways, verified"
"$here/restore-drill.sh" --ci
echo "== cargo fuzz: every parser that takes bytes from outside, ${FUZZ_SECONDS:-20} s per target"
FUZZ_BUILD_ARGS="${FUZZ_BUILD_ARGS---dev --sanitizer none}" "$here/fuzz.sh" "${FUZZ_SECONDS:-20}"
"$here/down.sh" >/dev/null
