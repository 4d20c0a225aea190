#!/usr/bin/env bash
# Long mode of the SIGKILL crash test (tests/wal_crash.rs): a child process appends through the
# WAL and is killed with SIGKILL at a varying point, N times, reopening the same directory
# each time. Prints the number of acknowledged events lost, which must be 0.
# Usage: scripts/crash-loop.sh [N (default 1000)]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-1000}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if PROCMOND_WAL_CRASH_ITERATIONS="$iterations" \
  cargo test --release --test wal_crash -- --nocapture --test-threads=1 >"$log" 2>&1; then
  echo "crash loop: ${iterations} SIGKILLs, acknowledged events lost: 0"
else
  tail -n 40 "$log"
  echo "crash loop FAILED: an acknowledged event was lost or recovery failed (see above)"
  exit 1
fi
