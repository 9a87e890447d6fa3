#!/usr/bin/env bash
# The data-mover benchmark: skiff against restic and borg, in one run, on
# the same machine and the same images (bench/diskgen.rs):
#
#   1. the 4 GiB reference image (`gen --seed 42`): full backup to a local
#      repository; `mutate --seed 7` then an incremental; restore of the
#      incremental to a new file, checked equal with cmp — for each tool:
#      seconds, MB/s, peak RSS (/usr/bin/time -f %M), repository growth,
#      and skiff's ratios to each peer;
#   2. a sparse 1 TiB image holding a few GiB of data: skiff's full backup
#      and restore, to show memory does not grow with the volume's size.
#
# Usage: bench/run.sh [WORKDIR]   (default $BENCH_DIR or /tmp/skiff-bench;
# needs ~30 GB free there). With SKIFF_BASELINE=/path/to/another/skiff, that
# binary (an earlier build) runs the same three steps right after skiff's,
# and the report compares the two in the same run. Installs restic and borgbackup with apt-get if
# they are missing. Not a test: it takes minutes and needs both cores idle.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${BENCH_DIR:-/tmp/skiff-bench}}
mkdir -p "$work"
cd "$work"
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench SKIFF_PASSWORD=bench
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export SKIFF_LOG=warn

say() { printf '\n== %s\n' "$*" >&2; }

# ---------------------------------------------------------------- tools
if ! command -v restic >/dev/null || ! command -v borg >/dev/null; then
  say "installing restic and borgbackup"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get install -y restic borgbackup >&2
fi
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time (GNU time) is needed" >&2; exit 1; }

say "building diskgen and skiff (release)"
rustc --edition 2021 -O -o "$work/diskgen" "$here/bench/diskgen.rs"
(cd "$here" && cargo build --release --quiet --bin skiff)
skiff="${CARGO_TARGET_DIR:-$here/target}/release/skiff"
[ -x "$skiff" ] || { echo "bench: no $skiff" >&2; exit 1; }

