#!/usr/bin/env bash
# Long drill (drill_legacy_broker): N silent brokers that never answer in turn; delivery continues in written-to-socket mode, every event once and in order.
# Prints one line: "drill legacy-broker: PASS|FAIL counts…" (exit 0 on PASS).
# Usage: scripts/drill-legacy-broker.sh [N (default 50)]
set -euo pipefail
source "$(dirname "$0")/drill-common.sh"
run_drill drill_legacy_broker "${1:-50}"
