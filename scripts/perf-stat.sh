#!/usr/bin/env bash
# Counts what one event costs: cycles and instructions (when the VM exposes a PMU), CPU
# time, context switches and system calls, each divided by the events the run handled
# (made durable for `cpu` and `latency`, verified for `replay`). Installs perf when missing,
# explains and exits 2 when perf cannot run here.
#
# Usage: scripts/perf-stat.sh [cpu|replay|latency] [--events N] [--publishers C]
#            [--event-bytes B] [--inflight W] [--backend auto|uring|portable] [--out DIR]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/perf-common.sh
source "$REPO/scripts/perf-common.sh"
parse_args '2,8p' "$@"
ensure_perf
prepare_workload

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
events=$(workload_events "$work/out.json")

echo "target $TARGET: $events events ($PUBLISHERS publishers, $EVENT_BYTES B, inflight $INFLIGHT, $BACKEND); load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work/stat.csv" "$events" "${RECORD_BYTES:-0}" "$work/out.json" "$WORKLOAD_KIND" <<'PY'
import json, sys
path, events, record_bytes, out, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
print(f"{'counter':<34}{'total':>16}{'per event':>14}")
task_clock_ms = None
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
    per_event = total / max(events, 1)
    if unit == "msec":
        task_clock_ms = total
        # CPU time per event reads better in microseconds.
        label, per_event_text = f"{name} (msec; per event µs)", f"{per_event * 1000:.3f}"
    else:
        label, per_event_text = (f"{name} ({unit})" if unit else name), f"{per_event:.3f}"
    print(f"{label:<34}{total:>16.0f}{per_event_text:>14}")
if kind == "load":
    summary = json.load(open(out))
    for key in ("cpu_us_per_event", "ring_cpu_us_per_event", "verify_cpu_us_per_event",
                "events_per_s", "records_per_sync"):
        if summary.get(key) is not None:
            print(f"load reports {key}: {summary[key]:.3f}")
    latency = summary.get("latency_us", {})
    if latency:
        print(f"load reports latency µs: p50 {latency['p50']} p99 {latency['p99']}")
if kind == "verify" and record_bytes and task_clock_ms:
    print(f"record bytes ÷ CPU time: {record_bytes / (task_clock_ms / 1000) / 1e9:.3f} GB/s "
          f"({record_bytes} record bytes)")
PY
[[ $syscalls_from == perf ]] || echo "(system calls: not measured, see note above)"
