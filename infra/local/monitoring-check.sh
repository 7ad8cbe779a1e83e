#!/usr/bin/env bash
# Check the Prometheus rules and run their unit tests.
#
#   infra/local/monitoring-check.sh
#
# Installs Debian's `prometheus` package if promtool is missing (it brings promtool; its own
# service is not needed and is left stopped), then `promtool check config`/`check rules` and
# `promtool test rules` over infra/monitoring; then checks every alert's runbook link has its
# section in docs/runbook.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
monitoring=$(cd "$here/../monitoring" && pwd)

if ! command -v promtool >/dev/null; then
  echo "== installing Debian's prometheus package (for promtool)"
  # policy-rc.d keeps the package from starting its own server.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
  rm -f /usr/sbin/policy-rc.d
fi
cd "$monitoring"
promtool check config prometheus.yml
promtool check rules rules/*.yml
promtool test rules tests/*.yml

# Every alert's runbook link must lead somewhere: docs/runbook.md has a heading per alert (its
# anchor is the alert name in lower case).
runbook="$here/../../docs/runbook.md"
missing=0
while read -r anchor; do
  if ! grep -qix "### ${anchor}" <(sed -n 's/^### \(Ekklesia[A-Za-z0-9]*\)$/### \1/p' "$runbook"); then
    echo "runbook: no section for the alert link #$anchor in docs/runbook.md" >&2
    missing=1
  fi
done < <(grep -ho 'docs/runbook.md#[a-z0-9-]*' rules/*.yml | sed 's/.*#//' | sort -u)
[ "$missing" = 0 ] && echo "runbook: a section for every alert"
exit "$missing"
