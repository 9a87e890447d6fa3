#!/usr/bin/env bash
# System parts the tests need, installed from Debian's packages when
# missing: FUSE (fusermount, for `skiff mount`), the filesystems' tools
# (mkfs.ext4, mkfs.xfs, mkfs.btrfs, mkfs.vfat, for file systems inside test
# images), sfdisk and losetup (partition tables, loop devices), and
# Chromium with its driver (the file-level-recovery browser test). Checks
# that loop devices can be used (file-level recovery mounts images through
# them). Idempotent; prints nothing when all is there.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have fusermount || have fusermount3 || need+=(fuse3)
have mkfs.ext4 || need+=(e2fsprogs)
have mkfs.xfs || need+=(xfsprogs)
have mkfs.btrfs || need+=(btrfs-progs)
have mkfs.vfat || need+=(dosfstools)
have losetup || need+=(mount)
have sfdisk || need+=(fdisk)
have chromium || need+=(chromium)
have chromedriver || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  echo "installing ${need[*]}" >&2
  $sudo_ apt-get install -y "${need[@]}" >&2 || { $sudo_ apt-get update >&2 && $sudo_ apt-get install -y "${need[@]}" >&2; }
fi
[ -e /dev/fuse ] || { echo "tools/system.sh: /dev/fuse is missing: this machine cannot mount FUSE file systems" >&2; exit 1; }
[ -e /dev/loop-control ] || { echo "tools/system.sh: /dev/loop-control is missing: no loop devices (load the loop module: modprobe loop; in a container, pass /dev/loop-control and /dev/loop* in)" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then
  # Asking for a free device is harmless and proves the loop driver answers.
  losetup -f >/dev/null 2>&1 || { echo "tools/system.sh: loop devices are not usable here (losetup -f failed: $(losetup -f 2>&1)); file-level recovery mounts images through them" >&2; exit 1; }
fi
