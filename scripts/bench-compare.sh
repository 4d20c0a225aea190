#!/usr/bin/env bash
# Compares benchmarks between two git revisions on this machine, back to back: builds each
# revision in its own temporary git worktree (sharing one target directory so criterion's
# baselines meet), runs the criterion bench at BASE with --save-baseline, then at NEW with
# --baseline, so criterion prints the change of every benchmark. With --with-compare it also
# runs the quick same-run comparison harness at both revisions and prints their target
# ratios side by side.
#
# Usage: scripts/bench-compare.sh [--bench NAME] [--filter REGEX] [--with-compare]
#                                 BASE_REV [NEW_REV]
#   NEW_REV defaults to HEAD. NAME defaults to wal_append; REGEX selects criterion benchmarks
#   (e.g. 'durable_append'). Commit your changes first: only committed revisions are compared.
set -euo pipefail

bench=wal_append with_compare=0
filter=()
args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --bench) bench=$2; shift 2 ;;
        --filter) filter=("$2"); shift 2 ;;
        --with-compare) with_compare=1; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) echo "unknown option: $1 (see --help)" >&2; exit 64 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [[ ${#args[@]} -lt 1 || ${#args[@]} -gt 2 ]]; then
    echo "usage: $0 [--bench NAME] [--filter REGEX] [--with-compare] BASE_REV [NEW_REV]" >&2
    exit 64
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base_rev=$(git -C "$repo" rev-parse --verify "${args[0]}^{commit}")
new_rev=$(git -C "$repo" rev-parse --verify "${args[1]:-HEAD}^{commit}")
# The usual target directory: dependencies are reused, and both revisions write their
# criterion baselines to the same target/criterion.
target=${CARGO_TARGET_DIR:-$repo/target}
out=$target/bench-compare
mkdir -p "$out"
work=$(mktemp -d)
cleanup() {
    for name in base new; do
        [[ -d $work/$name ]] && git -C "$repo" worktree remove --force "$work/$name" >/dev/null 2>&1
    done
    rm -rf "$work"
}
trap cleanup EXIT

for name in base new; do
    rev=$base_rev
    [[ $name == new ]] && rev=$new_rev
    git -C "$repo" worktree add --detach "$work/$name" "$rev" >/dev/null
    if [[ ! -f $work/$name/benches/$bench.rs ]]; then
        echo "error: revision $(git -C "$repo" rev-parse --short "$rev") ($name) has no benches/$bench.rs" >&2
        exit 1
    fi
done

echo "== criterion: $bench at base $(git -C "$repo" rev-parse --short "$base_rev")"
(cd "$work/base" && CARGO_TARGET_DIR=$target cargo bench --bench "$bench" -- --save-baseline base "${filter[@]}") \
    | tee "$out/criterion-base.txt"
echo "== criterion: $bench at new $(git -C "$repo" rev-parse --short "$new_rev"), compared with base"
(cd "$work/new" && CARGO_TARGET_DIR=$target cargo bench --bench "$bench" -- --baseline base "${filter[@]}") \
    | tee "$out/criterion-new.txt"
echo "== changes (criterion, new vs base)"
grep -E '^[a-z_]+/|change:|Performance has|No change|Change within' "$out/criterion-new.txt" || true

if [[ $with_compare == 1 ]]; then
    for name in base new; do
        if [[ ! -f $work/$name/benches/compare.rs ]]; then
            echo "note: $name has no benches/compare.rs; skipping the ratio comparison" >&2
            exit 0
        fi
        echo "== compare harness (quick) at $name"
        (cd "$work/$name" && CARGO_TARGET_DIR=$target PROCMOND_WAL_BENCH_OUT=$out \
            PROCMOND_WAL_BENCH_LABEL=$name PROCMOND_WAL_BENCH_SECTIONS=targets \
            cargo bench --bench compare) >"$out/compare-$name.txt"
    done
    python3 - "$out/compare-base.json" "$out/compare-new.json" <<'PY'
import json, sys
base, new = (json.load(open(path)) for path in sys.argv[1:3])
key = lambda row: (row["target"], row["backend"])
new_rows = {key(row): row for row in new["targets"]}
print(f"{'target':<72} {'base':>8} {'new':>8} {'new/base':>9}")
for row in base["targets"]:
    other = new_rows.get(key(row))
    if other is None:
        continue
    change = other["ratio"] / row["ratio"] if row["ratio"] else float("nan")
    print(f"{row['target'][:72]:<72} {row['ratio']:>8.2f} {other['ratio']:>8.2f} {change:>9.2f}")
PY
fi
echo "outputs: $out"
