#!/usr/bin/env bash
# Seeds each fuzz target's corpus (fuzz/corpus/<target>/) with the committed golden
# fixtures of its format. Safe to run repeatedly; the corpus is not committed.
set -euo pipefail
cd "$(dirname "$0")/.."
seed() {
  local target=$1; shift
  mkdir -p "fuzz/corpus/$target"
  for f in "$@"; do
    [ -f "$f" ] && cp "$f" "fuzz/corpus/$target/seed-$(echo "$f" | tr '/' '_')"
  done
  return 0
}
seed keygroup_file crates/flowstate-runtime/tests/golden/*/chk-*/*.kgs crates/flowstate-conformance/golden/*/*.kgs
seed operator_file crates/flowstate-runtime/tests/golden/*/chk-*/*.ops crates/flowstate-conformance/golden/*/*.ops
seed native_manifest crates/flowstate-rocksdb/tests/golden/*/native-manifest
seed checkpoint_metadata crates/flowstate-runtime/tests/golden/*/chk-*/_metadata
