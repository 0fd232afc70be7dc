#!/usr/bin/env bash
# Installs what building Flowstate needs when it is missing (fresh machines):
# libclang for RocksDB's bindings. Safe to run repeatedly.
set -euo pipefail
if ! ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'libclang\.so'; then
  echo "setup: installing libclang-dev (needed by RocksDB's bindings)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi
