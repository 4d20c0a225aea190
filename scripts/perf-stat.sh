#!/usr/bin/env bash
# Counts what one durable event costs: cycles and instructions (when the VM exposes a PMU),
# CPU time, context switches and system calls, each divided by the events the run made
# durable. Runs `procmond-wal load`; installs perf when missing, explains and exits 2 when
# perf cannot run here.
#
# Usage: scripts/perf-stat.sh [--events N] [--publishers C] [--event-bytes B]
#                             [--inflight W] [--backend auto|uring|portable]
set -euo pipefail

events=200000 publishers=16 event_bytes=256 inflight=64 backend=auto
while [[ $# -gt 0 ]]; do
    case $1 in
        --events) events=$2; shift 2 ;;
        --publishers) publishers=$2; shift 2 ;;
        --event-bytes) event_bytes=$2; shift 2 ;;
        --inflight) inflight=$2; shift 2 ;;
        --backend) backend=$2; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/perf-common.sh
source "$repo/scripts/perf-common.sh"
ensure_perf
prepare_workload "$events" "$publishers" "$event_bytes" "$inflight" "$backend"

counters=task-clock,context-switches,cpu-migrations,page-faults
[[ $PERF_HW == 1 ]] && counters=cycles,instructions,$counters
# System calls come from a tracepoint; it needs tracefs and permission to use it.
if perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
    counters=$counters,raw_syscalls:sys_enter
    syscalls_from=perf
else
    syscalls_from=none
    echo "note: the raw_syscalls tracepoint is unavailable (no tracefs or no permission):" \
         "no system call count" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
perf stat -x, -o "$work/stat.csv" -e "$counters" -- "${WORKLOAD[@]}" >"$work/out.json"

# Events made durable: from the load summary, or summed over the compare bench's runs.
if [[ $WORKLOAD_KIND == load ]]; then
    durable=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events"])' "$work/out.json")
else
    report=$(grep -o '/[^ ]*compare-perf.json' "$work/out.json" | tail -1)
    durable=$(python3 -c 'import json,sys; print(sum(r["events"] for r in json.load(open(sys.argv[1]))["runs"]))' "$report")
fi

echo "durable events: $durable ($publishers publishers, $event_bytes B, inflight $inflight, $backend)"
python3 - "$work/stat.csv" "$durable" <<'PY'
import sys
path, durable = sys.argv[1], int(sys.argv[2])
print(f"{'counter':<34}{'total':>16}{'per event':>14}")
for line in open(path):
    fields = line.strip().split(",")
    if len(fields) < 3 or line.startswith("#"):
        continue
    value, unit, name = fields[0], fields[1], fields[2]
    try:
        total = float(value)
    except ValueError:
        print(f"{name:<34}{value:>16}{'':>14}")
        continue
    per_event = total / max(durable, 1)
    if unit == "msec":
        # CPU time per event reads better in microseconds.
        label, per_event_text = f"{name} (msec; per event µs)", f"{per_event * 1000:.2f}"
    else:
        label, per_event_text = (f"{name} ({unit})" if unit else name), f"{per_event:.3f}"
    print(f"{label:<34}{total:>16.0f}{per_event_text:>14}")
PY
[[ $syscalls_from == perf ]] || echo "(system calls: not measured, see note above)"
