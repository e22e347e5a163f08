# Shared by the scripts that mount an image for real (pjdfstest.sh, fsx.sh, workload.sh).
# Source it from the repository root. It builds the tools and provides:
#   lfs_setup NAME SIZE      work dir $W (with $W/mnt) and a fresh image $W/fs.img of SIZE;
#                            everything is unmounted and removed on exit
#   lfs_mount [OPTS...]      start our lfs-fuse daemon in the foreground as our child ($PID)
#   lfs_unmount              SIGTERM to that daemon; it must exit 0; then fsck-lfs -n -f
#                            must find the image clean
#   lfs_remount              both
# A script may set LFS_EXTRA_CLEANUP to a command run first at exit.
ROOT=$PWD
cargo build --release -q -p mkfs-lfs -p lfs-fuse -p lfs-tools

lfs_cleanup() {
  cd /
  [ -n "${LFS_EXTRA_CLEANUP:-}" ] && eval "$LFS_EXTRA_CLEANUP" || true
  mountpoint -q "$W/mnt" && fusermount3 -u -z "$W/mnt" || true
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$W"
}

lfs_setup() {
  W=$(mktemp -d "/tmp/$1.XXXXXX")
  mkdir "$W/mnt"
  trap lfs_cleanup EXIT
  "$ROOT/target/release/mkfs-lfs" -q "$W/fs.img" "$2"
}

lfs_mount() {
  "$ROOT/target/release/lfs-fuse" "$W/fs.img" "$W/mnt" -f "$@" 2>>"$W/daemon.log" &
  PID=$!
  for _ in $(seq 100); do mountpoint -q "$W/mnt" && return 0; sleep 0.1; done
  cat "$W/daemon.log"; echo "$(basename "$0"): mount failed"; exit 1
}

lfs_unmount() {
  kill -TERM "$PID"
  wait "$PID" || { echo "$(basename "$0"): daemon exited with $?"; cat "$W/daemon.log"; exit 1; }
  PID=
  "$ROOT/target/release/fsck-lfs" -n -f "$W/fs.img" > "$W/fsck.txt" 2>&1 ||
    { cat "$W/fsck.txt"; echo "$(basename "$0"): fsck-lfs found damage after unmount"; exit 1; }
}

lfs_remount() {
  lfs_unmount
  lfs_mount "$@"
}
