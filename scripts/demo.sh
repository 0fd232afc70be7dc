#!/usr/bin/env bash
# The main demo: the `counts` job (keyed state, event-time timers, transactional file
# sink) on the streaming runtime with checkpoints every 500 ms on embedded RocksDB.
# Kill it at any moment (Ctrl-C, kill -9) and run it again: it resumes from its last
# checkpoint, at any --workers, and its committed output is exactly once.
# Extra flags go to `flowstate run` (e.g. --workers 3, --fresh, --backend heap).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowstate-target}"
cargo build --release -q --workspace --bin flowstate
bin="$CARGO_TARGET_DIR/release/flowstate"
dir=/tmp/flowstate-demo
for a in "$@"; do
  # A fresh start also drops the previous run's checkpoints and output.
  if [ "$a" = "--fresh" ]; then rm -rf "$dir"; fi
done
kill_after=""
if [ "${1:-}" = "--kill-after" ]; then kill_after="$2"; shift 2; fi
args=(run counts --checkpoint-dir "$dir/ck" --out "$dir/out" --checkpoint-interval 500
  --events 2000000 --keys 12000 --throttle-every 2000 "$@")
if [ -n "$kill_after" ]; then
  # Simulated crash: SIGKILL after the given seconds, then show what survived.
  "$bin" "${args[@]}" & pid=$!
  sleep "$kill_after"; kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  echo "killed with SIGKILL after ${kill_after}s; run ./scripts/demo.sh to resume"
else
  "$bin" "${args[@]}"
fi
"$bin" checkpoints "$dir/ck"
echo "committed output: $(cat "$dir"/out/part-* | wc -l) lines in $dir/out"
