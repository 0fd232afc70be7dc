#!/usr/bin/env bash
# The whole test suite, as CI runs it: format, lints, every test of every crate, the API
# docs (every intra-doc link resolving), then a bounded fuzz run of every on-disk format
# decoder.
# One build profile (release) for tests, demo and benchmarks: RocksDB builds once.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowstate-target}"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
# A heap-only job compiles no C++: the runtime and the harness without their default
# features have no RocksDB in their dependency tree, and type-check and lint with their
# tests and examples. (A separate build of them only re-did the codegen, minutes of CI.)
heap_tree=$(cargo tree -q -e normal,build -p flowstate-runtime -p flowstate-app --no-default-features)
if grep -q librocksdb-sys <<< "$heap_tree"; then
  echo "test: the heap-only runtime and harness depend on librocksdb-sys" >&2
  exit 1
fi
cargo clippy --release -p flowstate-runtime -p flowstate-app --no-default-features --all-targets -- -D warnings
cargo test --release --workspace
# The crates' API docs, with every warning (a link to a missing or private item) an
# error; after the tests, so it reuses their build (about 20 s).
RUSTDOCFLAGS="-D warnings" cargo doc --release --workspace --no-deps
# Every decoder of an on-disk format, 20000 fuzzed inputs each (nightly toolchain).
./scripts/fuzz.sh --runs 20000
