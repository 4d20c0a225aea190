#!/usr/bin/env bash
# One awaiting caller against the disk's own 4 KiB O_DIRECT overwrite + fdatasync, and 4 KiB x 16
# publishers against fio's sequential 1 MiB O_DIRECT + fdatasync bandwidth: each WAL run right
# after its fio reference, on the same filesystem, in rounds; prints every round and the median
# of the per-round ratios.
#
# Usage: scripts/bench-latency.sh [DIR]   (DIR: where the files go; default a fresh directory
#        under $TMPDIR, removed afterwards. It must be on the filesystem you want to measure.)
# Environment:
#   BIN          procmond-wal binary (default target/release/procmond-wal; build it first)
#   ROUNDS       rounds (default 3)
#   EVENTS       appends of the single-caller run (default 3000)
#   EVENT_BYTES  record size of the single-caller run (default 256)
#   FIO_SECONDS  seconds per fio run (default 5)
#   FIO_RW       fio pattern of the latency reference: write (sequential overwrite, the WAL's
#                pattern, default) or randwrite
#   LOAD_ARGS    extra `load` arguments of the single-caller run (default: 1 MiB segments, a
#                checkpoint every 200 events, 2 segments kept for recycling; set LOAD_ARGS=
#                "--segment-mib 1" for a binary without --checkpoint-every/--recycle-segments)
#   WARMUP_EVENTS appends of an unmeasured single-caller run in the same WAL directory before
#                each measured one, so the measured one runs in steady state (default 12000;
#                0 skips it)
#   BW_EVENTS    appends of the 4 KiB x 16 run (default 60000)
# Needs fio (apt-get install fio) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${BIN:-target/release/procmond-wal}"
rounds="${ROUNDS:-3}"
events="${EVENTS:-3000}"
event_bytes="${EVENT_BYTES:-256}"
fio_seconds="${FIO_SECONDS:-5}"
fio_rw="${FIO_RW:-write}"
load_args="${LOAD_ARGS---segment-mib 1 --checkpoint-every 200 --recycle-segments 2}"
warmup_events="${WARMUP_EVENTS:-12000}"
bw_events="${BW_EVENTS:-60000}"
command -v fio >/dev/null || { echo "fio is not installed (apt-get install -y fio)" >&2; exit 2; }
[[ -x "$bin" ]] || { echo "no binary at $bin (cargo build --release)" >&2; exit 2; }

