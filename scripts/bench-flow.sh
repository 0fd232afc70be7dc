#!/usr/bin/env bash
# Issue "flow control" figures, side by side in one script: for two `flowstate`
# binaries (OLD built before flow control, NEW this one), alternated ROUNDS times:
#  1. the README demo's job (RocksDB, 12,000 keys, throttled, checkpoint every 500 ms);
#  2. the keyed job: 2,000,000 events over 1,000,000 keys, 2 workers, checkpoint
#     every second, on both backends;
#  3. the checkpoint benchmark's job (`bench-checkpoints.sh`: 3,000,000 events over
#     1,000,000 keys, checkpoint every 2 s) on both backends.
# Each line: job time, checkpoints, duration median/max, final checkpoint's
# duration, in-flight bytes max and full size median/max (from `_metadata`, read by
# NEW: OLD's metadata has no in-flight figure, shown as 0).
#   ./scripts/bench-flow.sh OLD_FLOWSTATE_BINARY NEW_FLOWSTATE_BINARY [ROUNDS]
# (build OLD from a worktree of an older commit with the same CARGO_TARGET_DIR, then
# touch this checkout's sources before building it again.)
set -euo pipefail
old=$1 new=$2 rounds=${3:-1}
dir=${BENCH_DIR:-/tmp/flowstate-bench-flow}
echo "# $(date -u +%FT%TZ) $(nproc) cores"

# median and max of the numbers on stdin
stats() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "- -"; exit} print v[int((NR+1)/2)], v[NR]}'; }

# run NAME BIN ARGS...: one job on a fresh directory, then its checkpoints' figures
run() {
  local name=$1 bin=$2; shift 2
  rm -rf "$dir"
  local start; start=$(date +%s%N)
  RUST_LOG=warn "$bin" run counts --fresh --checkpoint-dir "$dir/ck" --out "$dir/out" \
    --retained 100000 "$@" >/dev/null 2>&1
  local ms=$(( ($(date +%s%N) - start) / 1000000 ))
  local table; table=$("$new" checkpoints "$dir/ck" | tail -n +2)
  # columns: id date time duration alignment in-flight full incremental workers ...
  local dur inflight full final n
  dur=$(awk '{sub("ms","",$4); print $4}' <<<"$table" | stats)
  inflight=$(awk '{print $6}' <<<"$table" | stats | cut -d' ' -f2)
  full=$(awk '{print $7}' <<<"$table" | stats)
  final=$(awk '/\(final\)/ {sub("ms","",$4); print $4}' <<<"$table")
  n=$(wc -l <<<"$table")
  printf '%-34s %-3s job %6d ms  %3d checkpoints  duration med/max %s/%s ms  final %s ms  in-flight max %s B  full med/max %s/%s B\n' \
    "$name" "$side" "$ms" "$n" ${dur} "${final:--}" "$inflight" ${full}
}

for r in $(seq "$rounds"); do
  for side in old new; do
    bin=$old; [ "$side" = new ] && bin=$new
    run "demo (rocksdb, 12k keys, 500 ms)" "$bin" --workers 2 --checkpoint-interval 500 \
      --events 2000000 --keys 12000 --throttle-every 2000
    for backend in heap rocksdb; do
      run "keyed 2M/1M keys $backend 1 s" "$bin" --backend "$backend" --workers 2 \
        --checkpoint-interval 1000 --events 2000000 --keys 1000000
      run "bench-checkpoints $backend 2 s" "$bin" --backend "$backend" --workers 2 \
        --checkpoint-interval 2000 --events 3000000 --keys 1000000
    done
  done
done
