#!/usr/bin/env bash
# FUSE benchmark: lfs-fuse, fuse2fs (ext4 image through FUSE) and kernel ext4 on a loop
# device, side by side on the same disk, the same workloads (lfs-bench fs), rounds
# interleaved; prints medians and ratios to fuse2fs.
#   scripts/bench-fuse.sh [ROUNDS] [FILES] [MIB]     (defaults: 3 10000 256)
# Work files go under $BENCH_DIR (default /var/tmp). Needs root (loop mount, drop_caches).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
FILES=${2:-10000}
MIB=${3:-256}
command -v fuse2fs >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq fuse2fs e2fsprogs; }
source scripts/lib-mount.sh
cargo build --release -q -p lfs-tests
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/lfs-bench.XXXXXX")
mkdir "$W/mnt" "$W/f2" "$W/k4"
LOOP=
bench_cleanup() {
  cd /
  for m in "$W/mnt" "$W/f2"; do mountpoint -q "$m" && fusermount3 -u -z "$m" || true; done
  mountpoint -q "$W/k4" && umount "$W/k4" || true
  [ -n "$LOOP" ] && losetup -d "$LOOP" || true
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$W"
}
trap bench_cleanup EXIT
SIZE=$(( MIB * 4 + 1024 ))M
"$ROOT/target/release/mkfs-lfs" -q "$W/fs.img" "$SIZE"
lfs_mount
mkfs.ext4 -q -F "$W/f2.img" "$SIZE"
fuse2fs "$W/f2.img" "$W/f2"
mkfs.ext4 -q -F "$W/k4.img" "$SIZE"
LOOP=$(losetup -f --show "$W/k4.img")
mount "$LOOP" "$W/k4"
TARBALL=$(ls -S "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/*.crate 2>/dev/null | head -1 || true)
for r in $(seq 1 "$ROUNDS"); do
  for t in lfs fuse2fs ext4; do
    case $t in lfs) d=$W/mnt;; fuse2fs) d=$W/f2;; ext4) d=$W/k4;; esac
    echo "round $r: $t" >&2
    "$ROOT/target/release/lfs-bench" fs "$d" --files "$FILES" --mib "$MIB" --tarball "$TARBALL" | sed "s/^/$t $r /" >> "$W/results"
  done
done
python3 - "$W/results" "$ROUNDS" "$FILES" "$MIB" "$TARBALL" <<'PY'
import sys, statistics, collections
path, rounds, files, mib, tarball = sys.argv[1:]
v = collections.defaultdict(list); unit = {}
for line in open(path):
    t, r, name, val, u, *_ = line.split()
    v[(t, name)].append(float(val)); unit[name] = u
names = ["small_create", "small_read", "small_delete", "seq_write", "seq_read", "rand_write", "append_fsync", "untar_round"]
print(f"bench-fuse: medians of {rounds} rounds; {files} x 1 KiB files, {mib} MiB sequential, tarball {tarball.split('/')[-1]}")
print(f"{'workload':14} {'unit':8} {'lfs':>10} {'fuse2fs':>10} {'ext4':>10} {'lfs/fuse2fs':>12}")
for n in names:
    if (('lfs', n)) not in v: continue
    m = {t: statistics.median(v[(t, n)]) for t in ("lfs", "fuse2fs", "ext4")}
    # time: lower is better, so the ratio is fuse2fs/lfs; otherwise lfs/fuse2fs
    ratio = m["fuse2fs"] / m["lfs"] if unit[n] == "s" else m["lfs"] / m["fuse2fs"]
    print(f"{n:14} {unit[n]:8} {m['lfs']:10.1f} {m['fuse2fs']:10.1f} {m['ext4']:10.1f} {ratio:11.2f}x")
print("all rounds:")
for (t, n), xs in sorted(v.items()):
    print(f"  {t:8} {n:14} " + " ".join(f"{x:.1f}" for x in xs))
PY
