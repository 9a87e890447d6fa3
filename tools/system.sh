#!/usr/bin/env bash
# System parts the tests need, installed from Debian's packages when
# missing: FUSE (fusermount, for `skiff mount`) and e2fsprogs (mkfs.ext4,
# for file systems inside test images). Idempotent; prints nothing when all
# is there.
set -euo pipefail
need=()
command -v fusermount >/dev/null || command -v fusermount3 >/dev/null || need+=(fuse3)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
[ ${#need[@]} -eq 0 ] && exit 0
sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
echo "installing ${need[*]}" >&2
$sudo_ apt-get install -y "${need[@]}" >&2 || { $sudo_ apt-get update >&2 && $sudo_ apt-get install -y "${need[@]}" >&2; }
[ -e /dev/fuse ] || { echo "tools/system.sh: /dev/fuse is missing: this machine cannot mount FUSE file systems" >&2; exit 1; }
