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
seed rocksdb_list crates/flowstate-core/tests/golden/rocksdb_list/*
seed checkpoint_metadata crates/flowstate-runtime/tests/golden/*/chk-*/_metadata
seed checkpoint_history crates/flowstate-core/tests/golden/history/*/_history
# State schemas: u16 length, schema JSON, then a value's bytes.
seed_schema() {
  local name=$1 json=$2 value=$3
  mkdir -p fuzz/corpus/state_schema
  { printf "%04x" "${#json}" | sed 's/\(..\)\(..\)/\\x\2\\x\1/' | xargs -0 printf; printf '%s' "$json"; printf "$value"; } \
    > "fuzz/corpus/state_schema/seed-$name"
}
seed_schema order '{"v":1,"root":{"named":"Order"},"types":{"Order":{"struct":[{"name":"id","shape":"u64"},{"name":"user","shape":"str"},{"name":"tags","shape":{"seq":{"tuple":["u8","i64"]}}},{"name":"status","shape":{"named":"S"}}]},"S":{"enum":[{"index":0,"name":"Open","body":"unit"},{"index":1,"name":"Done","body":{"struct":[{"name":"at","shape":"u32"}]}}]}}}' '\x07\x02hi\x01\x03\x04\x01\x09'
seed_schema map '{"v":1,"root":{"map":{"key":"str","value":{"option":"f32"}}},"types":{}}' '\x01\x01k\x01\x00\x00\x80\x3f'
