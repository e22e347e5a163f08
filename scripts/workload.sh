#!/usr/bin/env bash
# A real workload on a real mount: unpack real source trees (crates from the cargo cache),
# compare every file, git init/add/commit/fsck on the mount, unmount, remount, check again,
# delete it all, unmount, remount and check it is gone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-mount.sh
lfs_setup lfs-work 1G
mkdir "$W/ref"
# The largest crate archives in the cargo cache: real trees with many files.
mapfile -t CRATES < <(ls -S "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/*.crate | head -6)
[ ${#CRATES[@]} -gt 0 ] || { echo "workload.sh: no crates in the cargo cache"; exit 1; }
lfs_mount
for c in "${CRATES[@]}"; do
  tar -xzf "$c" -C "$W/ref"
  tar -xzf "$c" -C "$W/mnt"
done
files=$(find "$W/ref" -type f | wc -l)
diff -r "$W/ref" "$W/mnt" > /dev/null || { echo "workload.sh: unpacked trees differ"; diff -rq "$W/ref" "$W/mnt" | head; exit 1; }
cd "$W/mnt"
git init -q . && git add -A && git -c user.email=t@t -c user.name=t commit -qm import
git fsck --full --strict 2>&1 | grep -v "^Checking" || true
git fsck --full --strict > /dev/null 2>&1 || { echo "workload.sh: git fsck failed"; exit 1; }
cd /
lfs_remount
diff -r --exclude=.git "$W/ref" "$W/mnt" > /dev/null || { echo "workload.sh: trees differ after remount"; exit 1; }
(cd "$W/mnt" && git fsck --full --strict > /dev/null 2>&1 && git status --porcelain | wc -l | grep -qx 0) || { echo "workload.sh: git repository damaged after remount"; exit 1; }
rm -rf "${W:?}/mnt/"* "$W/mnt/.git"
lfs_remount
[ -z "$(ls -A "$W/mnt")" ] || { echo "workload.sh: deleted files came back"; exit 1; }
df -k "$W/mnt" | tail -1
lfs_unmount
echo "workload: ${#CRATES[@]} crates, $files files unpacked, compared, committed with git, fsck'd, deleted, each step across a remount, fsck-lfs clean after each unmount: 1 passed, 0 failed"
