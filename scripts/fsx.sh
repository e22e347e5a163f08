#!/usr/bin/env bash
# fsx (crate fsx) against a real lfs-fuse mount, every operation kind enabled, across
# unmount/remount cycles.
#   scripts/fsx.sh [OPS_PER_CYCLE] [CYCLES] [SEED]     (defaults: 25000 4 1)
# Each cycle runs fsx on a new file; after each remount every earlier file must still have
# the checksum it had before the unmount. Installs fsx when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${1:-25000}
CYCLES=${2:-4}
SEED=${3:-1}
command -v fsx >/dev/null 2>&1 || cargo install --locked fsx@0.3.2
cargo build --release -q -p mkfs-lfs -p lfs-fuse
W=$(mktemp -d /tmp/lfs-fsx.XXXXXX)
mkdir "$W/mnt"
cleanup() {
  cd /
  mountpoint -q "$W/mnt" && fusermount3 -u -z "$W/mnt" || true
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
cat > "$W/fsx.toml" <<'TOML'
flen = 8388608
[weights]
close_open = 1.0
read = 1.0
write = 1.0
mapread = 1.0
mapwrite = 1.0
truncate = 1.0
invalidate = 1.0
fsync = 1.0
fdatasync = 1.0
posix_fallocate = 1.0
punch_hole = 1.0
sendfile = 1.0
posix_fadvise = 1.0
copy_file_range = 1.0
TOML
target/release/mkfs-lfs -q "$W/fs.img" 1G
mount_it() {
  target/release/lfs-fuse "$W/fs.img" "$W/mnt" -f 2>>"$W/daemon.log" &
  PID=$!
  for _ in $(seq 100); do mountpoint -q "$W/mnt" && return 0; sleep 0.1; done
  cat "$W/daemon.log"; echo "fsx.sh: mount failed"; exit 1
}
unmount_it() {
  kill -TERM "$PID"
  wait "$PID" || { echo "fsx.sh: daemon exited with $?"; cat "$W/daemon.log"; exit 1; }
  PID=
}
mount_it
total=0
for c in $(seq 1 "$CYCLES"); do
  s=$((SEED * 1000 + c))
  if ! fsx -q -N "$OPS" -S "$s" -f "$W/fsx.toml" -P "$W" "$W/mnt/fsx-$c" > "$W/fsx-$c.log" 2>&1; then
    tail -40 "$W/fsx-$c.log"; echo "fsx.sh: fsx failed in cycle $c (seed $s)"; exit 1
  fi
  total=$((total + OPS))
  (cd "$W/mnt" && sha1sum fsx-* > "$W/sums")
  unmount_it
  mount_it
  (cd "$W/mnt" && sha1sum -c --quiet "$W/sums") || { echo "fsx.sh: contents changed across remount in cycle $c"; exit 1; }
  echo "fsx.sh: cycle $c: $OPS operations (seed $s) ok, $(wc -l < "$W/sums") files intact after remount"
done
unmount_it
echo "fsx: $total passed, 0 failed"
