#!/usr/bin/env bash
# The README's main command run as a user runs it: twice (the second run must mount the
# filesystem the first one made, files and all, not format it again), a third time while
# it is mounted (nothing to do), and over a file that is not ours (refused, untouched).
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(mktemp -d /tmp/lfs-run.XXXXXX)
cleanup() {
  mountpoint -q "$W/mnt" && umount "$W/mnt" || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "run-twice.sh: $*"; exit 1; }
scripts/run.sh "$W/lfs.img" 256M "$W/mnt" > "$W/run1.log" 2>&1 || { cat "$W/run1.log"; fail "first run failed"; }
echo kept > "$W/mnt/file"
mkdir "$W/mnt/dir"
umount "$W/mnt"
scripts/run.sh "$W/lfs.img" 256M "$W/mnt" > "$W/run2.log" 2>&1 || { cat "$W/run2.log"; fail "second run failed"; }
[ "$(cat "$W/mnt/file" 2>/dev/null)" = kept ] && [ -d "$W/mnt/dir" ] || fail "the second run lost the files"
scripts/run.sh "$W/lfs.img" 256M "$W/mnt" > "$W/run3.log" 2>&1 || { cat "$W/run3.log"; fail "third run (mounted) failed"; }
grep -q "already a mountpoint" "$W/run3.log" || fail "third run did not notice the mount"
umount "$W/mnt"
head -c 1M /dev/urandom > "$W/other.img"
sum=$(md5sum < "$W/other.img")
if scripts/run.sh "$W/other.img" 256M "$W/mnt2" > "$W/run4.log" 2>&1; then fail "formatted a file that is not ours"; fi
[ "$(md5sum < "$W/other.img")" = "$sum" ] || fail "a file that is not ours was changed"
echo "run-twice.sh: run twice keeps the files, a third run leaves the mount, a foreign file is refused: 1 passed, 0 failed"
