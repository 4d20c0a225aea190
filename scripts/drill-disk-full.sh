#!/usr/bin/env bash
# Long drill (drill_disk_full): the WAL's tmpfs fills N times; clear ENOSPC error, nothing durable lost, publishing resumes once the tmpfs is grown, everything delivered.
# Prints one line: "drill disk-full: PASS|FAIL counts…" (exit 0 on PASS).
# Usage: scripts/drill-disk-full.sh [N (default 10)]
set -euo pipefail
source "$(dirname "$0")/drill-common.sh"
run_drill drill_disk_full "${1:-10}"
