# shellcheck shell=bash
# Shared by scripts/perf-record.sh and scripts/perf-stat.sh (sourced, not run): installs
# perf and finds out what it can measure here, parses the common arguments, and builds or
# finds the workload to run. Callers have `set -euo pipefail`.
#
# Targets (the first argument; each can be adjusted with the options below):
#   cpu      `load`: 256-byte events from 16 publishers, 64 in flight each (CPU per event)
#   replay   `verify` of a log of at least 1 GB of 256-byte records written by `load`
#            (kept in $REPLAY_DIR, default target/perf/replay-log, and reused)
#   latency  `load --publishers 1 --inflight 1`: one caller awaiting each append
# Options: --events N --publishers C --event-bytes B --inflight W
#          --backend auto|uring|portable --out DIR
# PROCMOND_WAL_BIN=/path/to/procmond-wal profiles that binary instead of building this
# checkout (e.g. an older revision built elsewhere, for a before/after pair).

# Sets TARGET, EVENTS, PUBLISHERS, EVENT_BYTES, INFLIGHT, BACKEND and OUT from "$@".
# shellcheck disable=SC2034
parse_args() {
    local usage_lines=$1
    shift
    TARGET=cpu
    if [[ $# -gt 0 && $1 != -* ]]; then
        TARGET=$1
        shift
    fi
    case $TARGET in
        cpu) EVENTS=200000 PUBLISHERS=16 EVENT_BYTES=256 INFLIGHT=64 ;;
        latency) EVENTS=5000 PUBLISHERS=1 EVENT_BYTES=256 INFLIGHT=1 ;;
        # About 1.1 GB of records.
        replay) EVENTS=4300000 PUBLISHERS=16 EVENT_BYTES=256 INFLIGHT=64 ;;
        *) echo "unknown target: $TARGET (cpu, replay or latency; see --help)" >&2; exit 64 ;;
    esac
    BACKEND=auto
    OUT=${CARGO_TARGET_DIR:-$REPO/target}/perf
    while [[ $# -gt 0 ]]; do
        case $1 in
            --events) EVENTS=$2; shift 2 ;;
            --publishers) PUBLISHERS=$2; shift 2 ;;
            --event-bytes) EVENT_BYTES=$2; shift 2 ;;
            --inflight) INFLIGHT=$2; shift 2 ;;
            --backend) BACKEND=$2; shift 2 ;;
            --out) OUT=$2; shift 2 ;;
            -h|--help) sed -n "$usage_lines" "$0"; sed -n '5,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
            *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
        esac
    done
}

# Installs perf when missing (Debian: linux-perf; Ubuntu: linux-tools-*), then checks that
# it can count at all. Exits 2 with an explanation when it cannot.
ensure_perf() {
    if ! command -v perf >/dev/null 2>&1; then
        echo "perf not found; installing linux-perf" >&2
        apt-get update -qq >/dev/null 2>&1 || true
        apt-get install -y -qq linux-perf >/dev/null 2>&1 \
            || apt-get install -y -qq linux-tools-generic >/dev/null 2>&1 \
            || true
    fi
    if ! command -v perf >/dev/null 2>&1; then
        cat >&2 <<'MSG'
perf is not available: neither `linux-perf` (Debian) nor `linux-tools-generic` (Ubuntu)
could be installed. Install the perf matching your kernel and run this script again.
MSG
        exit 2
    fi
    if ! perf stat -e task-clock true >/dev/null 2>&1; then
        cat >&2 <<MSG
perf is installed but cannot open even a software counter here. Usually that is
kernel.perf_event_paranoid ($(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo '?'))
in a container without CAP_PERFMON/CAP_SYS_ADMIN, or a seccomp profile blocking
perf_event_open. Try: sysctl kernel.perf_event_paranoid=1 (as root on the host).
MSG
        exit 2
    fi
    # Hardware counters (cycles, instructions) need a virtual PMU; many VMs have none.
    if perf stat -e cycles,instructions true 2>&1 | grep -qE 'not supported|<not counted>'; then
        PERF_HW=0
        echo "note: no hardware PMU in this VM: cycles/instructions are unsupported;" \
             "using cpu-clock/task-clock (time-based) instead" >&2
    else
        PERF_HW=1
    fi
    export PERF_HW
}

