#!/usr/bin/env bash
# Makes tests/golden/format-v1.lfs, the committed image of the current format that
# lfs-core/tests/golden.rs mounts and checks (a change of an offset on both sides, encoder
# and decoder, would go unnoticed by round-trip tests; this image was written by an older
# build). Run it only when the format changes, with a new name for the new version.
#   scripts/make-golden.sh tests/golden/format-vN.lfs
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$(realpath -m "${1:?usage: scripts/make-golden.sh OUT.lfs}")
cargo build --release -q -p mkfs-lfs -p lfs-fuse -p lfs-tools
T=$(mktemp -d)
trap 'cd /; mountpoint -q "$T/m" && umount "$T/m"; rm -rf "$T"' EXIT
rm -f "$OUT"
target/release/mkfs-lfs -q -s 64K -L golden "$OUT" 24M
mkdir "$T/m"
target/release/lfs-fuse "$OUT" "$T/m"
cd "$T/m"
mkdir -p dir/sub
printf 'hello, golden\n' > dir/hello.txt
head -c 40000 /dev/zero | tr '\0' 'z' > dir/sub/forty-k
ln dir/hello.txt hardlink
ln -s dir/hello.txt symlink
mkfifo fifo
mknod chardev c 1 3
truncate -s 1G sparse && printf 'end' | dd of=sparse bs=1 seek=$((1 << 30)) conv=notrunc status=none
setfattr -n user.colour -v blue dir/hello.txt
setfacl -m u:1234:r-x dir
setfacl -d -m g:5678:rw dir/sub
chmod 4750 dir/sub/forty-k
chown 1000:2000 dir/sub/forty-k
printf "log line\n" > appendonly && chattr +a appendonly
touch -d '2020-02-02 02:02:02.123456789' dir/hello.txt
cd "$ROOT"
umount "$T/m"
target/release/fsck-lfs -n -f "$OUT"
