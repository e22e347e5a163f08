#!/usr/bin/env bash
# The main job on a fresh machine: build, format a default image if there is none, mount it.
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
# The tools alone: the test crate would turn on lfs-core's test-only code (`testing`).
cargo build --release -p mkfs-lfs -p lfs-fuse -p lfs-tools -p lfs-cleaner
# An existing image is mounted, never formatted again: running this twice must not
# destroy the files of the first run. Only a missing image is created.
if [ -e "$IMAGE" ]; then
  if ! target/release/lfs-inspect "$IMAGE" superblock >/dev/null 2>&1; then
    echo "run.sh: $IMAGE exists and holds no lfs filesystem; not touching it" >&2
    echo "run.sh: remove it, or format it yourself: target/release/mkfs-lfs -f $IMAGE $SIZE" >&2
    exit 1
  fi
  echo "run.sh: $IMAGE holds an lfs filesystem; mounting it as it is"
else
  target/release/mkfs-lfs "$IMAGE" "$SIZE"
fi
mkdir -p "$MNT"
if mountpoint -q "$MNT"; then
  echo "run.sh: $MNT is already a mountpoint; nothing to do"
  exit 0
fi
target/release/lfs-fuse "$IMAGE" "$MNT"
echo "run.sh: mounted $IMAGE on $MNT"
df -h "$MNT"
echo "run.sh: unmount with: fusermount3 -u $MNT"
