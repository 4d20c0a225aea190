#!/usr/bin/env bash
# Shared by scripts/drill-*.sh: runs one drill test with DRILL_CYCLES=N and prints its
# one-line verdict ("drill NAME: PASS|FAIL counts…"); on failure also the test's last lines.
# Usage (from a drill script): run_drill TEST_NAME N
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

run_drill() {
  local test_name="$1" cycles="$2" log
  log="$(mktemp)"
  trap 'rm -f "$log"' RETURN
  if DRILL_CYCLES="$cycles" cargo test --release --test "$test_name" -- --nocapture --test-threads=1 >"$log" 2>&1; then
    grep -oE 'drill [a-z-]+: (PASS|SKIP).*' "$log" || { tail -n 40 "$log"; echo "drill ${test_name}: FAIL no verdict line"; return 1; }
  else
    tail -n 40 "$log" | grep -v 'drill [a-z-]*: ' || true
    grep -oE 'drill [a-z-]+: .*' "$log" || echo "drill ${test_name}: FAIL (see above)"
    return 1
  fi
}
