#!/usr/bin/env bash
# Benchmarks of `skiff serve`: hot reload (save -> new version active, median
# of 20 saves), schedule firing delay, and idle CPU with 100 policies.
# Targets: <= 300 ms, <= 1 s, < 1 %. Prints JSON; exits 1 if a target is missed.
#
#   bench/serve.sh [SKIFF_BINARY]     (default: target/release/skiff, else target/debug/skiff)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
bin=${1:-}
if [ -z "$bin" ]; then
  if [ -x "$target/release/skiff" ]; then bin=$target/release/skiff; else bin=$target/debug/skiff; fi
fi
exec python3 "$here/bench/serve_bench.py" "$bin"
