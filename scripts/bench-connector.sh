#!/usr/bin/env bash
# One caller with many publishes in flight: publish→durable and publish→acknowledged events/s
# of the connector against the WAL alone in the same run (`connector-load --compare-wal-only`),
# with CPU per event of the ring thread, the whole publishing process and the broker.
#
# For each round and each load it starts a reference broker as its own process on a fresh
# socket, runs `procmond-wal connector-load` against it, and reads the broker's CPU time from
# /proc. Loads (one publisher each, 256 B events): `--batch 256` (one publish_batch in flight),
# `--batch 256 --in-flight 4`, and `--in-flight 256` (256 single publishes in flight through
# receipts). Rounds interleave the loads; the summary gives medians.
#
# Usage: scripts/bench-connector.sh [--rounds N] [--events N] [--pin] [--no-broker]
#            [--baseline PATH] [--load "OPTIONS"]...
#   --pin        the broker on CPU 1, the publishing process (both runs) on CPU 0: the
#                publishing side gets one core whatever the broker costs
#   --no-broker  nothing listens on the socket: the link keeps retrying and events spill, so
#                this measures the publish path without delivery (publish→durable only)
#   --baseline   another build of procmond-wal runs the same loads, alternating with this one
#   --load       replaces the default loads (repeatable), e.g. --load "--publishers 16"
#                (one publisher unless the load says otherwise)
set -euo pipefail

rounds=5 events=400000 pin=0 no_broker=0 baseline=""
loads=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --events) events=$2; shift 2 ;;
        --pin) pin=1; shift ;;
        --no-broker) no_broker=1; shift ;;
        --baseline) baseline=$2; shift 2 ;;
        --load) loads+=("$2"); shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done