if [[ $# -ge 1 ]]; then
  dir="$1"; mkdir -p "$dir"; cleanup=false
else
  dir="$(mktemp -d -p "${TMPDIR:-/tmp}" bench-latency.XXXXXX)"; cleanup=true
fi
trap '$cleanup && rm -rf "$dir"' EXIT
echo "# bench-latency: $(date -u +%FT%TZ) dir=$dir bin=$bin ($("$bin" --version 2>/dev/null || echo '?'))"
echo "# uptime: $(uptime)"
echo "# single caller: load --publishers 1 --inflight 1 --events $events --event-bytes $event_bytes $load_args (after $warmup_events warm-up appends)"
echo "# fio latency reference: 4 KiB $fio_rw, O_DIRECT, fdatasync after every write, on a written 64 MiB file"

# A written (not just allocated) file for the overwrite reference.
fio --name=prewrite --filename="$dir/fio-overwrite.dat" --size=64M --bs=1M --rw=write \
  --direct=1 --end_fsync=1 --output=/dev/null

results="$dir/results.tsv"
: >"$results"
for round in $(seq 1 "$rounds"); do
  # 1. fio: 4 KiB overwrite + fdatasync, one at a time.
  fio --name=overwrite --filename="$dir/fio-overwrite.dat" --size=64M --bs=4k --rw="$fio_rw" \
    --direct=1 --fdatasync=1 --ioengine=psync --runtime="$fio_seconds" --time_based \
    --output-format=json --output="$dir/fio-lat.json"
  # 2. The WAL, one caller with one append in flight, in a directory that already recycles.
  wal="$dir/wal-$round"
  rm -rf "$wal"
  if [[ "$warmup_events" -gt 0 ]]; then
    # shellcheck disable=SC2086
    "$bin" load --dir "$wal" --publishers 1 --inflight 1 --events "$warmup_events" \
      --event-bytes "$event_bytes" $load_args --json >"$dir/warmup.json"
  fi
  # shellcheck disable=SC2086
  "$bin" load --dir "$wal" --publishers 1 --inflight 1 --events "$events" \
    --event-bytes "$event_bytes" $load_args --json >"$dir/load-lat.json"
  rm -rf "$wal"
  # 3. fio: sequential 1 MiB + fdatasync bandwidth on a fresh file, then 4 KiB x 16 publishers.
  rm -f "$dir/fio-seq.dat"
  fio --name=seq --filename="$dir/fio-seq.dat" --size=512M --bs=1M --rw=write --direct=1 \
    --fdatasync=1 --ioengine=psync --fallocate=native --runtime="$fio_seconds" --time_based \
    --output-format=json --output="$dir/fio-bw.json"
  rm -f "$dir/fio-seq.dat"
  rm -rf "$dir/wal-bw"
  "$bin" load --dir "$dir/wal-bw" --publishers 16 --events "$bw_events" --event-bytes 4096 \
    --json >"$dir/load-bw.json"
  rm -rf "$dir/wal-bw"
  python3 - "$dir" "$round" >>"$results" <<'EOF'
import json, sys
d, rnd = sys.argv[1], sys.argv[2]
fio = json.load(open(f"{d}/fio-lat.json"))["jobs"][0]
w, s = fio["write"], fio["sync"]
pct = lambda h, q: h["percentile"][q] / 1e3
# fio times the write and the fdatasync separately; one overwrite is their sum. The sum of
# the p50s (p99s) stands for the p50 (p99) of the sum; the mean is exact (1 / IOPS).
fio_p50 = pct(w["clat_ns"], "50.000000") + pct(s["lat_ns"], "50.000000")
fio_p99 = pct(w["clat_ns"], "99.000000") + pct(s["lat_ns"], "99.000000")
fio_mean = 1e6 / w["iops"]
load = json.load(open(f"{d}/load-lat.json"))
assert load["verified"], load.get("verify_problem")
p50, p99 = load["latency_us"]["p50"], load["latency_us"]["p99"]
bw_fio = json.load(open(f"{d}/fio-bw.json"))["jobs"][0]["write"]["bw_bytes"] / 1e6
bw = json.load(open(f"{d}/load-bw.json"))
assert bw["verified"], bw.get("verify_problem")
print("\t".join(str(x) for x in [rnd, round(fio_p50, 1), round(fio_p99, 1), round(fio_mean, 1),
      p50, p99, round(p50 / fio_p50, 2), round(p99 / fio_p99, 2),
      round(bw_fio, 1), round(bw["mb_per_s"], 1), round(bw["mb_per_s"] / bw_fio, 2)]))
EOF
  tail -n 1 "$results" >&2
done
python3 - "$results" <<'EOF'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
head = ["round", "fio p50 µs", "fio p99 µs", "fio mean µs", "WAL p50 µs", "WAL p99 µs",
        "p50 ratio", "p99 ratio", "fio 1 MiB MB/s", "WAL 4 KiB×16 MB/s", "bw ratio"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for row in rows:
    print("| " + " | ".join(row) + " |")
med = lambda i: statistics.median(float(r[i]) for r in rows)
print(f"median ratios: p50 {med(6):.2f} (target <= 1.3), p99 {med(7):.2f} (target <= 1.6), "
      f"bandwidth {med(10):.2f} (target >= 0.9)")
EOF
echo "# uptime: $(uptime)"
