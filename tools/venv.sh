#!/usr/bin/env bash
# Prints the path of a Python that has the pinned emulator (moto[server]),
# creating the virtual environment on first use. The venv lives outside the
# clone, keyed by the requirements' hash, so reruns and CI reuse it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
req="$here/tests/emulator/requirements.txt"
hash=$(sha256sum "$req" | cut -c1-12)
root=${SKIFF_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}
venv="$root/venv-$hash"
mkdir -p "$root"
# One installer at a time: parallel test runs wait for the first to finish
# instead of deleting each other's half-made environment.
exec 9>"$root/venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "skiff: installing the emulator (moto[server]) into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$root"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
