#!/usr/bin/env bash
# Long drill (drill_publisher_kill): the publishing process is killed with SIGKILL and restarted N times; every event reported durable is delivered exactly once, in order.
# Prints one line: "drill publisher-kill: PASS|FAIL counts…" (exit 0 on PASS).
# Usage: scripts/drill-publisher-kill.sh [N (default 200)]
set -euo pipefail
source "$(dirname "$0")/drill-common.sh"
run_drill drill_publisher_kill "${1:-200}"
