#!/usr/bin/env bash
# The migration policy's check (docs/migrations.md), for CI and before a commit.
#
#   infra/local/migration-check.sh [DIR]      (default: infra/migrations)
#
# Refuses a migration that drops, renames or retypes a table, column or function, removes a
# privilege or a default, or tightens a constraint (NOT NULL, CHECK, UNIQUE, a foreign key,
# row-level security...) on a table that existed before it, unless it is marked as the
# contract step of an earlier expand step (`-- contract: <version>_<description>`); and any
# edit of the migrations checked in before the policy (their names and checksums are listed
# in shared/src/migration_policy.rs). No database needed. Exit 0: passes; 1: refused.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
cargo run --quiet -p shared --bin migration-check -- "${1:-infra/migrations}"
