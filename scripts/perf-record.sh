#!/usr/bin/env bash
# Records a CPU profile with call graphs of one run of a target and renders it as a flame
# graph SVG (inferno). Installs perf and inferno when missing; explains and exits 2 when perf
# cannot run here.
#
# Usage: scripts/perf-record.sh [cpu|replay|latency] [--events N] [--publishers C]
#            [--event-bytes B] [--inflight W] [--backend auto|uring|portable] [--out DIR]
# Output: DIR/TARGET.perf.data, DIR/TARGET.svg, DIR/TARGET.json (default DIR: target/perf).
# The SVG stays small: frames narrower than FLAME_MIN_WIDTH percent (default 1) are dropped,
# and so are the thread-start and unwinding wrappers every stack has (FLAME_FULL=1 keeps all
# frames, with FLAME_MIN_WIDTH=0.1 for detail).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/perf-common.sh
source "$REPO/scripts/perf-common.sh"
parse_args '2,9p' "$@"
ensure_perf
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
    echo "installing inferno (flame graph renderer) with cargo" >&2
    cargo install --locked inferno >&2
fi
prepare_workload
mkdir -p "$OUT"

# Release builds have no frame pointers: DWARF unwinding gives usable Rust stacks.
event=cycles
[[ $PERF_HW == 1 ]] || event=cpu-clock
perf record -e "$event" -F 499 --call-graph dwarf,16384 -o "$OUT/$TARGET.perf.data" \
    -- "${WORKLOAD[@]}" >"$OUT/$TARGET.json"
perf script -i "$OUT/$TARGET.perf.data" 2>/dev/null \
    | inferno-collapse-perf >"$OUT/$TARGET.folded"
folded=$OUT/$TARGET.folded
if [[ ${FLAME_FULL:-0} != 1 ]]; then
    folded=$OUT/$TARGET.slim.folded
    python3 - "$OUT/$TARGET.folded" >"$folded" <<'PY'
import re, sys
wrapper = re.compile(r"catch_unwind|do_call|call_once|__rust_begin_short_backtrace|panicking"
                     r"|lifecycle|thread_start|^clone3$|^start_thread$|spawn_unchecked"
                     r"|with_current|set_current|enter_runtime|CURRENT|::with::|::try_with"
                     r"|scoped_tls|coop::budget|with_budget|LocalKey")
for line in open(sys.argv[1]):
    stack, count = line.rstrip("\n").rsplit(" ", 1)
    frames = [frame for frame in stack.split(";") if not wrapper.search(frame)]
    # DWARF stacks repeat inlined frames; 40 levels under the thread name show the cost.
    print(";".join(frames[:40]), count)
PY
fi
inferno-flamegraph --minwidth "${FLAME_MIN_WIDTH:-1}" \
    --title "procmond-wal $TARGET ($WORKLOAD_KIND): $PUBLISHERS publishers, $EVENT_BYTES B, inflight $INFLIGHT, $BACKEND" \
    <"$folded" >"$OUT/$TARGET.svg"
echo "flame graph: $OUT/$TARGET.svg (profile: $OUT/$TARGET.perf.data, workload output: $OUT/$TARGET.json)"
echo "CPU by thread (samples):"
perf report -i "$OUT/$TARGET.perf.data" --no-children --sort comm -g none --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | head -8
echo "top functions by self time:"
perf report -i "$OUT/$TARGET.perf.data" --no-children --sort symbol -g none --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | sed -E 's/ +- +- *$//' | head -15
