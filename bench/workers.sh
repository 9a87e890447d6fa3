#!/usr/bin/env bash
# Worker overhead against the local emulator: time from `deploy_worker` to
# the agent's first answer, and the overhead per worker for 50 resources in
# one run, with the default `max_per_region` (8) and with 50; for public
# workers, then for private ones (each launch preflighted, the way to a
# repository's S3 endpoint included; PRIVATE=0 skips them, e.g. for a binary
# older than deploy_worker's `repositories`). Prints JSON.
#
#   bench/workers.sh [SKIFF_BINARY] [N]   (default: target/release/skiff, else target/debug/skiff; N = 50)
#
# The local launcher starts `skiff agent` as a process per emulated instance,
# so this measures skiff's own work (EC2/SQS/IAM calls, queue set-up, agent
# start, teardown); on AWS an instance's boot adds its own ~20-40 s.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
bin=${1:-}
if [ -z "$bin" ]; then
  if [ -x "$target/release/skiff" ]; then bin=$target/release/skiff; else bin=$target/debug/skiff; fi
fi
n=${2:-50}
# A fresh emulator: one that ran earlier benches is slower with what they left.
"$here/tools/emulator.sh" stop >/dev/null 2>&1 || true
eval "$("$here/tools/emulator.sh" start)"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
work=$(mktemp -d)
trap 'rm -rf "$work"; "$here/tools/emulator.sh" stop >/dev/null 2>&1 || true' EXIT
cp "$here/bench/workers.lua" "$work/"
for private in false true; do
  [ "$private" = true ] && [ "${PRIVATE:-1}" = 0 ] && continue
  for max in 8 "$n"; do
    printf 'region = "us-east-1"\n[workers]\nlauncher = "local"\nmax_per_region = %s\n' "$max" >"$work/skiff.toml"
    out=$(cd "$work" && SKIFF_LOG=warn "$bin" run --config skiff.toml workers.lua "n=$n" "private=$private" | tail -1)
    echo "{\"binary\": \"$(basename "$(dirname "$bin")")\", \"private\": $private, \"max_per_region\": $max, \"result\": $out}"
  done
done
