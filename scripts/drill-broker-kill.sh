#!/usr/bin/env bash
# Long drill (drill_broker_kill): the broker is killed with SIGKILL and restarted N times while events are published; every event reaches a subscriber in order with no gap, all acknowledged.
# Prints one line: "drill broker-kill: PASS|FAIL counts…" (exit 0 on PASS).
# Usage: scripts/drill-broker-kill.sh [N (default 200)]
set -euo pipefail
source "$(dirname "$0")/drill-common.sh"
run_drill drill_broker_kill "${1:-200}"
