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
source scripts/lib-mount.sh
lfs_setup lfs-fsx 1G
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
lfs_mount
total=0
for c in $(seq 1 "$CYCLES"); do
  s=$((SEED * 1000 + c))
  if ! fsx -q -N "$OPS" -S "$s" -f "$W/fsx.toml" -P "$W" "$W/mnt/fsx-$c" > "$W/fsx-$c.log" 2>&1; then
    tail -40 "$W/fsx-$c.log"; echo "fsx.sh: fsx failed in cycle $c (seed $s)"; exit 1
  fi
  total=$((total + OPS))
  (cd "$W/mnt" && sha1sum fsx-* > "$W/sums")
  lfs_remount
  (cd "$W/mnt" && sha1sum -c --quiet "$W/sums") || { echo "fsx.sh: contents changed across remount in cycle $c"; exit 1; }
  echo "fsx.sh: cycle $c: $OPS operations (seed $s) ok, $(wc -l < "$W/sums") files intact after remount"
done
lfs_unmount
echo "fsx: $total passed, 0 failed"
