#!/usr/bin/env bash
# One awaiting caller against the disk's own 4 KiB O_DIRECT overwrite + fdatasync, and 4 KiB x 16
# publishers against fio's sequential 1 MiB O_DIRECT + fdatasync bandwidth. In every round each
# fio reference runs right before the WAL runs divided by it, on the same filesystem; one round
# runs every configuration (so a before/after pair shares its references). Prints every round
# and the median of the per-round ratios.
#
# Usage: scripts/bench-latency.sh [DIR]   (DIR: where the files go; default a fresh directory
#        under $TMPDIR, removed afterwards. It must be on the filesystem you want to measure.)
# Environment:
#   CONFIGS      the WAL configurations, separated by ';', each `label|binary|load arguments`.
#                Default: `after|target/release/procmond-wal|--segment-mib 1 --checkpoint-every
#                200 --recycle-segments 2` (1 MiB segments, a checkpoint every 200 events, two
#                segments kept for recycling). For a binary without --checkpoint-every and
#                --recycle-segments use e.g. `before|/path/procmond-wal|--segment-mib 1`.
#   ROUNDS       rounds (default 3)
#   EVENTS       appends of each single-caller run (default 3000)
#   WARMUP_EVENTS appends of an unmeasured single-caller run in the same WAL directory before
#                each measured one, so the measured one runs in steady state (default 6000)
#   EVENT_BYTES  record size of the single-caller runs (default 256)
#   FIO_SECONDS  seconds per fio run (default 5)
#   FIO_RW       the latency reference's pattern: write (sequential overwrite, the WAL's
#                pattern; default) or randwrite
#   FIO_ENGINE   the latency reference's fio engine: io_uring (default; the WAL's own way of
#                submitting, and far steadier than psync on a loaded machine) or psync
#   BW_EVENTS    appends of each 4 KiB x 16 run (default 60000; 0 skips the bandwidth part)
# Needs fio (apt-get install fio) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
configs="${CONFIGS:-after|target/release/procmond-wal|--segment-mib 1 --checkpoint-every 200 --recycle-segments 2}"
rounds="${ROUNDS:-3}"
events="${EVENTS:-3000}"
warmup_events="${WARMUP_EVENTS:-6000}"
event_bytes="${EVENT_BYTES:-256}"
fio_seconds="${FIO_SECONDS:-5}"
fio_rw="${FIO_RW:-write}"
fio_engine="${FIO_ENGINE:-io_uring}"
bw_events="${BW_EVENTS:-60000}"
command -v fio >/dev/null || { echo "fio is not installed (apt-get install -y fio)" >&2; exit 2; }
IFS=';' read -r -a config_list <<<"$configs"
for config in "${config_list[@]}"; do
  IFS='|' read -r _ bin _ <<<"$config"
  [[ -x "$bin" ]] || { echo "no binary at $bin (cargo build --release)" >&2; exit 2; }
done

