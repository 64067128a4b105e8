#!/usr/bin/env bash
# Installs Debian's prometheus package for its `promtool`, which checks and unit-tests the
# chart's alerting rules (tests/integration/chart/test_alert_rules.py). The package's
# server is not started: the tests run `promtool test rules` only. Safe to run again.
set -euo pipefail

if command -v promtool >/dev/null; then
    echo "promtool: present"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "promtool: not installed; run as root: apt-get install -y --no-install-recommends prometheus" >&2
    exit 1
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
    >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}
echo "promtool: installed ($(promtool --version 2>&1 | head -1))"
