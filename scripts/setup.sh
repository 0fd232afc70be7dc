#!/usr/bin/env bash
# Installs what building Flowstate needs when it is missing (fresh machines):
# libclang for RocksDB's bindings, s3s-fs for the S3 tests, chromium for the page test.
# Safe to run repeatedly.
set -euo pipefail
if ! ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'libclang\.so'; then
  echo "setup: installing libclang-dev (needed by RocksDB's bindings)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi
# s3s-fs: the S3-compatible server the S3 checkpoint tests start on 127.0.0.1
# (`flowstate_storage::s3_test_server`). Built in a scratch target directory so the
# project's own build cache is not touched.
if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  echo "setup: installing s3s-fs (the S3 server of the tests)" >&2
  scratch=$(mktemp -d)
  CARGO_TARGET_DIR="$scratch" cargo install s3s-fs@0.14.1 --features binary --locked --quiet
  rm -rf "$scratch"
fi
# Chromium: the headless browser the history-page test looks at the page with.
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (the page test's browser)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
