#!/usr/bin/env bash
# The longer same-run comparison: this WAL against the naive WAL, okaywal and the disk's own
# limit, printing the target ratios (benches/compare.rs, full profile) and writing the JSON
# report, the throughput plot and the end-to-end plot (connector → reference broker against
# the WAL alone).
# Usage: scripts/compare.sh [--backend uring|portable|both] [--seconds S] [--label NAME]
#   defaults: both backends, 3 s per run, label "local".
set -euo pipefail
cd "$(dirname "$0")/.."
backend=both seconds=3 label=local
while [[ $# -gt 0 ]]; do
    case $1 in
        --backend) backend=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --label) label=$2; shift 2 ;;
        -h|--help) sed -n "2,7p" "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done
target=${CARGO_TARGET_DIR:-target}
PROCMOND_WAL_BENCH_BACKEND="$backend" PROCMOND_WAL_BENCH_SECONDS="$seconds" \
PROCMOND_WAL_BENCH_WINDOW=256 PROCMOND_WAL_BENCH_LABEL="$label" \
  cargo bench --bench compare -- --full
report="$target/procmond-wal-bench/compare-$label.json"
python3 scripts/plot-throughput.py "$report" --svg "$target/procmond-wal-bench/throughput-$label.svg" \
  --markdown "$target/procmond-wal-bench/tables-$label.md" \
  --e2e-svg "$target/procmond-wal-bench/e2e-$label.svg"
echo "report: $report"
