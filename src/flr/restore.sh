# The constant part of a restore to the original location (see restore.rs).
# skiff writes, above this text, the values as base64 (every name may hold
# spaces, quotes, newlines, `$` or bytes that are not UTF-8; base64 keeps
# them out of the shell's parsing): URL_B64, UUID_B64, STAMP_B64,
# OVERWRITE (0 or 1) and ITEMS ("index path base" triples); then the
# restore runs. It prints one line per item, `skiff-restore ok K DEST` or
# `skiff-restore failed K REASON`, DEST and REASON in base64.
#
# Replace semantics (OVERWRITE=1): whatever is at the destination (file,
# folder tree or link) is set aside, the archived item takes its place, and
# what was set aside is removed; files the destination held that the
# archive does not are gone afterwards. If the item cannot be put in place,
# the original is moved back. Without OVERWRITE the item goes to
# DEST.restored-STAMP and the original is never touched.
set -u
umask 022
FAILED=0

# dec B64: sets REPLY to the bytes B64 encodes (trailing newlines kept).
dec() {
  REPLY=$(printf '%s' "$1" | base64 -d && printf x)
  REPLY=${REPLY%x}
}
enc() { printf '%s' "$1" | base64 | tr -d '\n'; }
say_ok() { printf 'skiff-restore ok %s %s\n' "$1" "$(enc "$2")"; }
say_failed() {
  printf 'skiff-restore failed %s %s\n' "$1" "$(enc "$2")"
  FAILED=1
}
# fail_all REASON: every item fails for REASON, and the script stops.
fail_all() {
  _reason=$1
  set -f
  set -- $ITEMS
  while [ $# -ge 3 ]; do
    say_failed "$1" "$_reason"
    shift 3
  done
  exit 1
}
# inside PATH: whether PATH, its symbolic links resolved, stays under the root.
inside() {
  _real=$(realpath -m -- "$1" 2>/dev/null) || return 1
  case $_real/ in
    "$base"/*) return 0 ;;
    *) return 1 ;;
  esac
}

command -v realpath >/dev/null 2>&1 || fail_all "realpath (GNU coreutils) is not installed"
dec "$STAMP_B64"
stamp=$REPLY

# Where the filesystem is mounted here.
if [ -n "${SKIFF_RESTORE_ROOT:-}" ]; then
  root=$SKIFF_RESTORE_ROOT
elif [ -n "$UUID_B64" ]; then
  dec "$UUID_B64"
  root=$(findmnt -n -o TARGET --source "UUID=$REPLY" 2>/dev/null | head -n 1)
  [ -n "$root" ] || fail_all "no filesystem with UUID $REPLY is mounted on this instance"
else
  fail_all "the filesystem has no UUID, so where it is mounted on this instance cannot be found"
fi
real=$(realpath -e -- "$root" 2>&1) || fail_all "the filesystem's mount point $root: $real"
[ -d "$real" ] || fail_all "the filesystem's mount point $root is not a folder"
# "" for /, so that "$base/$path" never starts with //.
base=${real%/}

# The archive is unpacked next to where it goes (same filesystem: the
# moves are renames, and a tmpfs /tmp need not hold it), streamed, never
# stored whole. Owners and modes come from the archive, by number.
tmp=$(mktemp -d "$base/.skiff-restore.XXXXXX" 2>&1) || fail_all "cannot make a temporary folder in $real: $tmp"
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -- "$tmp/x"
dec "$URL_B64"
url=$REPLY
if command -v curl >/dev/null 2>&1; then
  fetch() { curl -fsS --retry 3 "$url"; }
elif command -v wget >/dev/null 2>&1; then
  fetch() { wget -q -O - "$url"; }
else
  fail_all "neither curl nor wget is installed"
fi
{ fetch 2>"$tmp/fetch.err" || echo "$?" >"$tmp/fetch.rc"; } |
  tar -x -p --numeric-owner -f - -C "$tmp/x" 2>"$tmp/tar.err"
tar_rc=$?
if [ -s "$tmp/fetch.rc" ]; then
  fail_all "downloading the archive failed (exit $(cat "$tmp/fetch.rc")): $(tail -n 3 "$tmp/fetch.err")"
fi
[ "$tar_rc" = 0 ] || fail_all "unpacking the archive failed: $(tail -n 3 "$tmp/tar.err")"

# restore_item K PATH_B64 NAME_B64: the archive's K/NAME goes to $base/PATH.
restore_item() {
  k=$1
  dec "$2"
  dst=$base/$REPLY
  dec "$3"
  src=$tmp/x/$k/$REPLY
  [ "$OVERWRITE" = 1 ] || dst=$dst.restored-$stamp
  parent=${dst%/*}
  [ -n "$parent" ] || parent=/
  if [ ! -e "$src" ] && [ ! -L "$src" ]; then
    say_failed "$k" "the archive holds no item $k"
    return
  fi
  # mkdir -p would follow a link in the parents wherever it leads.
  if ! inside "$parent"; then
    say_failed "$k" "$parent leads outside $real through a symbolic link; nothing written"
    return
  fi
  if ! err=$(mkdir -p -- "$parent" 2>&1); then
    say_failed "$k" "cannot create $parent: $err"
    return
  fi
  if ! inside "$parent"; then
    say_failed "$k" "$parent leads outside $real through a symbolic link; nothing written"
    return
  fi
  if [ -e "$dst" ] || [ -L "$dst" ]; then
    if [ "$OVERWRITE" != 1 ]; then
      say_failed "$k" "$dst already exists; nothing written"
      return
    fi
    # Set aside in the same folder (same filesystem: a rename).
    if ! hold=$(mktemp -d "$parent/.skiff-old.XXXXXX" 2>&1); then
      say_failed "$k" "cannot set the original aside in $parent: $hold"
      return
    fi
    if ! err=$(mv -- "$dst" "$hold/o" 2>&1); then
      rmdir -- "$hold"
      say_failed "$k" "cannot set the original aside: $err"
      return
    fi
    if ! err=$(mv -- "$src" "$dst" 2>&1); then
      mv -- "$hold/o" "$dst" && rmdir -- "$hold"
      say_failed "$k" "cannot write $dst: $err; the original is in place"
      return
    fi
    rm -rf -- "$hold"
  elif ! err=$(mv -- "$src" "$dst" 2>&1); then
    say_failed "$k" "cannot write $dst: $err"
    return
  fi
  say_ok "$k" "$dst"
}

set -f
set -- $ITEMS
while [ $# -ge 3 ]; do
  restore_item "$1" "$2" "$3"
  shift 3
done
exit "$FAILED"
