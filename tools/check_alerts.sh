#!/usr/bin/env bash
# Check the Prometheus alerting rules in deploy/alerts with promtool: their
# syntax (`check rules`) and their behaviour on recorded series (`test
# rules`). promtool comes with Debian's prometheus package, installed here
# when missing and apt can; without it, the check is skipped and says so.
set -euo pipefail
cd "$(dirname "$0")/../deploy/alerts"
if ! command -v promtool >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 &&
              apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; } || true
    fi
fi
if ! command -v promtool >/dev/null; then
    echo "check_alerts: promtool is not installed and could not be; alert rules not checked" >&2
    exit 0
fi
for rules in *.rules.yml; do
    promtool check rules "$rules"
done
for test in *.test.yml; do
    promtool test rules "$test"
done
