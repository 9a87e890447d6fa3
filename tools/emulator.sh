#!/usr/bin/env bash
# Starts the local AWS emulator (moto, with skiff's AWS-fidelity patches) and
# prints `export` lines that point the AWS SDK and skiff at it:
#
#   eval "$(tools/emulator.sh start)"    # start, and set AWS_ENDPOINT_URL etc.
#   tools/emulator.sh stop               # stop the one started from this folder
#
# The emulator keeps its state in memory only; stopping it forgets everything.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
state=${SKIFF_EMULATOR_STATE:-${XDG_RUNTIME_DIR:-/tmp}/skiff-emulator-$(id -u)}
case "${1:-start}" in
  start)
    py=$("$here/tools/venv.sh")
    mkdir -p "$state"
    if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
      port=$(cat "$state/port")
    else
      rm -f "$state/out"
      nohup "$py" "$here/tests/emulator/moto_server.py" --port "${SKIFF_EMULATOR_PORT:-0}" --no-stdin-watch \
        >"$state/out" 2>"$state/log" </dev/null &
      echo $! >"$state/pid"
      for _ in $(seq 1 100); do
        grep -q '^PORT ' "$state/out" 2>/dev/null && break
        sleep 0.1
      done
      port=$(awk '/^PORT /{print $2}' "$state/out")
      [ -n "$port" ] || { echo "skiff: the emulator did not start; see $state/log" >&2; exit 1; }
      echo "$port" >"$state/port"
    fi
    cat <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
ENV
    ;;
  stop)
    if [ -f "$state/pid" ]; then kill "$(cat "$state/pid")" 2>/dev/null || true; rm -f "$state/pid" "$state/port"; fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