# Builds (or takes $PROCMOND_WAL_BIN) the binary; sets BIN.
find_binary() {
    local target
    target=${CARGO_TARGET_DIR:-$REPO/target}
    BIN=${PROCMOND_WAL_BIN:-}
    if [[ -z $BIN ]]; then
        (cd "$REPO" && cargo build --release --bin procmond-wal >&2)
        BIN=$target/release/procmond-wal
    fi
}

# Sets WORKLOAD (an array: the command to profile), WORKLOAD_KIND (`load`, `verify` or
# `compare`) and, for `verify`, RECORD_BYTES (the record bytes in the log); all read by the
# sourcing script.
# shellcheck disable=SC2034
# For `cpu` and `latency`: `procmond-wal load`, falling back to the compare bench narrowed to
# this WAL when the binary has no `load` subcommand (an old revision). For `replay`: writes
# the log with `load` once (not profiled), then `procmond-wal verify` of it.
prepare_workload() {
    find_binary
    if [[ $TARGET == replay ]]; then
        local log=${REPLAY_DIR:-$OUT/replay-log}
        local want=$((EVENTS * EVENT_BYTES))
        if [[ ! -f $log/load.json ]] \
            || ! python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["bytes"] >= int(sys.argv[2]) and d["verified"] else 1)' "$log/load.json" "$want"; then
            echo "writing the replay log ($EVENTS events of $EVENT_BYTES B) to $log" >&2
            rm -rf "$log"
            mkdir -p "$log"
            "$BIN" load --dir "$log/wal" --events "$EVENTS" --publishers "$PUBLISHERS" \
                --event-bytes "$EVENT_BYTES" --inflight "$INFLIGHT" --backend "$BACKEND" \
                --json >"$log/load.json.part"
            mv "$log/load.json.part" "$log/load.json"
        fi
        RECORD_BYTES=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$log/load.json")
        WORKLOAD_KIND=verify
        WORKLOAD=("$BIN" verify "$log/wal" --json)
        return
    fi
    if "$BIN" load --help >/dev/null 2>&1; then
        WORKLOAD_KIND=load
        WORKLOAD=("$BIN" load --events "$EVENTS" --publishers "$PUBLISHERS"
            --event-bytes "$EVENT_BYTES" --inflight "$INFLIGHT" --backend "$BACKEND" --json)
        return
    fi
    echo "note: $BIN has no \`load\` subcommand at this revision; profiling the compare" \
         "bench (WAL only, $PUBLISHERS publishers, $EVENT_BYTES-byte events) instead" >&2
    local bench
    bench=$(cd "$REPO" && cargo bench --bench compare --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "compare" and m.get("executable"):
        print(m["executable"])')
    if [[ -z $bench ]]; then
        echo "error: could not build the compare bench either" >&2
        exit 1
    fi
    local mode=pipelined backend=$BACKEND
    [[ $INFLIGHT == 1 ]] && mode=await
    [[ $backend == auto ]] && backend=uring
    WORKLOAD_KIND=compare
    WORKLOAD=(env PROCMOND_WAL_BENCH_SECTIONS=matrix PROCMOND_WAL_BENCH_SYSTEMS=wal
        "PROCMOND_WAL_BENCH_MODES=$mode" "PROCMOND_WAL_BENCH_SIZES=$EVENT_BYTES"
        "PROCMOND_WAL_BENCH_PUBLISHERS=$PUBLISHERS" "PROCMOND_WAL_BENCH_WINDOW=$INFLIGHT"
        "PROCMOND_WAL_BENCH_BACKEND=$backend" "PROCMOND_WAL_BENCH_SECONDS=${SECONDS_PER_RUN:-3}"
        PROCMOND_WAL_BENCH_LABEL=perf "$bench")
}

# The events the workload's output (in file $1) says it handled.
workload_events() {
    case $WORKLOAD_KIND in
        load|verify) python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events"])' "$1" ;;
        compare)
            local report
            report=$(grep -o '/[^ ]*compare-perf.json' "$1" | tail -1)
            python3 -c 'import json,sys; print(sum(r["events"] for r in json.load(open(sys.argv[1]))["runs"]))' "$report" ;;
    esac
}
