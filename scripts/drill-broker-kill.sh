#!/usr/bin/env bash
# Long drill (drill_broker_kill): the broker is killed with SIGKILL and restarted N times while events are published; a subscriber that stays up across all kills (resubscribing from its positions) must receive every sequence exactly once, in order (missing=0 duplicates=0), and everything must be acknowledged.
# Prints one line: "drill broker-kill: PASS|FAIL counts…" (exit 0 on PASS).
# Usage: scripts/drill-broker-kill.sh [N (default 200)]
set -euo pipefail
source "$(dirname "$0")/drill-common.sh"
run_drill drill_broker_kill "${1:-200}"