if [[ ${#loads[@]} -eq 0 ]]; then
    loads=("--batch 256" "--batch 256 --in-flight 4" "--in-flight 256")
fi
if [[ -n $baseline && ! -x $baseline ]]; then
    echo "baseline $baseline is not an executable" >&2
    exit 64
fi
if [[ $pin == 1 ]] && ! command -v taskset >/dev/null; then
    echo "--pin needs taskset (util-linux)" >&2
    exit 2
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
(cd "$repo" && cargo build --release --quiet)
bins=("$repo/target/release/procmond-wal")
[[ -n $baseline ]] && bins+=("$baseline")
scratch=$(mktemp -d /tmp/bench-connector.XXXXXX)
broker_pid=""
cleanup() {
    [[ -n $broker_pid ]] && kill "$broker_pid" 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT

publisher_cpu=() broker_cpu=()
if [[ $pin == 1 ]]; then
    publisher_cpu=(taskset -c 0)
    broker_cpu=(taskset -c 1)
fi

# Process CPU time (user + system) in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

cat >"$scratch/show.py" <<'PY'
import json, statistics, sys

def name(binary):
    return "this build" if "/target/release/" in binary else binary.split("/")[-1]

def fmt(value):
    return "-" if value is None else f"{value:.2f}"

mode, path = sys.argv[1:]
rows = [json.loads(line) for line in open(path)]
if mode == "row":
    r = rows[-1]
    print(f"round {r['round']} [{r['load']}] {name(r['binary'])}: "
          f"durable {r['connector_durable'] / 1e3:.0f}k vs WAL {r['wal_durable'] / 1e3:.0f}k "
          f"= {r['durable_ratio']:.2f}, acked {fmt(r['acked_ratio'])}; CPU us/event "
          f"ring {r['ring_us']:.2f}/{r['wal_ring_us']:.2f} "
          f"process {r['process_us']:.2f}/{r['wal_process_us']:.2f} broker {r['broker_us']:.2f}; "
          f"records/sync {r['records_per_sync']:.0f}/{r['wal_records_per_sync']:.0f}; "
          f"spilled {r['spilled']}")
else:
    groups = {}
    for r in rows:
        groups.setdefault((r["load"], r["binary"]), []).append(r)
    print("\nmedians over rounds (connector / WAL alone in the same run):")
    print(f"{'load':<28} {'binary':<12} {'durable':>8} {'acked':>6} {'ring us':>11} "
          f"{'process us':>11} {'broker us':>9} {'rec/sync':>9}")
    for (load, binary), rs in groups.items():
        med = lambda key: statistics.median(r[key] for r in rs)
        acked = [r["acked_ratio"] for r in rs if r["acked_ratio"] is not None]
        print(f"{load:<28} {name(binary):<12} {med('durable_ratio'):>8.2f} "
              f"{fmt(statistics.median(acked) if acked else None):>6} "
              f"{med('ring_us'):>5.2f}/{med('wal_ring_us'):<5.2f} "
              f"{med('process_us'):>5.2f}/{med('wal_process_us'):<5.2f} {med('broker_us'):>9.2f} "
              f"{med('records_per_sync'):>4.0f}/{med('wal_records_per_sync'):<4.0f}")
    # Where a call's time goes: inside enqueue, awaiting the receipt, and the log's median
    # group write and fdatasync (connector / WAL alone).
    timed = {key: rs for key, rs in groups.items() if rs[0].get("await_us") is not None}
    if timed:
        print(f"\n{'load':<28} {'binary':<12} {'enqueue us/call':>15} {'await us/call':>15} "
              f"{'write p50 us':>13} {'sync p50 us':>12}")
    for (load, binary), rs in timed.items():
        med = lambda key: statistics.median(r[key] for r in rs)
        print(f"{load:<28} {name(binary):<12} "
              f"{med('enqueue_us'):>7.1f}/{med('wal_enqueue_us'):<7.1f} "
              f"{med('await_us'):>7.1f}/{med('wal_await_us'):<7.1f} "
              f"{med('write_p50'):>6.0f}/{med('wal_write_p50'):<6.0f} "
              f"{med('sync_p50'):>5.0f}/{med('wal_sync_p50'):<6.0f}")
PY

results=$scratch/results.jsonl
echo "uptime: $(uptime)"
for round in $(seq "$rounds"); do
    for load in "${loads[@]}"; do
        for bin in "${bins[@]}"; do
            socket=$scratch/broker.sock
            rm -f "$socket"
            broker_ticks=0
            if [[ $no_broker == 0 ]]; then
                "${broker_cpu[@]}" "$bin" broker --socket "$socket" 2>"$scratch/broker.log" &
                broker_pid=$!
                for _ in $(seq 200); do [[ -S $socket ]] && break; sleep 0.05; done
                [[ -S $socket ]] || { echo "the broker did not start" >&2; exit 1; }
                before=$(cpu_ticks "$broker_pid")
            fi
            extra=()
            [[ $no_broker == 1 ]] && extra=(--no-wait-acked)
            [[ $load == *--publishers* ]] || extra+=(--publishers 1)
            # shellcheck disable=SC2086 # a load is a list of options
            if ! "${publisher_cpu[@]}" "$bin" connector-load --socket "$socket" \
                --events "$events" --event-bytes 256 --compare-wal-only "${extra[@]}" $load \
                >"$scratch/out.json" 2>"$scratch/load.log"; then
                echo "connector-load failed for [$load]:" >&2
                cat "$scratch/load.log" >&2
                exit 1
            fi
            if [[ $no_broker == 0 ]]; then
                broker_ticks=$(( $(cpu_ticks "$broker_pid") - before ))
                kill "$broker_pid"
                wait "$broker_pid" 2>/dev/null || true
                broker_pid=""
            fi
            python3 - "$scratch/out.json" "$round" "$load" "$bin" "$broker_ticks" \
                "$(getconf CLK_TCK)" >>"$results" <<'PY'
import json, sys
path, round_, load, binary, ticks, hz = sys.argv[1:]
report = json.load(open(path))
conn, wal = report["connector"], report["wal_only"]
print(json.dumps({
    "round": int(round_), "load": load, "binary": binary,
    "durable_ratio": conn["durable_events_per_s"] / wal["durable_events_per_s"],
    "acked_ratio": report.get("acked_vs_wal_only"),
    "connector_durable": conn["durable_events_per_s"],
    "wal_durable": wal["durable_events_per_s"],
    "ring_us": conn["ring_cpu_us_per_event"], "wal_ring_us": wal["ring_cpu_us_per_event"],
    "process_us": conn["process_cpu_us_per_event"],
    "wal_process_us": wal["process_cpu_us_per_event"],
    "broker_us": int(ticks) / int(hz) * 1e6 / conn["events"],
    # Older builds report the connector's records per sync at the top level only.
    "records_per_sync": conn.get("records_per_sync", report.get("records_per_sync", 0.0)),
    "wal_records_per_sync": wal.get("records_per_sync", 0.0),
    # Older builds do not report these.
    "enqueue_us": conn.get("enqueue_us_per_call"), "wal_enqueue_us": wal.get("enqueue_us_per_call"),
    "await_us": conn.get("await_us_per_call"), "wal_await_us": wal.get("await_us_per_call"),
    "write_p50": conn.get("write_latency_p50_us"), "wal_write_p50": wal.get("write_latency_p50_us"),
    "sync_p50": conn.get("sync_latency_p50_us"), "wal_sync_p50": wal.get("sync_latency_p50_us"),
    "spilled": report["spilled_total"],
}))
PY
            python3 "$scratch/show.py" row "$results"
        done
    done
done
echo "uptime: $(uptime)"
python3 "$scratch/show.py" summary "$results"
