#!/usr/bin/env bash
# Long drill (drill_stall): the broker is stopped (SIGSTOP) N times while 40 MiB of events are published; backpressure engages at 70 % and releases at 50 %, RSS stays bounded, every event arrives after SIGCONT.
# Prints one line: "drill stall: PASS|FAIL counts…" (exit 0 on PASS).
# Usage: scripts/drill-stall.sh [N (default 20)]
set -euo pipefail
source "$(dirname "$0")/drill-common.sh"
run_drill drill_stall "${1:-20}"
