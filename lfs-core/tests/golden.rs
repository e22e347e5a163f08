//! The committed image of format version 1 (tests/golden/format-v1.lfs, made by
//! scripts/make-golden.sh with an earlier build) must mount, read back as it was written and
//! check clean. Round-trip tests cannot see an offset changed on both sides, encoder and
//! decoder; this image can.
#![allow(clippy::unwrap_used)]

use lfs_core::device::{Device, MemDevice};
use lfs_core::format::inode::{FileKind, Timespec, FL_APPEND};
use lfs_core::format::Ino;
use lfs_core::fs::Creds;
use lfs_core::{Fs, MountOptions};
use std::sync::Arc;

const ROOT: lfs_core::format::Ino = lfs_core::format::ROOT_INO;

fn golden() -> Arc<dyn Device> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/format-v1.lfs");
    Arc::new(MemDevice::from_image(std::fs::read(path).unwrap()))
}

fn walk(fs: &Fs, path: &str) -> Ino {
    path.split('/').fold(ROOT, |dir, name| {
        fs.lookup(dir, name.as_bytes()).unwrap().ino
    })
}

fn check_tree(fs: &Fs) {
    assert_eq!(fs.superblock().label, "golden");
    let hello = walk(fs, "dir/hello.txt");
    let a = fs.getattr(hello).unwrap();
    assert_eq!(
        (a.kind, a.perm, a.nlink, a.size),
        (FileKind::Regular, 0o644, 2, 14)
    );
    assert_eq!(fs.read(hello, 0, 100).unwrap(), b"hello, golden\n");
    assert_eq!(
        a.mtime,
        Timespec {
            sec: 1_580_608_922,
            nsec: 123_456_789
        }
    );
    assert_eq!(fs.getxattr(hello, b"user.colour").unwrap(), b"blue");
    assert_eq!(walk(fs, "hardlink"), hello);

    let big = walk(fs, "dir/sub/forty-k");
    let b = fs.getattr(big).unwrap();
    // chmod 4750 then chown: the chown cleared set-user-ID, as on Linux.
    assert_eq!((b.perm, b.uid, b.gid, b.size), (0o750, 1000, 2000, 40_000));
    assert!(fs.read(big, 0, 50_000).unwrap().iter().all(|&c| c == b'z'));

    let link = walk(fs, "symlink");
    assert_eq!(fs.getattr(link).unwrap().kind, FileKind::Symlink);
    assert_eq!(fs.readlink(link).unwrap(), b"dir/hello.txt");
    assert_eq!(fs.getattr(walk(fs, "fifo")).unwrap().kind, FileKind::Fifo);
    let dev = fs.getattr(walk(fs, "chardev")).unwrap();
    assert_eq!((dev.kind, dev.rdev), (FileKind::CharDevice, 0x103));

    let sparse = walk(fs, "sparse");
    let s = fs.getattr(sparse).unwrap();
    assert_eq!(s.size, (1 << 30) + 3);
    // One data block and the indirect blocks above it.
    assert!(s.blocks <= 64, "a sparse file owns {} sectors", s.blocks);
    assert_eq!(fs.read(sparse, 1 << 30, 10).unwrap(), b"end");
    assert_eq!(fs.read(sparse, 4096, 4).unwrap(), vec![0; 4]);

    // ACLs as the kernel wrote them (access on dir, default on dir/sub), chattr's a.
    let dir = walk(fs, "dir");
    assert!(fs.getxattr(dir, b"system.posix_acl_access").is_ok());
    assert!(fs
        .getxattr(walk(fs, "dir/sub"), b"system.posix_acl_default")
        .is_ok());
    assert_eq!(fs.flags(walk(fs, "appendonly")).unwrap(), FL_APPEND);
    assert_eq!(
        fs.read(walk(fs, "appendonly"), 0, 100).unwrap(),
        b"log line\n"
    );
}

#[test]
fn the_format_v1_image_mounts_reads_and_checks_clean() {
    let dev = golden();
    assert_eq!(lfs_core::fsck::findings(dev.clone()).unwrap(), vec![]);
    let fs = Fs::mount(dev.clone(), MountOptions::default()).unwrap();
    check_tree(&fs);
    // And takes changes like any other.
    let f = fs.create(ROOT, b"new", 0o600, Creds::default()).unwrap();
    fs.write(f.ino, 0, b"written now").unwrap();
    fs.unmount().unwrap();
    let fs = Fs::mount(dev.clone(), MountOptions::default()).unwrap();
    check_tree(&fs);
    assert_eq!(fs.read(walk(&fs, "new"), 0, 100).unwrap(), b"written now");
    fs.unmount().unwrap();
    assert_eq!(lfs_core::fsck::findings(dev).unwrap(), vec![]);
}
