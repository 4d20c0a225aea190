#!/usr/bin/env bash
# Replay/verify speed: record bytes per CPU second of `procmond-wal verify DIR` on a log of
# at least GB gigabytes (10^9 bytes) of 256-byte events.
#
# Builds the release binary, writes the log once with `procmond-wal load` (segments sized to
# the run), runs one untimed verify to warm everything, then times RUNS verifies with
# /usr/bin/time (user + system CPU). With --baseline PATH, another build of procmond-wal (e.g.
# one built from main) verifies the same log, alternating run by run with this one, so the
# two are measured under the same machine load. Two references are measured in the same run:
# reading the segment files with O_DIRECT (`dd iflag=direct`, how verify reads them) and
# through the page cache (`cat`), each as file bytes per CPU second: the floor of what any
# reader of these files pays. `verify` reads with O_DIRECT, so it does not use the page cache.
#
# Usage: scripts/bench-replay.sh [--baseline PATH] [--runs N] [--dir DIR] [--keep] [GB]
#   GB defaults to 1. --dir reuses (or creates) the log there instead of a temporary one;
#   --keep leaves a temporary log in place. Prints one line per measurement and a summary.
set -euo pipefail

gb=1 runs=5 baseline="" dir="" keep=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --baseline) baseline=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        -*) echo "unknown option: $1 (see --help)" >&2; exit 64 ;;
        *) gb=$1; shift ;;
    esac
done
if [[ -n $baseline && ! -x $baseline ]]; then
    echo "baseline $baseline is not an executable" >&2
    exit 64
fi
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
(cd "$repo" && cargo build --release --quiet)
bin=$repo/target/release/procmond-wal

cleanup_dir=""
trap 'rm -f "${times:-}"; [[ -z $cleanup_dir ]] || rm -rf "$cleanup_dir"' EXIT
if [[ -z $dir ]]; then
    dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-replay.XXXXXX")/wal
    [[ $keep == 1 ]] || cleanup_dir=$(dirname "$dir")
fi
event_bytes=256
# load's --event-bytes is the record's size on disk, so this many events hold GB of records.
events=$(python3 -c "import math; print(math.ceil($gb * 1e9 / $event_bytes))")
if [[ ! -d $dir ]] || ! "$bin" verify "$dir" >/dev/null 2>&1; then
    rm -rf "$dir"
    echo "writing $events events of $event_bytes bytes to $dir ..." >&2
    "$bin" load --dir "$dir" --events "$events" --event-bytes "$event_bytes" >/dev/null
fi
stats=$("$bin" stats --json "$dir")
record_bytes=$(jq -r .record_bytes <<<"$stats")
file_bytes=$(jq -r .file_bytes <<<"$stats")
log_events=$(jq -r .events <<<"$stats")
echo "log: $dir: $log_events events, $record_bytes record bytes in $file_bytes file bytes" \
     "($(jq -r .segment_count <<<"$stats") segments)"

# CPU seconds (user + system) of a command; its output is discarded.
times=$(mktemp)
cpu_seconds() {
    /usr/bin/time -f "%U %S" -o "$times" "$@" >/dev/null 2>&1
    awk '{ printf "%.3f", $1 + $2 }' "$times"
}
rate() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.2f", b / s / 1e9; else print "inf" }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Warm-up: one verify of each binary (and its exit code: a damaged log is no benchmark).
"$bin" verify "$dir" >/dev/null
[[ -z $baseline ]] || "$baseline" verify "$dir" >/dev/null

segments=("$dir"/*.wal)
new_cpu=() base_cpu=() direct_cpu=() cat_cpu=()
for ((run = 1; run <= runs; run++)); do
    new_cpu+=("$(cpu_seconds "$bin" verify "$dir")")
    if [[ -n $baseline ]]; then
        base_cpu+=("$(cpu_seconds "$baseline" verify "$dir")")
    fi
    direct_cpu+=("$(cpu_seconds sh -c 'for f; do dd if="$f" of=/dev/null bs=1M iflag=direct status=none; done' sh "${segments[@]}")")
    cat_cpu+=("$(cpu_seconds cat "${segments[@]}")")
    echo "run $run: verify ${new_cpu[-1]} s${baseline:+, baseline verify ${base_cpu[-1]} s}," \
         "dd iflag=direct ${direct_cpu[-1]} s, cat ${cat_cpu[-1]} s (CPU)"
done

new_median=$(printf '%s\n' "${new_cpu[@]}" | median)
direct_median=$(printf '%s\n' "${direct_cpu[@]}" | median)
cat_median=$(printf '%s\n' "${cat_cpu[@]}" | median)
echo "median of $runs runs (CPU seconds, user + system):"
echo "  verify (this build)      $new_median s  $(rate "$record_bytes" "$new_median") GB/s of records"
if [[ -n $baseline ]]; then
    base_median=$(printf '%s\n' "${base_cpu[@]}" | median)
    echo "  verify (baseline)        $base_median s  $(rate "$record_bytes" "$base_median") GB/s of records" \
         "(this build: $(awk -v a="$base_median" -v b="$new_median" 'BEGIN { printf "%.2f", a / b }')x)"
fi
echo "  dd iflag=direct (floor)  $direct_median s  $(rate "$file_bytes" "$direct_median") GB/s of file bytes"
echo "  cat, page cache          $cat_median s  $(rate "$file_bytes" "$cat_median") GB/s of file bytes"
echo "  uptime: $(uptime)"
