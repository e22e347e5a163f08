#!/usr/bin/env bash
# Memory of a mount as files are touched: lfs-fuse's RSS after creating N files of 100 bytes
# in 100 directories, a remount, `stat` of every file, and `cat` of every file.
#   scripts/rss-bench.sh [N] [INODE_CACHE]     (defaults: 100000, the mount's default)
# Run it twice, with and without a budget (a huge INODE_CACHE), to compare in one session.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
CACHE=${2:-16384}
cargo build --release -q -p mkfs-lfs -p lfs-fuse
B=$PWD/target/release
T=$(mktemp -d /tmp/lfs-rss.XXXXXX)
IMG=$T/fs.img
MNT=$T/mnt
mkdir "$MNT"
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    wait "$PID" || true
  fi
  rm -rf "$T"
}
trap cleanup EXIT
mount_it() {
  "$B/lfs-fuse" "$IMG" "$MNT" -f -o inode_cache="$CACHE" 2>/dev/null &
  PID=$!
  while ! mountpoint -q "$MNT"; do sleep 0.1; done
}
unmount_it() {
  kill -TERM "$PID"
  wait "$PID" || true
  PID=
}
"$B/mkfs-lfs" -q "$IMG" 4G
mount_it
python3 - "$MNT" "$N" <<'PY'
import os, sys
mnt, n = sys.argv[1], int(sys.argv[2])
for d in range(100):
    os.mkdir(f"{mnt}/d{d}")
for i in range(n):
    fd = os.open(f"{mnt}/d{i % 100}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"x" * 100)
    os.close(fd)
PY
unmount_it
mount_it
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$PID/status"; }
echo "rss-bench: $N files, inode_cache=$CACHE: after mount $(rss)"
find "$MNT" -type f -print0 | xargs -0 stat --format=%s > /dev/null
echo "rss-bench: $N files, inode_cache=$CACHE: after stat of all $(rss)"
find "$MNT" -type f -print0 | xargs -0 cat > /dev/null
echo "rss-bench: $N files, inode_cache=$CACHE: after cat of all $(rss)"
unmount_it
