#!/usr/bin/env bash
# File-level recovery figures, in one run on this machine (needs root:
# loop devices and FUSE, as a session does):
#
#   1. time from `skiff flr --local` to the first listing of a 16 GiB
#      volume (ext4, mostly empty: what a session must read to list it is
#      the partition table, the superblock, the group descriptors and the
#      root folder — not the volume);
#   2. the download rate of a 1 GiB file through the browser's HTTPS
#      server (curl, pinned to the session's key) as a ratio to `skiff copy`
#      restoring the same point to a file — for several files made by
#      bench/diskgen.rs (seeds 42 and 43, and seed 42 mutated uniformly),
#      reporting each and the worst.
#
# Usage: bench/flr.sh [WORKDIR]   (default $BENCH_DIR or /tmp/skiff-flr-bench;
# needs ~8 GB free there). Not a test: it takes minutes and wants both
# cores idle.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${BENCH_DIR:-/tmp/skiff-flr-bench}}
mkdir -p "$work"
cd "$work"
export SKIFF_PASSWORD=bench SKIFF_LOG=warn
"$here/tools/system.sh"
command -v bc >/dev/null || apt-get install -y bc >&2

say() { printf '\n== %s\n' "$*" >&2; }
now() { date +%s.%N; }

say "building skiff (release) and diskgen"
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
skiff=${CARGO_TARGET_DIR:-$here/target}/release/skiff
[ -x diskgen ] || rustc --edition 2021 -O -o diskgen "$here/bench/diskgen.rs"

rm -rf repo && "$skiff" repo init repo >/dev/null

# A session: starts skiff flr, waits for its URL; sets url, spki, pid.
open_session() {
  local point=$1 out=$2
  "$skiff" flr "repo:repo#$point" --local --ttl 1h >"$out" 2>"$out.err" &
  pid=$!
  until grep -q '^ends:' "$out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$out.err" >&2; exit 1; }
    sleep 0.02
  done
  url=$(sed -n 's/^url: *//p' "$out")
  spki=$(sed -n 's/^public key: *SHA-256 \([^ ]*\).*/\1/p' "$out")
}
close_session() { kill -INT "$pid"; wait "$pid" || true; }
get() { curl -sS -k --pinnedpubkey "sha256//$spki" "$@"; }
backup() { "$skiff" copy "file:$1" repo:repo --volume "$2" | sed -n 's/.*point \([0-9a-f]*\).*/\1/p'; }

say "1. a 16 GiB volume: from skiff flr --local to its first listing"
rm -rf src16 && mkdir -p src16/etc src16/home/user
echo web-1 > src16/etc/hostname
for i in $(seq 1 200); do echo "line $i" > "src16/home/user/file-$i.txt"; done
rm -f v16.img && truncate -s 16G v16.img
mkfs.ext4 -q -d src16 v16.img
p16=$(backup v16.img v16)
best=""
for run in 1 2 3; do
  t0=$(now)
  open_session "$p16" s16.out
  # The first listing: the partitions page, then the filesystem's root.
  base=${url%%\?*}
  token=${url#*\?t=}
  get -o /dev/null "$url"
  get -o list.html -H "Authorization: Bearer $token" "${base}p/0/"
  t1=$(now)
  grep -q 'home/' list.html || { echo "the listing does not show home/" >&2; exit 1; }
  close_session
  s=$(echo "$t1 - $t0" | bc -l)
  printf 'run %d: %.2f s to the first listing\n' "$run" "$s"
  best=$(printf '%s\n' $best "$s" | sort -g | tail -1)
done
printf 'first listing of a 16 GiB volume: worst of 3 = %.2f s\n' "$best"

say "2. a 1 GiB file: browser download vs skiff copy of the same point"
worst=""
for variant in seed42 seed43 seed42-uniform; do
  rm -rf src1 && mkdir src1
  case $variant in
    seed42) ./diskgen gen src1/data.bin --size-mib 1024 --seed 42 >/dev/null ;;
    seed43) ./diskgen gen src1/data.bin --size-mib 1024 --seed 43 >/dev/null ;;
    seed42-uniform) ./diskgen gen src1/data.bin --size-mib 1024 --seed 42 >/dev/null
                    ./diskgen mutate src1/data.bin --seed 7 --mode uniform >/dev/null ;;
  esac
  rm -f v1.img && truncate -s 1200M v1.img
  mkfs.ext4 -q -d src1 v1.img
  p1=$(backup v1.img "v1-$variant")
  img_bytes=$(stat -c %s v1.img)
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now); "$skiff" copy "repo:repo#$p1" file:restored.img >/dev/null; t1=$(now)
  copy_rate=$(echo "$img_bytes / ($t1 - $t0)" | bc -l)
  open_session "$p1" s1.out
  base=${url%%\?*}
  token=${url#*\?t=}
  t0=$(now)
  get -o got.bin -H "Authorization: Bearer $token" "${base}p/0/data.bin?download"
  t1=$(now)
  close_session
  cmp got.bin src1/data.bin
  dl_rate=$(echo "$(stat -c %s got.bin) / ($t1 - $t0)" | bc -l)
  ratio=$(echo "$dl_rate / $copy_rate" | bc -l)
  printf '%-15s download %6.1f MB/s, skiff copy %6.1f MB/s: ratio %.2f\n' \
    "$variant" "$(echo "$dl_rate/1000000" | bc -l)" "$(echo "$copy_rate/1000000" | bc -l)" "$ratio"
  worst=$(printf '%s\n' $worst "$ratio" | sort -g | head -1)
  rm -f restored.img got.bin
done
printf 'download through the browser / skiff copy restore: worst = %.2f\n' "$worst"
