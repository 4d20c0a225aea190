#!/usr/bin/env bash
# Records a CPU profile with call graphs of one `procmond-wal load` run and renders it as a
# flame graph SVG (inferno). Installs perf and inferno when missing; explains and exits 2
# when perf cannot run here.
#
# Usage: scripts/perf-record.sh [--events N] [--publishers C] [--event-bytes B]
#                               [--inflight W] [--backend auto|uring|portable] [--out DIR]
# Output: DIR/perf.data, DIR/flamegraph.svg, DIR/load.json (default DIR: target/perf).
set -euo pipefail

events=200000 publishers=16 event_bytes=256 inflight=64 backend=auto
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${CARGO_TARGET_DIR:-$repo/target}/perf
while [[ $# -gt 0 ]]; do
    case $1 in
        --events) events=$2; shift 2 ;;
        --publishers) publishers=$2; shift 2 ;;
        --event-bytes) event_bytes=$2; shift 2 ;;
        --inflight) inflight=$2; shift 2 ;;
        --backend) backend=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done

# shellcheck source=scripts/perf-common.sh
source "$repo/scripts/perf-common.sh"
ensure_perf
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
    echo "installing inferno (flame graph renderer) with cargo" >&2
    cargo install --locked inferno >&2
fi
prepare_workload "$events" "$publishers" "$event_bytes" "$inflight" "$backend"
mkdir -p "$out"

# Release builds have no frame pointers: DWARF unwinding gives usable Rust stacks.
event=cycles
[[ $PERF_HW == 1 ]] || event=cpu-clock
perf record -e "$event" -F 499 --call-graph dwarf,16384 -o "$out/perf.data" \
    -- "${WORKLOAD[@]}" >"$out/load.json"
perf script -i "$out/perf.data" 2>/dev/null \
    | inferno-collapse-perf >"$out/stacks.folded"
inferno-flamegraph --title "procmond-wal $WORKLOAD_KIND: $publishers publishers, $event_bytes B, inflight $inflight, $backend" \
    <"$out/stacks.folded" >"$out/flamegraph.svg"
echo "flame graph: $out/flamegraph.svg (profile: $out/perf.data, workload output: $out/load.json)"
echo "top functions by self time:"
perf report -i "$out/perf.data" --no-children --sort symbol -g none --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | sed -E 's/ +- +- *$//' | head -15
