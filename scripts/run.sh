#!/usr/bin/env bash
# The main job on a fresh machine: build, format a default image, and check it mounts.
#   scripts/run.sh [IMAGE] [SIZE]        (defaults: ./lfs.img, 1G)
# The FUSE mount (lfs-fuse) arrives with its own issue; until then this formats the image and
# mounts it through the library to prove it, writing and reading a file.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${1:-lfs.img}
SIZE=${2:-1G}
cargo build --release --workspace
if [ -e "$IMAGE" ]; then
  echo "run.sh: $IMAGE exists; formatting it again (-f)"
  target/release/mkfs-lfs -f "$IMAGE" "$SIZE"
else
  target/release/mkfs-lfs "$IMAGE" "$SIZE"
fi
target/release/lfs-bench smoke "$IMAGE"
