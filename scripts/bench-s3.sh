#!/usr/bin/env bash
# Checkpoints on S3 beside a local directory, back to back: the `counts` job over
# 1,000,000 keys on both backends, once with `--checkpoint-dir` local and once on a
# real S3-compatible server (`s3s-fs`, started here on 127.0.0.1, storing on the same
# disk). Prints per configuration the median checkpoint duration, full and written
# size (from `flowstate checkpoints`), and the time the slowest worker took to restore
# the final checkpoint at 2 workers from it; `s3+copy` runs on S3 with local recovery
# (`--local-recovery`) and restores from the local copy.
#   EVENTS=3000000 KEYS=1000000 ./scripts/bench-s3.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowstate-target}"
cargo build --release -q --workspace --bin flowstate
bin="$CARGO_TARGET_DIR/release/flowstate"
base="${BENCH_DIR:-/tmp/flowstate-bench-s3}"
events="${EVENTS:-3000000}"
keys="${KEYS:-1000000}"
interval="${INTERVAL_MS:-2000}"
# Only what this script makes below the directory (it may be one of the user's).
rm -rf "$base/s3"
for b in heap rocksdb; do for w in local s3 s3+copy; do rm -rf "${base:?}/$b-$w"; done; done
mkdir -p "$base/s3/bench"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
s3s="$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")"
"$s3s" --host 127.0.0.1 --port "$port" --access-key bench --secret-key bench-secret "$base/s3" \
  >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
s3env=(AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret)
sleep 1
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print 0}'; }
printf '%-8s %-7s %6s %12s %14s %14s %12s\n' backend where chks "median ms" "median full B" \
  "median written B" "restore ms"
for backend in heap rocksdb; do
  for where in local s3 s3+copy; do
    dir="$base/$backend-$where"
    mkdir -p "$dir"
    copy=()
    case "$where" in
      local) ck="$dir/ck"; run=(env) ;;
      s3) ck="s3://bench/$backend"; run=(env "${s3env[@]}") ;;
      s3+copy) ck="s3://bench/$backend-copy"; run=(env "${s3env[@]}")
        copy=(--local-recovery "$dir/copy") ;;
    esac
    RUST_LOG=warn "${run[@]}" "$bin" run counts --backend "$backend" --workers 2 --fresh \
      --checkpoint-dir "$ck" --local-dir "$dir/rocks" --out "$dir/out" --events "$events" \
      --keys "$keys" --checkpoint-interval "$interval" --retained 1000 "${copy[@]}" >/dev/null
    "${run[@]}" "$bin" checkpoints "$ck" > "$dir/table"
    rows=$(tail -n +2 "$dir/table")
    n=$(echo "$rows" | wc -l)
    dur=$(echo "$rows" | awk '{print $4}' | tr -d ms | median)
    full=$(echo "$rows" | awk '{print $7}' | median)
    written=$(echo "$rows" | awk '{print $8}' | median)
    # Restored as the same job restarting (its newest checkpoint, its local copy).
    ms=$(RUST_LOG=info "${run[@]}" "$bin" run counts --backend "$backend" --workers 2 \
      --checkpoint-dir "$ck" --local-dir "$dir/rocks" "${copy[@]}" \
      --out "$dir/out" --events "$events" --keys "$keys" \
      2>&1 >/dev/null | sed -nE 's/.*restored its state in ([0-9]+) ms.*/\1/p' | sort -n | tail -1)
    printf '%-8s %-7s %6s %12s %14s %14s %12s\n' "$backend" "$where" "$n" "$dur" "$full" \
      "$written" "$ms"
  done
done
