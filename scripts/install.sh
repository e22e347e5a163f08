#!/usr/bin/env bash
# Install the tools under PREFIX (default /usr/local), with the aliases the system tools
# look for: mkfs.lfs (for `mkfs -t lfs`) and fsck.lfs (for `fsck -t lfs` and boot-time
# fsck). `mount -t fuse.lfs-fuse IMAGE DIR` and fstab lines of type fuse.lfs-fuse find
# lfs-fuse itself on the PATH through mount.fuse3.
# Cargo cannot name a binary with a dot, hence the links.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
cargo install --locked --path mkfs-lfs --root "$PREFIX"
cargo install --locked --path lfs-fuse --root "$PREFIX"
cargo install --locked --path lfs-tools --root "$PREFIX"
cargo install --locked --path lfs-cleaner --root "$PREFIX"
ln -sf mkfs-lfs "$PREFIX/bin/mkfs.lfs"
ln -sf fsck-lfs "$PREFIX/bin/fsck.lfs"
echo "installed mkfs-lfs, mkfs.lfs, lfs-fuse, fsck-lfs, fsck.lfs, lfs-inspect and lfs-cleaner in $PREFIX/bin"
