#!/usr/bin/env bash
# The main job on a fresh machine: build, format a default image, mount it.
#   scripts/run.sh [IMAGE] [SIZE] [MOUNTPOINT]     (defaults: ./lfs.img, 1G, ./mnt)
# Unmount with: fusermount3 -u MOUNTPOINT   (or umount, or kill the lfs-fuse daemon)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${1:-lfs.img}
SIZE=${2:-1G}
MNT=${3:-mnt}
if ! command -v fusermount3 >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq fuse3
fi
cargo build --release --workspace
if [ -e "$IMAGE" ]; then
  echo "run.sh: $IMAGE exists; formatting it again (-f)"
  target/release/mkfs-lfs -f "$IMAGE" "$SIZE"
else
  target/release/mkfs-lfs "$IMAGE" "$SIZE"
fi
mkdir -p "$MNT"
target/release/lfs-fuse "$IMAGE" "$MNT"
echo "run.sh: mounted $IMAGE on $MNT"
df -h "$MNT"
echo "run.sh: unmount with: fusermount3 -u $MNT"
