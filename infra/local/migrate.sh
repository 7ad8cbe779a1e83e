#!/usr/bin/env bash
# Apply the SQL migrations to the local database and create the local service logins.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
cd "$here/../.."
cargo run --quiet -p shared --bin migrate
psql -X -q -w -v ON_ERROR_STOP=1 "$EKKLESIA_ADMIN_DATABASE_URL" -f "$here/dev-logins.sql"
