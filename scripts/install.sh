#!/usr/bin/env bash
# Install the tools under PREFIX (default /usr/local), with the fsck/mkfs-style aliases
# (mkfs.lfs) that `mkfs -t lfs` looks for. Cargo cannot name a binary with a dot.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
cargo install --locked --path mkfs-lfs --root "$PREFIX"
ln -sf mkfs-lfs "$PREFIX/bin/mkfs.lfs"
echo "installed mkfs-lfs and mkfs.lfs in $PREFIX/bin"
