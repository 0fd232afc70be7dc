#!/usr/bin/env bash
# Issue "schema evolution" figures, side by side in one script:
#  1. hot path of the default serializer: `flowstate-bench state` of a build before
#     state schemas (OLD) and of this one (NEW), alternated ROUNDS times per backend;
#  2. migration throughput at restore (`flowstate-bench migrate`, 1M values).
#   ./scripts/bench-schema.sh OLD_BENCH_BINARY NEW_BENCH_BINARY [ROUNDS]
# (build OLD from a worktree of an older commit with the same CARGO_TARGET_DIR.)
set -euo pipefail
old=$1 new=$2 rounds=${3:-2}
ops=(--op valueGet --op valueUpdate --op mapGet --op mapAdd --op mapUpdate)
echo "# $(date -u +%FT%TZ) $(nproc) cores"
for backend in heap rocksdb; do
  for r in $(seq "$rounds"); do
    for side in old new; do
      bin=$old; [ "$side" = new ] && bin=$new
      "$bin" state --backend "$backend" --iterations 3 --seconds 1 "${ops[@]}" --json \
        | sed "s/^{/{\"side\":\"$side\",\"round\":$r,/"
    done
  done
done
for backend in heap rocksdb; do
  "$new" migrate --backend "$backend" --values 1000000 --iterations 3
done