base=${SKIFF_BASELINE:-}
[ -z "$base" ] || [ -x "$base" ] || { echo "bench: SKIFF_BASELINE=$base is not an executable" >&2; exit 1; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(restic version | head -1); $(borg --version); skiff $("$skiff" --version | awk '{print $2}')" >&2

# ---------------------------------------------------------------- helpers
declare -A SECS RSS
# timed NAME CMD… : runs CMD, records wall seconds and peak RSS (KiB).
timed() {
  local name=$1; shift
  # Start each step alike for every tool: the image in the page cache (the
  # machine's other work may have evicted it), and no dirty pages left by
  # the previous step, so one tool's write-back is not charged to the next.
  [ -f "$work/disk.img" ] && cat "$work/disk.img" >/dev/null
  sync; sleep 1
  /usr/bin/time -f '%e %M' -o "$work/.time" "$@" >"$work/$name.log" 2>&1 || {
    echo "bench: $name failed:" >&2; cat "$work/$name.log" >&2; exit 1; }
  read -r SECS[$name] RSS[$name] <"$work/.time"
  printf '  %-22s %7.2f s  %6d MiB\n' "$name" "${SECS[$name]}" $(( ${RSS[$name]} / 1024 )) >&2
}
size_of() { du -sb "$1" | cut -f1; }

# ---------------------------------------------------------------- 4 GiB
say "the 4 GiB image (gen --seed 42)"
if [ ! -f base.img ] || [ "$(stat -c %s base.img)" != 4294967296 ]; then
  ./diskgen gen base.img --size-mib 4096 --seed 42 >/dev/null
fi
rm -rf disk.img skiff-repo base-repo restic-repo borg-repo restore-*
cp base.img disk.img
image_bytes=$(stat -c %s disk.img)
sync

say "full backups"
"$skiff" repo init skiff-repo >/dev/null
[ -z "$base" ] || "$base" repo init base-repo >/dev/null
restic init --repo restic-repo >/dev/null 2>&1
borg init --encryption=repokey borg-repo >/dev/null 2>&1
timed skiff-full   "$skiff" copy file:disk.img repo:skiff-repo
[ -z "$base" ] || timed base-full "$base" copy file:disk.img repo:base-repo
timed restic-full  restic -r restic-repo backup disk.img
timed borg-full    borg create borg-repo::full disk.img
declare -A FULL_SIZE
for t in skiff restic borg; do FULL_SIZE[$t]=$(size_of $t-repo); done

say "mutate --seed 7, then incrementals"
./diskgen mutate disk.img --seed 7 >/dev/null
sync
timed skiff-incr   "$skiff" copy file:disk.img repo:skiff-repo
[ -z "$base" ] || timed base-incr "$base" copy file:disk.img repo:base-repo
timed restic-incr  restic -r restic-repo backup disk.img
timed borg-incr    borg create borg-repo::incr disk.img
declare -A GROWTH
for t in skiff restic borg; do GROWTH[$t]=$(( $(size_of $t-repo) - ${FULL_SIZE[$t]} )); done

say "restores of the incremental"
mkdir -p restore-restic restore-borg
timed skiff-restore  "$skiff" copy repo:skiff-repo file:restore-skiff.img
if [ -n "$base" ]; then
  timed base-restore "$base" copy repo:base-repo file:restore-base.img
  cmp disk.img restore-base.img
fi
timed restic-restore restic -r restic-repo restore latest --target restore-restic
timed borg-restore   sh -c "cd restore-borg && borg extract ../borg-repo::incr"
cmp disk.img restore-skiff.img
cmp disk.img "restore-restic$work/disk.img" 2>/dev/null || cmp disk.img restore-restic/disk.img
cmp disk.img restore-borg/disk.img
echo "  all three restores equal the image" >&2
rm -rf restore-*

# ---------------------------------------------------------------- sparse 1 TiB
say "a sparse 1 TiB image holding the 4 GiB image's data in four extents"
rm -rf sparse.img sparse-repo restore-sparse.img
truncate -s 1T sparse.img
# The reference image's four GiBs, far apart (zero MiBs stay holes).
extents="0:0 1:300 2:600 3:1023"
for e in $extents; do
  dd if=base.img of=sparse.img bs=1M count=1024 skip=$(( ${e%%:*} * 1024 )) seek=$(( ${e##*:} * 1024 )) conv=notrunc,sparse status=none
done
"$skiff" repo init sparse-repo >/dev/null
timed sparse-full     "$skiff" copy file:sparse.img repo:sparse-repo
timed sparse-restore  "$skiff" copy repo:sparse-repo file:restore-sparse.img
[ "$(stat -c %s restore-sparse.img)" = "$(stat -c %s sparse.img)" ]
for e in $extents; do
  at=${e##*:}
  cmp -n $((1 << 30)) -i $(( at << 30 )):$(( at << 30 )) sparse.img restore-sparse.img
done
echo "  the restored 1 TiB image matches (size and data extents); $(du -h restore-sparse.img | cut -f1) allocated" >&2
rm -f restore-sparse.img

# ---------------------------------------------------------------- report
mbps() { awk -v b="$image_bytes" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo
echo "4 GiB image ($(mbps 1) MB = 1 s): seconds (MB/s), peak RSS"
printf '%-8s %-18s %-18s %-18s %-10s %-22s\n' tool full incremental restore "peak RSS" "repo: full → +growth"
for t in skiff restic borg; do
  peak=$(printf '%s\n' "${RSS[$t-full]}" "${RSS[$t-incr]}" "${RSS[$t-restore]}" | sort -n | tail -1)
  printf '%-8s %-18s %-18s %-18s %-10s %-22s\n' "$t" \
    "${SECS[$t-full]} ($(mbps "${SECS[$t-full]}"))" \
    "${SECS[$t-incr]} ($(mbps "${SECS[$t-incr]}"))" \
    "${SECS[$t-restore]} ($(mbps "${SECS[$t-restore]}"))" \
    "$(( peak / 1024 )) MiB" \
    "$(mib "${FULL_SIZE[$t]}") → +$(mib "${GROWTH[$t]}") MiB"
done
echo
echo "skiff's ratios (speed: peer seconds / skiff seconds; growth: skiff / peer)"
for p in borg restic; do
  printf '  vs %-6s full %5sx  incremental %5sx  restore %5sx  incremental growth %5sx\n' "$p" \
    "$(ratio "${SECS[$p-full]}" "${SECS[skiff-full]}")" \
    "$(ratio "${SECS[$p-incr]}" "${SECS[skiff-incr]}")" \
    "$(ratio "${SECS[$p-restore]}" "${SECS[skiff-restore]}")" \
    "$(ratio "${GROWTH[skiff]}" "${GROWTH[$p]}")"
done
if [ -n "$base" ]; then
  echo
  echo "skiff against SKIFF_BASELINE ($base), same run: baseline seconds / skiff seconds (above 1: skiff is faster)"
  for step in full incr restore; do
    printf '  %-8s %6.2f s vs %6.2f s  %5sx   peak RSS %d vs %d MiB\n' "$step" \
      "${SECS[skiff-$step]}" "${SECS[base-$step]}" "$(ratio "${SECS[base-$step]}" "${SECS[skiff-$step]}")" \
      $(( ${RSS[skiff-$step]} / 1024 )) $(( ${RSS[base-$step]} / 1024 ))
  done
fi
echo
echo "sparse 1 TiB image, $(du -BM sparse.img | cut -f1) allocated: backup ${SECS[sparse-full]} s, $(( ${RSS[sparse-full]} / 1024 )) MiB peak; restore ${SECS[sparse-restore]} s, $(( ${RSS[sparse-restore]} / 1024 )) MiB peak"
echo
full_b=$(ratio "${SECS[borg-full]}" "${SECS[skiff-full]}")
incr_b=$(ratio "${SECS[borg-incr]}" "${SECS[skiff-incr]}")
rest_r=$(ratio "${SECS[restic-restore]}" "${SECS[skiff-restore]}")
grow_r=$(ratio "${GROWTH[skiff]}" "${GROWTH[restic]}")
peak=$(printf '%s\n' "${RSS[skiff-full]}" "${RSS[skiff-incr]}" "${RSS[skiff-restore]}" "${RSS[sparse-full]}" "${RSS[sparse-restore]}" | sort -n | tail -1)
echo "targets"
awk -v v="$full_b" 'BEGIN { printf "  %-34s %6sx >= 4    %s\n", "full backup speed vs borg", v, (v >= 4 ? "ok" : "MISSED") }'
awk -v v="$incr_b" 'BEGIN { printf "  %-34s %6sx >= 6    %s\n", "incremental speed vs borg", v, (v >= 6 ? "ok" : "MISSED") }'
awk -v v="$rest_r" 'BEGIN { printf "  %-34s %6sx >= 3    %s\n", "restore speed vs restic", v, (v >= 3 ? "ok" : "MISSED") }'
awk -v v="$grow_r" 'BEGIN { printf "  %-34s %6sx <= 0.6  %s\n", "incremental growth vs restic", v, (v <= 0.6 ? "ok" : "MISSED") }'
awk -v v="$(( peak / 1024 ))" 'BEGIN { printf "  %-34s %6s MiB <= 256  %s\n", "skiff peak RSS (all runs)", v, (v <= 256 ? "ok" : "MISSED") }'
