#!/usr/bin/env bash
# Check the Prometheus rules and run their unit tests.
#
#   infra/local/monitoring-check.sh
#
# Installs Debian's `prometheus` package if promtool is missing (it brings promtool; its own
# service is not needed and is left stopped), then `promtool check config`/`check rules` and
# `promtool test rules` over infra/monitoring.
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
