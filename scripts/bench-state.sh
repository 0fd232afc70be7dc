#!/usr/bin/env bash
# Issue "state processor" figures: the `counts` job's final checkpoint with 1,000,000
# keys (2,000,000 events, 2 workers) on the heap backend (canonical files) and on
# RocksDB (native incremental files, read through a temporary RocksDB instance);
# then, ROUNDS times each, back to back on the same checkpoint:
#   dump       `flowstate state dump CK -o FILE` (every keyed entry and operator item
#              rendered through its stored schema as JSON lines)
#   rewrite    `flowstate state transform CK --out DIR` (a new canonical savepoint,
#              read back and verified)
#   max-p      `flowstate state transform CK --out DIR --max-parallelism 4096`
# Each line: median seconds, keyed entries per second and MB of stored state per
# second (the tools run on one thread: these are per core).
#   ./scripts/bench-state.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowstate-target}"
cargo build --release -q --workspace --bin flowstate
bin="$CARGO_TARGET_DIR/release/flowstate"
rounds=${1:-3}
dir=${BENCH_DIR:-/tmp/flowstate-bench-state}
echo "# $(date -u +%FT%TZ) $(nproc) cores, rounds $rounds"
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
now() { date +%s%N; }

for backend in heap rocksdb; do
  rm -rf "$dir"
  RUST_LOG=warn "$bin" run counts --backend "$backend" --workers 2 \
    --checkpoint-dir "$dir/ck" --out "$dir/out" --checkpoint-interval 5000 \
    --events 2000000 --keys 1000000 >/dev/null 2>&1
  ck="$dir/ck"
  # Keyed entries and their stored bytes, from the state's own description.
  read -r entries bytes < <("$bin" state describe "$ck" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
s = [k for o in d["operators"] for k in o["keyed_states"]]
print(sum(k["entries"] for k in s), sum(k["bytes"] for k in s))')
  echo "$backend: $entries keyed entries, $bytes bytes of keyed state"
  for what in dump rewrite max-p; do
    times=()
    for r in $(seq "$rounds"); do
      rm -rf "$dir/t" "$dir/dump.jsonl"
      start=$(now)
      case $what in
        dump) RUST_LOG=warn "$bin" state dump "$ck" -o "$dir/dump.jsonl" ;;
        rewrite) RUST_LOG=warn "$bin" state transform "$ck" --out "$dir/t" >/dev/null ;;
        max-p) RUST_LOG=warn "$bin" state transform "$ck" --out "$dir/t" --max-parallelism 4096 >/dev/null ;;
      esac
      times+=("$(( ($(now) - start) / 1000000 ))")
    done
    ms=$(printf '%s\n' "${times[@]}" | median)
    python3 -c "
ms, n, b = $ms, $entries, $bytes
print(f'  {\"$what\":<8} median {ms/1000:6.2f} s  {n/ms*1000:10.0f} keys/s  {b/ms/1000:6.1f} MB/s  (runs: ${times[*]} ms)')"
  done
done
