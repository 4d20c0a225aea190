#!/usr/bin/env bash
# A real unreadable block under a WAL: builds an ext4 filesystem on a loop device behind a
# device-mapper table, writes a WAL with `procmond-wal load`, then swaps one 4 KiB block of
# the first segment's records for the `error` target (every read of it fails with EIO) and
# checks that `verify` reports it as unreadable damage (exit 1) instead of failing (exit 2),
# that `dump` still prints the records around it, and that the log still opens and takes
# appends (`load` into the same directory).
#
# Needs root, losetup, dmsetup with a working device-mapper (/dev/mapper/control), mkfs.ext4
# and filefrag. Where any of that is missing it says why and exits 0 (skipped).
#
# Usage: scripts/dm-error-drill.sh            (builds target/release/procmond-wal if needed)
set -euo pipefail

skip() {
    echo "dm-error drill skipped: $*"
    exit 0
}
fail() {
    echo "dm-error drill FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || skip "needs root"
for tool in losetup dmsetup mkfs.ext4 filefrag blockdev mount umount; do
    command -v "$tool" >/dev/null || skip "$tool is not installed"
done
[ -e /dev/mapper/control ] || skip "device-mapper is not available (no /dev/mapper/control)"

cd "$(dirname "$0")/.."
bin=target/release/procmond-wal
[ -x "$bin" ] || cargo build --release --bin procmond-wal

name="procmond-wal-drill-$$"
work=$(mktemp -d)
loop=""
mounted=""
cleanup() {
    [ -n "$mounted" ] && umount "$work/mnt" 2>/dev/null || true
    dmsetup remove "$name" 2>/dev/null || true
    [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

truncate -s 512M "$work/disk.img"
loop=$(losetup --find --show "$work/disk.img") || skip "no free loop device"
sectors=$(blockdev --getsz "$loop")
dmsetup create "$name" --table "0 $sectors linear $loop 0" || skip "dmsetup create failed"
device="/dev/mapper/$name"
mkfs.ext4 -q -F "$device"
mkdir -p "$work/mnt"
mount "$device" "$work/mnt"
mounted=1

wal="$work/mnt/wal"
"$bin" load --dir "$wal" --events 20000 --publishers 4 >/dev/null
segment="$wal/procmond-00001.wal"
[ -f "$segment" ] || fail "no first segment after load"
"$bin" verify "$wal" >/dev/null || fail "the undamaged WAL does not verify clean"

# Physical 4 KiB block holding logical block 3 of the first segment (its records).
physical=$(filefrag -v -b4096 "$segment" | awk '
    $1 ~ /^[0-9]+:$/ {
        split($2, logical, "[.]+"); split($3, phys, "[.]+")
        if (logical[1] + 0 <= 3 && 3 <= logical[2] + 0) { print phys[1] + 3 - logical[1]; exit }
    }')
[ -n "$physical" ] || fail "could not map the segment's block 3 with filefrag"
umount "$work/mnt"
mounted=""

bad=$((physical * 8))
dmsetup suspend "$name"
dmsetup reload "$name" <<EOF
0 $bad linear $loop 0
$bad 8 error
$((bad + 8)) $((sectors - bad - 8)) linear $loop $((bad + 8))
EOF
dmsetup resume "$name"
mount "$device" "$work/mnt"
mounted=1
echo 3 >/proc/sys/vm/drop_caches

set +e
"$bin" verify "$wal" >"$work/verify.txt"
code=$?
set -e
[ "$code" = 1 ] || { cat "$work/verify.txt"; fail "verify exited $code, expected 1 (damage found)"; }
grep -q "unreadable" "$work/verify.txt" || { cat "$work/verify.txt"; fail "verify did not report the unreadable block"; }
set +e
"$bin" dump "$wal" >"$work/dump.jsonl" 2>/dev/null
code=$?
set -e
[ "$code" = 1 ] || fail "dump exited $code, expected 1 (damage skipped)"
lines=$(wc -l <"$work/dump.jsonl")
[ "$lines" -gt 19000 ] || fail "dump printed only $lines records"
# load's own self-check counts the events lost to the bad block (exit 1); exit 2 would mean
# the log could not be opened or written.
set +e
"$bin" load --dir "$wal" --events 100 --publishers 1 >"$work/load.txt" 2>&1
code=$?
set -e
[ "$code" != 2 ] || { cat "$work/load.txt"; fail "the WAL no longer opens for appends"; }

echo "dm-error drill passed: one unreadable block reported, $lines records dumped, appends go on"
