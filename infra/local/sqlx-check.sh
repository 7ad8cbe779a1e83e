#!/usr/bin/env bash
# Checks that the committed offline query data (.sqlx/) is what the code's sqlx::query! macros
# need: builds (cargo check) the crates that use the macros online against the migrated
# database, with the macros writing their data into a temporary directory, and compares that
# directory with .sqlx/. A missing, extra or different file fails the check (exit 1).
#
#   infra/local/sqlx-check.sh            # check (CI runs it right after clippy)
#   infra/local/sqlx-check.sh --write    # refresh .sqlx/ after changing a query, then commit it
#
# Both need the local PostgreSQL up and migrated (infra/local/up.sh, migrate.sh); they use
# EKKLESIA_ADMIN_DATABASE_URL (env.sh), or SQLX_DATABASE_URL if set. Every other build reads
# .sqlx/ with SQLX_OFFLINE=true and needs no database.
#
# Cheap on purpose: cargo check in the usual target folder; only the files holding a query
# macro are touched so the macros run again (their own times are put back afterwards, so the
# next test build does not rebuild them), and the tests and benches are checked only if some
# of them use the macros.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=env.sh
source "$here/env.sh"

write=false
case "${1:-}" in
  --write) write=true ;;
  "") ;;
  -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--write]" >&2; exit 2 ;;
esac

cd "$root"
shopt -s nullglob
fresh=$(mktemp -d)
stamps=$(mktemp -d)
sources=()
restore() {
  for i in "${!sources[@]}"; do
    [ -e "$stamps/$i" ] && touch -r "$stamps/$i" "${sources[$i]}"
  done
  return 0
}
trap 'restore; rm -rf "$fresh" "$stamps"' EXIT

mapfile -t sources < <(git ls-files '*.rs' | xargs grep -lE 'sqlx::query(_as|_scalar)?!' || true)
if [ ${#sources[@]} -eq 0 ]; then
  echo "sqlx-check: no query macros in the workspace" >&2
  exit 1
fi
targets=(--lib --bins)
if printf '%s\n' "${sources[@]}" | grep -qE '(^|/)(tests|benches)/'; then
  targets=(--all-targets)
fi

for i in "${!sources[@]}"; do
  touch -r "${sources[$i]}" "$stamps/$i"
done
touch "${sources[@]}"
started=$(date +%s)
status=0
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$fresh" \
  DATABASE_URL="${SQLX_DATABASE_URL:-$EKKLESIA_ADMIN_DATABASE_URL}" \
  cargo check --workspace "${targets[@]}" --quiet || status=$?
restore
echo "sqlx-check: online cargo check of ${#sources[@]} files with query macros took $(($(date +%s) - started)) s"
if [ "$status" -ne 0 ]; then
  echo "sqlx-check: the online build failed (is the database up and migrated?)" >&2
  exit "$status"
fi

if $write; then
  mkdir -p .sqlx
  rm -f .sqlx/query-*.json
  cp "$fresh"/query-*.json .sqlx/
  echo "sqlx-check: .sqlx/ refreshed ($(find .sqlx -name 'query-*.json' | wc -l) queries); commit it"
  exit 0
fi

problems=0
for f in "$fresh"/query-*.json; do
  name=$(basename "$f")
  if [ ! -f ".sqlx/$name" ]; then
    echo "missing from .sqlx/: $name ($(jq -r .query "$f" | head -c 100 | tr '\n' ' ')...)"
    problems=$((problems + 1))
  elif ! cmp -s "$f" ".sqlx/$name"; then
    echo "different in .sqlx/: $name"
    problems=$((problems + 1))
  fi
done
for f in .sqlx/*; do
  if [ ! -f "$fresh/$(basename "$f")" ]; then
    echo "extra in .sqlx/ (no query uses it): $(basename "$f")"
    problems=$((problems + 1))
  fi
done
if [ "$problems" -ne 0 ]; then
  echo "sqlx-check: .sqlx/ is stale ($problems files). Refresh it with infra/local/sqlx-check.sh --write and commit .sqlx/" >&2
  exit 1
fi
echo "sqlx-check: .sqlx/ matches the code ($(find "$fresh" -name 'query-*.json' | wc -l) queries)"
