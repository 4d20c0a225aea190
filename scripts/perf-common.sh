# shellcheck shell=bash
# Shared by scripts/perf-record.sh and scripts/perf-stat.sh (sourced, not run): installs
# perf and finds out what it can measure here, and builds or finds the workload to run.
# Callers have `set -euo pipefail`.

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

# Sets WORKLOAD (an array: the command to profile) and WORKLOAD_KIND (`load` or `compare`),
# both read by the sourcing script.
# shellcheck disable=SC2034
# Prefers `procmond-wal load`; falls back to the compare bench narrowed to this WAL when the
# checked-out revision has no `load` subcommand. PROCMOND_WAL_BIN overrides the binary.
prepare_workload() {
    local events=$1 publishers=$2 event_bytes=$3 inflight=$4 backend=$5
    local repo target bin
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    target=${CARGO_TARGET_DIR:-$repo/target}
    bin=${PROCMOND_WAL_BIN:-}
    if [[ -z $bin ]]; then
        (cd "$repo" && cargo build --release --bin procmond-wal >&2)
        bin=$target/release/procmond-wal
    fi
    if "$bin" load --help >/dev/null 2>&1; then
        WORKLOAD_KIND=load
        WORKLOAD=("$bin" load --events "$events" --publishers "$publishers"
            --event-bytes "$event_bytes" --inflight "$inflight" --backend "$backend" --json)
        return
    fi
    echo "note: $bin has no \`load\` subcommand at this revision; profiling the compare" \
         "bench (WAL only, $publishers publishers, $event_bytes-byte events) instead" >&2
    local bench
    bench=$(cd "$repo" && cargo bench --bench compare --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "compare" and m.get("executable"):
        print(m["executable"])')
    if [[ -z $bench ]]; then
        echo "error: could not build the compare bench either" >&2
        exit 1
    fi
    local mode=pipelined
    [[ $inflight == 1 ]] && mode=await
    [[ $backend == auto ]] && backend=uring
    WORKLOAD_KIND=compare
    WORKLOAD=(env PROCMOND_WAL_BENCH_SECTIONS=matrix PROCMOND_WAL_BENCH_SYSTEMS=wal
        "PROCMOND_WAL_BENCH_MODES=$mode" "PROCMOND_WAL_BENCH_SIZES=$event_bytes"
        "PROCMOND_WAL_BENCH_PUBLISHERS=$publishers" "PROCMOND_WAL_BENCH_WINDOW=$inflight"
        "PROCMOND_WAL_BENCH_BACKEND=$backend" "PROCMOND_WAL_BENCH_SECONDS=${SECONDS_PER_RUN:-3}"
        PROCMOND_WAL_BENCH_LABEL=perf "$bench")
}
