#!/usr/bin/env bash
# Fuzzes every decoder of an on-disk format (cargo fuzz, nightly toolchain), seeded
# from the golden fixtures.
#   ./scripts/fuzz.sh                 # 20000 runs per target (what CI does)
#   ./scripts/fuzz.sh --runs N        # N runs per target
#   ./scripts/fuzz.sh --time SECONDS  # SECONDS per target
#   ./scripts/fuzz.sh --time 3600 keygroup_file   # one target
# Without a nightly toolchain it says so and exits 0 (nothing else can build it).
# A crash stops the script with libFuzzer's report; the input is kept in
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
# Bounded runs use a fixed seed, so CI is repeatable; timed runs explore.
limit="-runs=20000 -seed=1"
case "${1:-}" in
  --runs) limit="-runs=$2 -seed=1"; shift 2 ;;
  --time) limit="-max_total_time=$2"; shift 2 ;;
esac
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(keygroup_file operator_file native_manifest rocksdb_list checkpoint_metadata checkpoint_history state_schema)
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain here; fuzzing skipped" >&2
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
./fuzz/seeds.sh
target_dir="${FUZZ_TARGET_DIR:-$HOME/.cache/flowstate-fuzz-target}"
mkdir -p fuzz/logs
for t in "${targets[@]}"; do
  echo "fuzz: $t ($limit)" >&2
  # shellcheck disable=SC2086
  if ! cargo +nightly fuzz run --fuzz-dir fuzz --target-dir "$target_dir" "$t" "fuzz/corpus/$t" -- \
    $limit -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 >"fuzz/logs/$t.log" 2>&1; then
    cat "fuzz/logs/$t.log" >&2
    echo "fuzz: $t failed (input kept in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb)' \
    "fuzz/logs/$t.log" >&2 || true
done
