#!/usr/bin/env bash
# Checkpoint benchmark: the `counts` job (a word count: count and sum per key, with
# event-time reports) over 1,000,000 distinct keys, on both backends. Prints each
# checkpoint's duration and sizes (`flowstate checkpoints`), then the time to restore
# the final checkpoint at other worker counts (rescale 2 -> 1 and 2 -> 4).
#   EVENTS=3000000 KEYS=1000000 ./scripts/bench-checkpoints.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowstate-target}"
cargo build --release -q --workspace --bin flowstate
bin="$CARGO_TARGET_DIR/release/flowstate"
base="${BENCH_DIR:-/tmp/flowstate-bench}"
events="${EVENTS:-3000000}"
keys="${KEYS:-1000000}"
interval="${INTERVAL_MS:-2000}"
for backend in heap rocksdb; do
  dir="$base/$backend"
  rm -rf "$dir"
  echo "== $backend: $events events, $keys keys, 2 workers, checkpoint every $interval ms"
  start=$(date +%s%N)
  RUST_LOG=warn "$bin" run counts --backend "$backend" --workers 2 --fresh \
    --checkpoint-dir "$dir/ck" --out "$dir/out" --events "$events" --keys "$keys" \
    --checkpoint-interval "$interval" --retained 1000 >/dev/null
  echo "job: $(( ($(date +%s%N) - start) / 1000000 )) ms"
  "$bin" checkpoints "$dir/ck"
  final="$dir/ck/$(ls "$dir/ck" | grep '^chk-' | sort -t- -k2 -n | tail -1)"
  for w in 1 2 4; do
    rm -rf "$dir/r$w"
    ms=$(RUST_LOG=info "$bin" run counts --backend "$backend" --workers "$w" --from "$final" \
      --checkpoint-dir "$dir/r$w/ck" --out "$dir/r$w/out" --events "$events" --keys "$keys" \
      2>&1 >/dev/null | sed -nE 's/.*restored its state in ([0-9]+) ms.*/\1/p' | sort -n | tail -1)
    echo "restore of $(basename "$final") at $w workers (2 -> $w): slowest worker $ms ms"
  done
done
