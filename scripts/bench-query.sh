#!/usr/bin/env bash
# Issue "queryable state" figures, side by side in one process per backend
# (`flowstate-bench query`): a keyed counter job (2 workers, then 1; checkpoints every 1 s,
# a queryable value state) timed to its end with no queries, with 1,000 live point
# look-ups per second and with 1,000 committed ones (RUNS runs of each, in turn;
# medians), the look-ups' p50/p99 latency, then batch look-ups of 1,000 keys in
# keys/s on an idle job; with 2 workers and then with 1. The load generator runs in
# the same process, so its CPU counts against the job when the workers take every core.
#   ./scripts/bench-query.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowstate-target}"
cargo build --release -q --workspace --bin flowstate-bench
bin="$CARGO_TARGET_DIR/release/flowstate-bench"
runs=${1:-3}
echo "# $(date -u +%FT%TZ) $(nproc) cores, runs $runs"
# With 2 workers on 2 cores, every cycle the HTTP side spends is taken from the job;
# with 1 worker, the server and the load generator have the other core, as a client on
# another machine would (the job's own share of the cost is what remains).
for workers in 2 1; do
  RUST_LOG=warn "$bin" query --backend heap --events $((60000000 * workers)) --keys 100000 \
    --runs "$runs" --workers "$workers"
  RUST_LOG=warn "$bin" query --backend rocksdb --events $((3000000 * workers)) --keys 100000 \
    --runs "$runs" --workers "$workers"
done
