#!/usr/bin/env bash
# Issue "speed", keyed state ops: Apache Flink 2.3's own backends driven by the anchor's
# port of flink-benchmarks' Value/List/MapStateBenchmark (../shared/flink-anchor, suite
# `micro`), then at once `flowstate-bench state` on heap and on RocksDB (each op also
# prefetched, as the keyed operator runs records), where each op is followed by its
# baseline (bare hashbrown maps; the rocksdb crate on a database with the backend's
# options). Prints one table: ops/s medians, Flowstate over Flink, and Flowstate over
# its baseline.
# Both sides warm each op up for WARMUP untimed runs of SECONDS first (the anchor's
# MICRO_WARMUP).
#   ./scripts/bench-state-ops.sh [ITERATIONS] [SECONDS] [WARMUP]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowstate-target}"
anchor="${FLINK_ANCHOR:-$(cd .. && pwd)/shared/flink-anchor}"
# Without the anchor every Flink column would come out empty: stop instead.
if [ ! -x "$anchor/run.sh" ]; then
  echo "no Flink anchor at $anchor (set FLINK_ANCHOR to ../shared/flink-anchor)" >&2
  exit 1
fi
iterations=${1:-5}
seconds=${2:-1}
warmup=${3:-2}
cargo build --release -q --workspace --bin flowstate-bench
bin="$CARGO_TARGET_DIR/release/flowstate-bench"
out=$(mktemp -d /tmp/bench-state-ops.XXXXXX)
echo "# $(date -u +%FT%TZ) $(nproc) cores, $warmup + $iterations x $seconds s per op; results in $out"
SUITES=micro MICRO_WARMUP="$warmup" MICRO_ITERS="$iterations" MICRO_ITER_MS="$(python3 -c "print(int($seconds*1000))")" \
  OUT_DIR="$out/flink" "$anchor/run.sh" > "$out/flink.log" 2>&1
echo "# Flink done $(date -u +%FT%TZ)"
# Each op also runs prefetched, as the keyed operator runs records; on RocksDB also with
# its u64s stored at 8 bytes by FixedIntegerSerializer (the bytes Flink and the raw
# baseline write), where the default serializer's varints take 9 or 10.
for b in heap rocksdb; do
  extra=()
  [ "$b" = rocksdb ] && extra=(--fixed-integers)
  "$bin" state --backend "$b" --iterations "$iterations" --seconds "$seconds" --warmup "$warmup" --json \
    --prefetch "${extra[@]}" > "$out/$b.jsonl" 2> "$out/$b.log"
  echo "# Flowstate $b done $(date -u +%FT%TZ)"
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
flink = {}
for line in open(f"{out}/flink/results.jsonl"):
    r = json.loads(line)
    if r.get("bench") == "micro":
        flink[(r["backend"], r["op"])] = r["ops_per_s"]
ours = {}
for b in ("heap", "rocksdb"):
    for line in open(f"{out}/{b}.jsonl"):
        r = json.loads(line)
        if not r.get("ttl"):
            key = (b, r["op"], bool(r.get("prefetch")), bool(r.get("fixed_integers")))
            ours[key] = (r["ops_per_sec"], r.get("baseline_ops_per_sec"))
def f(v):
    if v is None:
        return "-"
    return f"{v/1e6:.2f} M" if v >= 1e6 else f"{v/1e3:.0f} k"
def x(a, b):
    return f"{a/b:.2f}" if a and b else "-"
ops = [op for (b, op, p, fx) in ours if b == "heap" and not p and not fx]
print("| op | Flink heap | heap | x Flink | heap prefetched | x Flink | bare map | of bare | prefetched of bare | Flink RocksDB | RocksDB | x Flink | RocksDB prefetched | x Flink | raw rocksdb | of raw | prefetched of raw |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for op in ops:
    cells = [op]
    fl = flink.get(("heap", op))
    v, base = ours.get(("heap", op, False, False), (None, None))
    pv, _ = ours.get(("heap", op, True, False), (None, None))
    cells += [f(fl), f(v), x(v, fl), f(pv), x(pv, fl), f(base), x(v, base), x(pv, base)]
    fl = flink.get(("rocksdb", op))
    v, base = ours.get(("rocksdb", op, False, False), (None, None))
    pv, _ = ours.get(("rocksdb", op, True, False), (None, None))
    cells += [f(fl), f(v), x(v, fl), f(pv), x(pv, fl), f(base), x(v, base), x(pv, base)]
    print("| " + " | ".join(cells) + " |")
print()
print("RocksDB with the u64s at 8 bytes (FixedIntegerSerializer), same run:")
print("| op | Flink RocksDB | RocksDB | of raw | RocksDB fixed-width | x Flink | of raw |")
print("|---|---:|---:|---:|---:|---:|---:|")
for op in ops:
    fl = flink.get(("rocksdb", op))
    v, base = ours.get(("rocksdb", op, False, False), (None, None))
    fv, _ = ours.get(("rocksdb", op, False, True), (None, None))
    print("| " + " | ".join([op, f(fl), f(v), x(v, base), f(fv), x(fv, fl), x(fv, base)]) + " |")
PY
