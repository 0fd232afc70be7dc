#!/usr/bin/env bash
# Issue "speed", the keyed job: Apache Flink 2.3's JobBench (../shared/flink-anchor) and
# `flowstate-bench job` on the same work, back to back per configuration: a sequence of
# N events keyed by splitmix64(i) mod K, a ValueState counter ("value") or a MapState
# put per event ("map"), a checkpoint every second, parallelism 1 and 2, heap and
# RocksDB (incremental on both sides). records/s over the processing time, medians of
# RUNS runs; prints a table with the ratios.
#   ./scripts/bench-job.sh [RUNS] [N]     (CONFIGS="rocksdb:value:1 ..." for some only)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowstate-target}"
anchor="${FLINK_ANCHOR:-$(cd .. && pwd)/shared/flink-anchor}"
# Without the anchor every Flink column would come out empty: stop instead.
if [ ! -x "$anchor/run.sh" ]; then
  echo "no Flink anchor at $anchor (set FLINK_ANCHOR to ../shared/flink-anchor)" >&2
  exit 1
fi
runs=${1:-3}
n=${2:-2000000}
k=1000000
cargo build --release -q --workspace --bin flowstate-bench
bin="$CARGO_TARGET_DIR/release/flowstate-bench"
out=$(mktemp -d /tmp/bench-job.XXXXXX)
echo "# $(date -u +%FT%TZ) $(nproc) cores, runs $runs, events $n, keys $k; results in $out"
# Each side starts on a settled machine: the previous run's files written back and its
# process gone. With two workers there is no idle core to absorb that work, and the
# side that ran second paid for it.
settle() { sync; sleep 2; }
configs=${CONFIGS:-heap:value:1 rocksdb:value:1 heap:value:2 rocksdb:value:2 heap:map:1 rocksdb:map:1 heap:map:2 rocksdb:map:2}
for c in $configs; do
  IFS=: read -r b v p <<< "$c"
  # The anchor can fail after some runs (deleting a checkpoint directory Flink is
  # still removing): then the median of the measured runs its log has, and if it has
  # none, one more try.
  for attempt in 1 2; do
    fdir="$out/flink-$b-$v-$p-$attempt"
    settle
    SUITES=job JOB_CONFIGS="$c" JOB_RUNS="$runs" JOB_N="$n" JOB_K="$k" \
      OUT_DIR="$fdir" "$anchor/run.sh" > /dev/null 2>&1 || true
    if grep '"job"' "$fdir/results.jsonl" >> "$out/flink.jsonl" 2> /dev/null; then
      break
    fi
    row=$(grep -ho 'measured run [0-9]*: {records_per_s=[0-9.]*' "$fdir"/logs/*.err 2> /dev/null \
      | sed 's/.*=//' | sort -g | awk -v b="$b" -v v="$v" -v p="$p" '{ r[NR] = $1 } END {
          if (NR) printf "{\"bench\":\"job\",\"backend\":\"%s\",\"variant\":\"%s\",\"parallelism\":%s,\"records_per_s\":%s,\"from_log_runs\":%d}\n",
            b, v, p, r[int((NR + 1) / 2)], NR }' || true)
    if [ -n "$row" ]; then
      echo "$row" >> "$out/flink.jsonl"
      break
    fi
  done
  settle
  RUST_LOG=warn "$bin" job --backend "$b" --variant "$v" --parallelism "$p" \
    --events "$n" --keys "$k" --runs "$runs" >> "$out/flowstate.jsonl"
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def load(name):
    rows = {}
    for line in open(f"{out}/{name}.jsonl"):
        r = json.loads(line)
        if "records_per_s" in r:
            rows[(r["backend"], r["variant"], int(r["parallelism"]))] = r["records_per_s"]
    return rows
flink, ours = load("flink"), load("flowstate")
print("| backend | variant | parallelism | Flink records/s | Flowstate records/s | x | per core: Flink | Flowstate |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for key in sorted(ours):
    b, v, p = key
    f, o = flink.get(key), ours[key]
    ratio = f"{o / f:.2f}" if f else "-"
    fs = f"{f:,.0f}" if f else "-"
    fp = f"{f / p:,.0f}" if f else "-"
    print(f"| {b} | {v} | {p} | {fs} | {o:,.0f} | {ratio} | {fp} | {o / p:,.0f} |")
PY
