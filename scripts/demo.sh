#!/usr/bin/env bash
# The main demo: a keyed, checkpointed job. Pass demo flags after the script name,
# e.g. `./scripts/demo.sh --workers 3` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowstate-target}"
exec cargo run --release -q -p flowstate-demo -- "$@"
