#!/usr/bin/env bash
# Concurrent load on a real mount while the cleaner runs: stress-ng's filesystem stressors
# with verification, and fio writing with fsync and verifying every block (crc32c), at the
# same time. Then the cleaner's status, unmount (fsck-lfs -n -f must find it clean), remount,
# and fio verifies its files again.
#
#   scripts/stress.sh [SECONDS] [IMAGE_SIZE]     default 60 s on 512M (the suite's bounded run)
#   scripts/stress.sh 1800 2G                    the long run (docs/RELIABILITY.md)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
SIZE=${2:-512M}
for t in stress-ng fio; do
  command -v $t >/dev/null || { echo "stress.sh: $t is not installed (apt-get install $t)"; exit 1; }
done
source scripts/lib-mount.sh
cargo build --release -q -p lfs-cleaner
lfs_setup lfs-stress "$SIZE"
# Clean early and late: the cleaner moves blocks under the stressors' feet all along.
lfs_mount -o gc_low=30,gc_high=45,gc_segments=4
mkdir "$W/mnt/sng" "$W/mnt/fio"

# fio: two writers, 4 KiB random writes with an fsync every 16, each block verified (crc32c)
# after its file is written, looping until the time is up.
FIO_JOB=(--directory="$W/mnt/fio" --name=verify --rw=randwrite --bs=4k --size=24M
  --numjobs=2 --ioengine=psync --fsync=16 --verify=crc32c --verify_fatal=1
  --do_verify=1 --verify_backlog=512 --group_reporting --verify_state_save=0)
fio "${FIO_JOB[@]}" --time_based --runtime="$SECS" --output="$W/fio.txt" &
FIO=$!

# stress-ng: one worker per stressor, verification on; the hdd worker verifies its reads.
stress-ng --temp-path "$W/mnt/sng" --timeout "${SECS}s" --verify --metrics-brief \
  --dir 1 --dentry 1 --link 1 --rename 1 --hdd 1 --hdd-bytes 16M --seek 1 \
  --seek-size 16M --xattr 1 --fallocate 1 --fallocate-bytes 16M --iomix 1 \
  --iomix-bytes 16M --filename 1 --symlink 1 --chmod 1 --fstat 1 \
  > "$W/stress-ng.txt" 2>&1 || { cat "$W/stress-ng.txt"; echo "stress.sh: stress-ng failed"; exit 1; }
wait "$FIO" || { cat "$W/fio.txt"; echo "stress.sh: fio failed (verification?)"; exit 1; }
sed -n '/stressor /,$p' "$W/stress-ng.txt" | sed 's/^[a-z]*: *\[[0-9]*\] //'
grep -E "WRITE:|READ:|err=" "$W/fio.txt" | sed 's/^ *//'
"$ROOT/target/release/lfs-cleaner" status "$W/mnt" | sed -n '1,4p;/since mount/,$p'
lfs_unmount
lfs_mount
# After remount: fio re-reads what its last loop wrote and checks every block.
fio "${FIO_JOB[@]}" --verify_only --output="$W/fio-verify.txt" ||
  { cat "$W/fio-verify.txt"; echo "stress.sh: fio verification after remount failed"; exit 1; }
lfs_unmount
echo "stress.sh: ${SECS}s of stress-ng and fio with the cleaner running: no verification failure, fsck clean"