if [[ $# -ge 1 ]]; then
  dir="$1"; mkdir -p "$dir"; cleanup=false
else
  dir="$(mktemp -d -p "${TMPDIR:-/tmp}" bench-latency.XXXXXX)"; cleanup=true
fi
trap '$cleanup && rm -rf "$dir"' EXIT
echo "# bench-latency: $(date -u +%FT%TZ) dir=$dir rounds=$rounds"
echo "# uptime: $(uptime)"
echo "# single caller: load --publishers 1 --inflight 1 --events $events --event-bytes $event_bytes ARGS, after $warmup_events warm-up appends in the same directory"
echo "# latency reference: fio 4 KiB $fio_rw, O_DIRECT, $fio_engine, fdatasync after every write, on a written 64 MiB file, $fio_seconds s"
echo "# bandwidth: fio 1 MiB sequential write, O_DIRECT, fdatasync after every write, fallocated file, $fio_seconds s; WAL: load --publishers 16 --events $bw_events --event-bytes 4096"
for config in "${config_list[@]}"; do echo "# config: $config"; done

# A written (not just allocated) file for the overwrite reference.
fio --name=prewrite --filename="$dir/fio-overwrite.dat" --size=64M --bs=1M --rw=write \
  --direct=1 --end_fsync=1 --output=/dev/null

results="$dir/results.tsv"
: >"$results"
summarise() {
  python3 - "$@" <<'EOF'
import json, sys
kind, d, rnd, label = sys.argv[1:5]
if kind == "lat":
    fio = json.load(open(f"{d}/fio-lat.json"))["jobs"][0]
    w, s = fio["write"], fio["sync"]
    pct = lambda h, q: h["percentile"][q] / 1e3
    # fio times the write and the fdatasync separately; one overwrite is their sum. The sum of
    # the p50s (p99s) stands for the p50 (p99) of the sum; the mean (1 / IOPS) is exact.
    ref_p50 = pct(w["clat_ns"], "50.000000") + pct(s["lat_ns"], "50.000000")
    ref_p99 = pct(w["clat_ns"], "99.000000") + pct(s["lat_ns"], "99.000000")
    ref_mean = 1e6 / w["iops"]
    load = json.load(open(f"{d}/load.json"))
    assert load["verified"], load.get("verify_problem")
    p50, p99 = load["latency_us"]["p50"], load["latency_us"]["p99"]
    row = ["lat", rnd, label, round(ref_p50, 1), round(ref_p99, 1), round(ref_mean, 1),
           p50, p99, round(p50 / ref_p50, 2), round(p99 / ref_p99, 2)]
else:
    ref = json.load(open(f"{d}/fio-bw.json"))["jobs"][0]["write"]["bw_bytes"] / 1e6
    load = json.load(open(f"{d}/load.json"))
    assert load["verified"], load.get("verify_problem")
    row = ["bw", rnd, label, round(ref, 1), round(load["mb_per_s"], 1),
           round(load["mb_per_s"] / ref, 2)]
print("\t".join(str(x) for x in row))
EOF
}

for round in $(seq 1 "$rounds"); do
  # 1. fio: 4 KiB overwrite + fdatasync, one at a time; then every configuration's single
  #    caller, each in a directory that reached its steady state first.
  fio --name=overwrite --filename="$dir/fio-overwrite.dat" --size=64M --bs=4k --rw="$fio_rw" \
    --direct=1 --fdatasync=1 --ioengine="$fio_engine" --runtime="$fio_seconds" --time_based \
    --output-format=json --output="$dir/fio-lat.json"
  for config in "${config_list[@]}"; do
    IFS='|' read -r label bin args <<<"$config"
    wal="$dir/wal-$label"
    rm -rf "$wal"
    if [[ "$warmup_events" -gt 0 ]]; then
      # shellcheck disable=SC2086
      "$bin" load --dir "$wal" --publishers 1 --inflight 1 --events "$warmup_events" \
        --event-bytes "$event_bytes" $args --json >/dev/null
    fi
    # shellcheck disable=SC2086
    "$bin" load --dir "$wal" --publishers 1 --inflight 1 --events "$events" \
      --event-bytes "$event_bytes" $args --json >"$dir/load.json"
    rm -rf "$wal"
    summarise lat "$dir" "$round" "$label" | tee -a "$results" >&2
  done
  # 2. fio: sequential 1 MiB + fdatasync bandwidth on a fresh file; then 4 KiB x 16 publishers.
  [[ "$bw_events" -gt 0 ]] || continue
  rm -f "$dir/fio-seq.dat"
  fio --name=seq --filename="$dir/fio-seq.dat" --size=512M --bs=1M --rw=write --direct=1 \
    --fdatasync=1 --ioengine=psync --fallocate=native --runtime="$fio_seconds" --time_based \
    --output-format=json --output="$dir/fio-bw.json"
  rm -f "$dir/fio-seq.dat"
  for config in "${config_list[@]}"; do
    IFS='|' read -r label bin _ <<<"$config"
    rm -rf "$dir/wal-bw"
    "$bin" load --dir "$dir/wal-bw" --publishers 16 --events "$bw_events" --event-bytes 4096 \
      --json >"$dir/load.json"
    rm -rf "$dir/wal-bw"
    summarise bw "$dir" "$round" "$label" | tee -a "$results" >&2
  done
done
python3 - "$results" <<'EOF'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
lat = [r[1:] for r in rows if r[0] == "lat"]
bw = [r[1:] for r in rows if r[0] == "bw"]
head = ["round", "config", "fio p50 µs", "fio p99 µs", "fio mean µs", "WAL p50 µs",
        "WAL p99 µs", "p50 ratio", "p99 ratio"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for row in lat:
    print("| " + " | ".join(row) + " |")
if bw:
    head = ["round", "config", "fio 1 MiB MB/s", "WAL 4 KiB×16 MB/s", "ratio"]
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in bw:
        print("| " + " | ".join(row) + " |")
print()
for label in dict.fromkeys(r[1] for r in lat):
    med = lambda table, i: statistics.median(float(r[i]) for r in table if r[1] == label)
    line = (f"{label}: median p50 ratio {med(lat, 7):.2f} (target <= 1.3), "
            f"p99 ratio {med(lat, 8):.2f} (target <= 1.6), WAL p50 {med(lat, 5):.1f} µs")
    if bw:
        line += f", bandwidth ratio {med(bw, 4):.2f} (target >= 0.9)"
    print(line)
EOF
echo "# uptime: $(uptime)"
