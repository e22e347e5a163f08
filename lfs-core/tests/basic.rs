//! End-to-end use of the engine on an in-memory device; every test ends with a remount.
#![allow(clippy::unwrap_used)]

use lfs_core::device::{Device, MemDevice};
use lfs_core::format::inode::{FileKind, Timespec};
use lfs_core::fs::{Creds, SetAttr, RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT};
use lfs_core::{mkfs, Fs, FsError, MkfsOptions, MountError, MountOptions, NotLfs};
use std::sync::Arc;

const ROOT: lfs_core::format::Ino = lfs_core::format::ROOT_INO;
const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};

fn fresh(bytes: u64) -> Arc<dyn Device> {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new(bytes));
    mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    dev
}

fn mount(dev: &Arc<dyn Device>) -> Fs {
    Fs::mount(dev.clone(), MountOptions::default()).unwrap()
}

/// Every test that writes ends here: unmount, then fsck -n -f on the image finds nothing.
fn unmount_and_fsck(fs: Fs, dev: &Arc<dyn Device>) {
    fs.unmount().unwrap();
    assert_eq!(lfs_core::fsck::findings(dev.clone()).unwrap(), vec![]);
}

fn remount(fs: Fs, dev: &Arc<dyn Device>) -> Fs {
    fs.unmount().unwrap();
    mount(dev)
}

#[test]
fn create_write_read_remount() {
    let dev = fresh(64 << 20);
    let fs = mount(&dev);
    let a = fs.create(ROOT, b"hello.txt", 0o644, C).unwrap();
    assert_eq!(fs.write(a.ino, 0, b"hello, world").unwrap(), 12);
    assert_eq!(fs.read(a.ino, 0, 100).unwrap(), b"hello, world");
    let d = fs.mkdir(ROOT, b"dir", 0o755, C).unwrap();
    let b = fs.create(d.ino, b"big", 0o600, C).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs.write(b.ino, 1000, &data).unwrap();
    let fs = remount(fs, &dev);
    assert_eq!(fs.lookup(ROOT, b"hello.txt").unwrap().size, 12);
    assert_eq!(fs.read(a.ino, 0, 100).unwrap(), b"hello, world");
    let got = fs.read(b.ino, 1000, data.len() as u32).unwrap();
    assert_eq!(got, data);
    assert_eq!(fs.read(b.ino, 0, 1000).unwrap(), vec![0u8; 1000]);
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 3);
    let names: Vec<Vec<u8>> = fs
        .readdir(ROOT, 0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        vec![
            b".".to_vec(),
            b"..".to_vec(),
            b"hello.txt".to_vec(),
            b"dir".to_vec()
        ]
    );
    unmount_and_fsck(fs, &dev);
}

#[test]
fn namespace_operations_and_errors() {
    let dev = fresh(64 << 20);
    let fs = mount(&dev);
    let f = fs.create(ROOT, b"f", 0o644, C).unwrap();
    assert!(matches!(
        fs.create(ROOT, b"f", 0o644, C),
        Err(FsError::Exists)
    ));
    assert!(matches!(
        fs.create(ROOT, &[b'x'; 256], 0o644, C),
        Err(FsError::NameTooLong)
    ));
    fs.create(ROOT, &[b'x'; 255], 0o644, C).unwrap();
    fs.link(f.ino, ROOT, b"g").unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().nlink, 2);
    let d = fs.mkdir(ROOT, b"d", 0o755, C).unwrap();
    fs.create(d.ino, b"inner", 0o644, C).unwrap();
    assert!(matches!(fs.rmdir(ROOT, b"d"), Err(FsError::NotEmpty)));
    assert!(matches!(fs.unlink(ROOT, b"d"), Err(FsError::IsDir)));
    assert!(matches!(
        fs.rename(ROOT, b"d", d.ino, b"x", 0),
        Err(FsError::Invalid(_))
    ));
    fs.rename(ROOT, b"f", ROOT, b"g", RENAME_NOREPLACE)
        .unwrap_err();
    fs.rename(ROOT, b"g", d.ino, b"inner", 0).unwrap(); // over an existing file
    assert_eq!(fs.lookup(d.ino, b"inner").unwrap().ino, f.ino);
    fs.rename(ROOT, b"f", d.ino, b"inner", RENAME_EXCHANGE)
        .unwrap();
    let s = fs.symlink(ROOT, b"link", b"/some/where", C).unwrap();
    assert_eq!(fs.readlink(s.ino).unwrap(), b"/some/where");
    fs.setxattr(f.ino, b"user.k", b"v", 0).unwrap();
    assert!(matches!(
        fs.setxattr(f.ino, b"user.k", b"v", 1),
        Err(FsError::Exists)
    ));
    fs.setattr(
        f.ino,
        &SetAttr {
            mode: Some(0o600),
            uid: Some(7),
            ..Default::default()
        },
    )
    .unwrap();
    let fifo = fs.mknod(ROOT, b"fifo", 0o010644, 0, C).unwrap();
    let fs = remount(fs, &dev);
    assert_eq!(fs.getattr(f.ino).unwrap().perm, 0o600);
    assert_eq!(fs.getattr(f.ino).unwrap().uid, 7);
    assert_eq!(fs.getxattr(f.ino, b"user.k").unwrap(), b"v");
    assert_eq!(fs.readlink(s.ino).unwrap(), b"/some/where");
    assert_eq!(
        fs.getattr(fifo.ino).unwrap().kind,
        lfs_core::format::inode::FileKind::Fifo
    );
    fs.unlink(d.ino, b"inner").unwrap();
    fs.unlink(ROOT, b"f").unwrap();
    fs.rmdir(ROOT, b"d").unwrap();
    assert!(fs.getattr(f.ino).is_err(), "inode freed with its last link");
    let fs = remount(fs, &dev);
    assert!(matches!(fs.lookup(ROOT, b"d"), Err(FsError::NotFound)));
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 2);
    unmount_and_fsck(fs, &dev);
}

#[test]
fn rename_whiteout_leaves_a_char_device_0_0_owned_by_the_caller() {
    let dev = fresh(64 << 20);
    let fs = mount(&dev);
    let d = fs.mkdir(ROOT, b"d", 0o755, C).unwrap();
    let f = fs.create(ROOT, b"f", 0o644, C).unwrap();
    let who = Creds {
        uid: 7,
        gid: 8,
        umask: 0o022,
    };
    fs.rename_by(ROOT, b"f", d.ino, b"g", RENAME_WHITEOUT, who)
        .unwrap();
    assert_eq!(fs.lookup(d.ino, b"g").unwrap().ino, f.ino);
    let w = fs.lookup(ROOT, b"f").unwrap();
    assert_ne!(w.ino, f.ino);
    assert_eq!(
        (w.kind, w.perm, w.rdev, w.uid, w.gid, w.nlink),
        (FileKind::CharDevice, 0, 0, 7, 8, 1)
    );
    // A directory may leave one too; with EXCHANGE the flag is refused, nothing changes.
    let sub = fs.mkdir(ROOT, b"sub", 0o755, C).unwrap();
    fs.rename_by(ROOT, b"sub", d.ino, b"sub", RENAME_WHITEOUT, who)
        .unwrap();
    assert_eq!(fs.getattr(d.ino).unwrap().nlink, 3);
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 3); // d, and root's own two
    assert!(matches!(
        fs.rename_by(
            ROOT,
            b"f",
            d.ino,
            b"g",
            RENAME_WHITEOUT | RENAME_EXCHANGE,
            who
        ),
        Err(FsError::Invalid(_))
    ));
    assert_eq!(fs.lookup(d.ino, b"sub").unwrap().ino, sub.ino);
    let fs = remount(fs, &dev);
    assert_eq!(fs.lookup(ROOT, b"f").unwrap().kind, FileKind::CharDevice);
    assert_eq!(fs.lookup(ROOT, b"sub").unwrap().kind, FileKind::CharDevice);
    unmount_and_fsck(fs, &dev);
}

#[test]
fn trim_discards_cleaned_segments_and_nothing_live() {
    let dev = fresh(64 << 20);
    let fs = mount(&dev);
    let gone = fs.create(ROOT, b"gone", 0o644, C).unwrap();
    let kept = fs.create(ROOT, b"kept", 0o644, C).unwrap();
    let (old, live) = (vec![0x5au8; 1 << 20], vec![0xa5u8; 1 << 20]);
    for i in 0..4u64 {
        fs.write(gone.ino, i << 20, &old).unwrap();
        fs.write(kept.ino, i << 20, &live).unwrap();
    }
    fs.checkpoint().unwrap();
    fs.unlink(ROOT, b"gone").unwrap();
    fs.checkpoint().unwrap();
    let full: Vec<_> = fs.segment_views().iter().map(|v| v.segment).collect();
    fs.clean(&full).unwrap();
    fs.checkpoint().unwrap();
    let count = |pat: u8| {
        let mut b = vec![0u8; 64 << 20];
        dev.read_at(&mut b, 0).unwrap();
        b.chunks(4096)
            .filter(|c| c.iter().all(|&x| x == pat))
            .count()
    };
    assert!(
        count(0x5a) > 0,
        "the deleted file's old blocks are still on the device"
    );
    // Bad ranges are refused as ext4 refuses them.
    assert!(matches!(
        fs.trim(1 << 40, 1 << 20, 0),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(fs.trim(0, 100, 0), Err(FsError::Invalid(_))));
    let t = fs.trim(0, u64::MAX, 0).unwrap();
    assert!(t.bytes > 32 << 20 && t.extents >= 1, "{t:?}");
    assert_eq!(count(0x5a), 0, "a cleaned segment kept its old blocks");
    assert_eq!(count(0xa5), 1024, "live blocks were discarded");
    // A minimum run longer than the filesystem's free runs discards nothing.
    assert_eq!(fs.trim(0, u64::MAX, 63 << 20).unwrap().bytes, 0);
    // A file deleted just before: its segments are trimmed without a cleaning pass.
    let late = fs.create(ROOT, b"late", 0o644, C).unwrap();
    for i in 0..3u64 {
        fs.write(late.ino, i << 20, &old).unwrap();
    }
    fs.fsync(late.ino, false).unwrap();
    assert!(count(0x5a) >= 768);
    fs.unlink(ROOT, b"late").unwrap();
    fs.trim(0, u64::MAX, 0).unwrap();
    // All but what shares the segment the log is writing (256 blocks) and the one before.
    let left = count(0x5a);
    assert!(
        left < 300,
        "a deleted file's segments were not trimmed: {left} blocks left"
    );
    let fs = remount(fs, &dev);
    assert_eq!(fs.read(kept.ino, 3 << 20, 1 << 20).unwrap(), live);
    unmount_and_fsck(fs, &dev);
}

#[test]
fn chattr_flags_are_kept_enforced_and_inherited() {
    use lfs_core::format::inode::{
        FL_APPEND, FL_DIRSYNC, FL_IMMUTABLE, FL_NOATIME, FL_NODUMP, FL_SYNC,
    };
    use lfs_core::fs::TimeOrNow;
    fn perm<T>(r: Result<T, FsError>) -> bool {
        matches!(r, Err(FsError::NotPermitted))
    }
    let dev = fresh(64 << 20);
    let fs = mount(&dev);
    let d = fs.mkdir(ROOT, b"d", 0o755, C).unwrap();
    let f = fs.create(d.ino, b"f", 0o644, C).unwrap();
    fs.write(f.ino, 0, b"hello").unwrap();
    fs.set_flags(f.ino, FL_IMMUTABLE).unwrap();
    assert!(perm(fs.write(f.ino, 5, b"!")));
    assert!(perm(fs.open_with(f.ino, libc::O_WRONLY)));
    assert!(perm(fs.open_with(f.ino, libc::O_RDONLY | libc::O_TRUNC)));
    fs.open_with(f.ino, libc::O_RDONLY).unwrap();
    fs.release(f.ino).unwrap();
    let chmod = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    let touch = SetAttr {
        mtime: Some(TimeOrNow::Now),
        ..Default::default()
    };
    assert!(perm(fs.setattr(f.ino, &chmod)));
    assert!(perm(fs.setattr(f.ino, &touch)));
    assert!(perm(fs.unlink(d.ino, b"f")));
    assert!(perm(fs.rename(d.ino, b"f", ROOT, b"g", 0)));
    assert!(perm(fs.link(f.ino, ROOT, b"g")));
    assert!(perm(fs.setxattr(f.ino, b"user.k", b"v", 0)));
    assert!(perm(fs.fallocate(f.ino, 0, 4096, 0)));
    // Data the kernel's cache took before the flag was set is still written, not lost.
    fs.write_cached(f.ino, 5, b"!").unwrap();
    // An immutable directory takes no new names and loses none.
    fs.set_flags(d.ino, FL_IMMUTABLE).unwrap();
    assert!(perm(fs.create(d.ino, b"new", 0o644, C)));
    assert!(perm(fs.mkdir(d.ino, b"sub", 0o755, C)));
    fs.set_flags(d.ino, 0).unwrap();
    // Append-only: O_APPEND writers only; no truncate, chmod, explicit times, unlink.
    fs.set_flags(f.ino, FL_APPEND).unwrap();
    assert!(perm(fs.open_with(f.ino, libc::O_WRONLY)));
    assert!(perm(fs.open_with(
        f.ino,
        libc::O_WRONLY | libc::O_APPEND | libc::O_TRUNC
    )));
    fs.open_with(f.ino, libc::O_WRONLY | libc::O_APPEND)
        .unwrap();
    fs.release(f.ino).unwrap();
    fs.write(f.ino, 6, b"more").unwrap();
    let cut = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    let set_time = SetAttr {
        mtime: Some(TimeOrNow::At(Timespec { sec: 1, nsec: 0 })),
        ..Default::default()
    };
    assert!(perm(fs.setattr(f.ino, &cut)));
    assert!(perm(fs.setattr(f.ino, &chmod)));
    assert!(perm(fs.setattr(f.ino, &set_time)));
    fs.setattr(f.ino, &touch).unwrap();
    assert!(perm(fs.unlink(d.ino, b"f")));
    assert!(perm(fs.fallocate(f.ino, 0, 4096, 2 | 1))); // punch
    fs.fallocate(f.ino, 0, 8192, 1).unwrap(); // KEEP_SIZE: allowed
                                              // Flags this filesystem does not keep are refused; D on a file is dropped, as ext4 does.
    assert!(matches!(
        fs.set_flags(f.ino, 0x4),
        Err(FsError::NotSupported)
    ));
    fs.set_flags(f.ino, FL_APPEND | FL_DIRSYNC).unwrap();
    assert_eq!(fs.flags(f.ino).unwrap(), FL_APPEND);
    // New inodes take S, d, A (and D for directories) from their directory.
    fs.set_flags(d.ino, FL_NODUMP | FL_NOATIME | FL_DIRSYNC)
        .unwrap();
    let g = fs.create(d.ino, b"g", 0o644, C).unwrap();
    let sub = fs.mkdir(d.ino, b"sub", 0o755, C).unwrap();
    assert_eq!(fs.flags(g.ino).unwrap(), FL_NODUMP | FL_NOATIME);
    let g_flags_inherited = fs.flags(g.ino).unwrap();
    assert_eq!(g_flags_inherited & FL_SYNC, 0);
    assert_eq!(
        fs.flags(sub.ino).unwrap(),
        FL_NODUMP | FL_NOATIME | FL_DIRSYNC
    );
    // D: a change of names in the directory is durable when the call returns; S: a write.
    let syncs = fs.stats().syncs;
    fs.create(d.ino, b"h", 0o644, C).unwrap();
    assert_eq!(fs.stats().syncs, syncs + 1);
    fs.set_flags(g.ino, FL_NODUMP | FL_NOATIME | FL_SYNC)
        .unwrap();
    fs.write(g.ino, 0, b"x").unwrap();
    assert_eq!(fs.stats().syncs, syncs + 2);
    // A: reads leave atime alone.
    fs.write(g.ino, 0, b"x").unwrap();
    let before = fs.getattr(g.ino).unwrap().atime;
    fs.read(g.ino, 0, 1).unwrap();
    assert_eq!(fs.getattr(g.ino).unwrap().atime, before);
    let fs = remount(fs, &dev);
    assert_eq!(fs.flags(f.ino).unwrap(), FL_APPEND);
    assert_eq!(fs.read(f.ino, 0, 64).unwrap(), b"hello!more");
    fs.set_flags(f.ino, 0).unwrap();
    fs.unlink(d.ino, b"f").unwrap();
    unmount_and_fsck(fs, &dev);
}

#[test]
fn tmpfile_is_an_orphan_until_linked() {
    let dev = fresh(64 << 20);
    let fs = mount(&dev);
    let d = fs.mkdir(ROOT, b"d", 0o2775, C).unwrap();
    let a = fs.tmpfile(d.ino, 0o640, C).unwrap();
    assert_eq!((a.nlink, a.perm), (0, 0o640 & !0o022));
    fs.write(a.ino, 0, b"kept").unwrap();
    assert!(fs
        .readdir(d.ino, 0, 100)
        .unwrap()
        .iter()
        .all(|e| e.ino != a.ino));
    fs.link(a.ino, ROOT, b"named").unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().nlink, 1);
    fs.release(a.ino).unwrap();
    // Unlinked at its last release.
    let b = fs.tmpfile(d.ino, 0o600, C).unwrap();
    fs.write(b.ino, 0, &[7u8; 100_000]).unwrap();
    fs.release(b.ino).unwrap();
    assert!(fs.getattr(b.ino).is_err());
    // Still open at unmount (or a crash): freed by the next mount.
    let c = fs.tmpfile(d.ino, 0o600, C).unwrap();
    fs.write(c.ino, 0, &[9u8; 100_000]).unwrap();
    fs.fsync(c.ino, false).unwrap();
    let fs = remount(fs, &dev);
    assert!(fs.getattr(c.ino).is_err());
    assert_eq!(fs.read(a.ino, 0, 10).unwrap(), b"kept");
    // A regular file's last name gone while open is not linkable.
    let e = fs.create(ROOT, b"e", 0o644, C).unwrap();
    fs.open(e.ino).unwrap();
    fs.unlink(ROOT, b"e").unwrap();
    fs.release(e.ino).unwrap();
    assert!(fs.link(e.ino, ROOT, b"back").is_err());
    unmount_and_fsck(fs, &dev);
}

#[test]
fn shutdown_lets_go_of_the_device() {
    // lfs-fuse's DESTROY: the filesystem stays alive (the session holds it) but must hold
    // the device no more, so its descriptors close and the image is free at once.
    let dev = fresh(64 << 20);
    let fs = mount(&dev);
    fs.create(ROOT, b"f", 0o644, C).unwrap();
    assert!(Arc::strong_count(&dev) > 1);
    fs.shutdown().unwrap();
    assert_eq!(
        Arc::strong_count(&dev),
        1,
        "the filesystem still holds the device"
    );
    assert!(matches!(
        fs.create(ROOT, b"g", 0o644, C),
        Err(FsError::ShutDown)
    ));
    drop(fs);
    let fs = mount(&dev);
    assert!(fs.lookup(ROOT, b"f").is_ok());
    unmount_and_fsck(fs, &dev);
}

#[test]
fn truncate_and_punch() {
    let dev = fresh(64 << 20);
    let fs = mount(&dev);
    let f = fs.create(ROOT, b"t", 0o644, C).unwrap();
    fs.write(f.ino, 0, &vec![0xAB; 100_000]).unwrap();
    fs.setattr(
        f.ino,
        &SetAttr {
            size: Some(5000),
            ..Default::default()
        },
    )
    .unwrap();
    fs.setattr(
        f.ino,
        &SetAttr {
            size: Some(20000),
            ..Default::default()
        },
    )
    .unwrap();
    let got = fs.read(f.ino, 0, 20000).unwrap();
    assert!(got[..5000].iter().all(|&b| b == 0xAB) && got[5000..].iter().all(|&b| b == 0));
    fs.fallocate(
        f.ino,
        1000,
        10000,
        lfs_core::fs::FALLOC_FL_PUNCH_HOLE | lfs_core::fs::FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    let fs = remount(fs, &dev);
    let got = fs.read(f.ino, 0, 20000).unwrap();
    assert!(got[..1000].iter().all(|&b| b == 0xAB));
    assert!(got[1000..].iter().all(|&b| b == 0));
    assert_eq!(fs.getattr(f.ino).unwrap().size, 20000);
    unmount_and_fsck(fs, &dev);
}

#[test]
fn equal_checkpoint_generations_are_reported_and_repaired() {
    // FORMAT.md: generations are never equal; a damaged image that shows them equal mounts
    // from region A and fsck reports B.
    let dev = fresh(64 << 20);
    let fs = mount(&dev);
    fs.create(ROOT, b"f", 0o644, C).unwrap();
    let sb = fs.superblock().clone();
    fs.unmount().unwrap();
    let mut region = vec![0u8; sb.cp_blocks as usize * 4096];
    dev.read_at(&mut region, sb.cp_a.byte_offset()).unwrap();
    dev.write_at(&region, sb.cp_b.byte_offset()).unwrap();
    let found = lfs_core::fsck::findings(dev.clone()).unwrap();
    assert!(
        found.iter().any(|f| f.to_string().contains("region B")),
        "{found:?}"
    );
    let fs = mount(&dev);
    let r = fs.mount_report();
    assert_eq!(r.region, 'A');
    assert!(
        r.other_region_error
            .as_deref()
            .is_some_and(|e| e.contains("holds generation")),
        "{:?}",
        r.other_region_error
    );
    // The next checkpoint (the unmount's) goes to the region its generation names: they
    // differ again, and nothing is left to report.
    fs.create(ROOT, b"g", 0o644, C).unwrap();
    unmount_and_fsck(fs, &dev);
}

#[test]
fn damaged_newest_checkpoint_falls_back_to_the_other() {
    let dev = fresh(64 << 20);
    let fs = mount(&dev);
    let a = fs.create(ROOT, b"early", 0o644, C).unwrap();
    fs.write(a.ino, 0, b"kept").unwrap();
    fs.checkpoint().unwrap();
    fs.create(ROOT, b"late", 0o644, C).unwrap();
    let sb = fs.superblock().clone();
    fs.unmount().unwrap(); // the unmount checkpoint is the newest
                           // Which region is newest? Mount read-only to see, then damage that one.
    let ro = Fs::mount(
        dev.clone(),
        MountOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let newest = ro.mount_report().region;
    let gen = ro.mount_report().generation;
    assert!(ro.lookup(ROOT, b"late").is_ok());
    ro.unmount().unwrap();
    let region = if newest == 'A' { sb.cp_a } else { sb.cp_b };
    dev.write_at(&[0xFFu8; 512], region.byte_offset() + 1024)
        .unwrap(); // a torn/garbled region
    let fs = Fs::mount(
        dev.clone(),
        MountOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let r = fs.mount_report();
    assert_ne!(r.region, newest, "must use the other region");
    assert_eq!(r.generation, gen - 1);
    assert!(
        r.other_region_error
            .as_deref()
            .unwrap_or("")
            .contains("checksum"),
        "{:?}",
        r.other_region_error
    );
    assert_eq!(fs.read(a.ino, 0, 10).unwrap(), b"kept");
    // "late" was written after the older checkpoint, by the flush group of the unmount
    // checkpoint: roll-forward finds it.
    let rf = r.roll_forward.clone().unwrap();
    assert!(rf.groups >= 1 && rf.inodes >= 2, "{rf:?}");
    assert!(fs.lookup(ROOT, b"late").is_ok());
    fs.unmount().unwrap();
    // Without roll-forward the older checkpoint alone does not know it.
    let fs = Fs::mount(
        dev.clone(),
        MountOptions {
            read_only: true,
            no_recovery: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(fs.mount_report().roll_forward.is_none());
    assert_eq!(fs.read(a.ino, 0, 10).unwrap(), b"kept");
    assert!(matches!(fs.lookup(ROOT, b"late"), Err(FsError::NotFound)));
    fs.unmount().unwrap();
    // A read-write mount from the older region works and is consistent.
    let fs = mount(&dev);
    unmount_and_fsck(fs, &dev);
    // Both regions damaged: a clear error, no panic.
    dev.write_at(&[0u8; 4096], sb.cp_a.byte_offset()).unwrap();
    dev.write_at(&[0u8; 4096], sb.cp_b.byte_offset()).unwrap();
    let e = Fs::mount(dev.clone(), MountOptions::default())
        .err()
        .expect("must fail");
    assert!(
        matches!(e, FsError::Mount(MountError::NoCheckpoint { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("no valid checkpoint"), "{e}");
}

#[test]
fn not_an_lfs_image_and_damaged_superblock() {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new(64 << 20));
    dev.write_at(b"XFSB-not-ours", 0).unwrap();
    let e = Fs::mount(dev.clone(), MountOptions::default())
        .err()
        .expect("must fail");
    assert!(matches!(e, FsError::NotLfs(NotLfs::Foreign(_))), "{e:?}");
    assert!(e.to_string().contains("not an LFS filesystem"), "{e}");
    let e = Fs::mount(Arc::new(MemDevice::new(100)), MountOptions::default())
        .err()
        .expect("must fail");
    assert!(
        matches!(e, FsError::NotLfs(NotLfs::TooSmall { len: 100 })),
        "{e:?}"
    );
    // An image cut short (a truncated copy): the size it lacks, not "damaged".
    let whole = fresh(64 << 20);
    let cut: Arc<dyn Device> = Arc::new(MemDevice::new(32 << 20));
    let mut b = vec![0u8; 1 << 20];
    for off in (0..32u64 << 20).step_by(1 << 20) {
        whole.read_at(&mut b, off).unwrap();
        cut.write_at(&b, off).unwrap();
    }
    let e = Fs::mount(cut, MountOptions::default())
        .err()
        .expect("must fail");
    assert!(
        matches!(
            e,
            FsError::Mount(MountError::DeviceTooSmall {
                have,
                need
            }) if have == 32 << 20 && need == 64 << 20
        ),
        "{e:?}"
    );
    let dev = fresh(64 << 20);
    dev.write_at(&[0u8; 64], 8).unwrap(); // garble the primary superblock, keep its magic
    let fs = mount(&dev);
    assert!(
        fs.mount_report().primary_superblock_error.is_some(),
        "backup superblock used"
    );
    fs.unmount().unwrap();
}

#[test]
fn many_threads_at_once() {
    let dev = fresh(256 << 20);
    let fs = Arc::new(mount(&dev));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                let d = fs
                    .mkdir(ROOT, format!("t{t}").as_bytes(), 0o755, C)
                    .unwrap();
                for i in 0..200u64 {
                    let f = fs
                        .create(d.ino, format!("f{i}").as_bytes(), 0o644, C)
                        .unwrap();
                    let data = vec![(t * 31 + i) as u8; 1000 + (i as usize * 37) % 9000];
                    fs.write(f.ino, 0, &data).unwrap();
                    if i % 3 == 0 {
                        fs.rename(
                            d.ino,
                            format!("f{i}").as_bytes(),
                            d.ino,
                            format!("r{i}").as_bytes(),
                            0,
                        )
                        .unwrap();
                    }
                    if i % 50 == 0 {
                        fs.fsync(f.ino, false).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let fs = Arc::try_unwrap(fs).ok().unwrap();
    let fs = remount(fs, &dev);
    for t in 0..8u64 {
        let d = fs.lookup(ROOT, format!("t{t}").as_bytes()).unwrap();
        for i in 0..200u64 {
            let name = if i % 3 == 0 {
                format!("r{i}")
            } else {
                format!("f{i}")
            };
            let f = fs.lookup(d.ino, name.as_bytes()).unwrap();
            let want = vec![(t * 31 + i) as u8; 1000 + (i as usize * 37) % 9000];
            assert_eq!(fs.read(f.ino, 0, 20000).unwrap(), want, "t{t}/{name}");
        }
    }
    unmount_and_fsck(fs, &dev);
}

#[test]
fn link_count_stops_at_link_max() {
    let dev = fresh(256 << 20);
    let fs = mount(&dev);
    let f = fs.create(ROOT, b"f", 0o644, C).unwrap();
    let d = fs.mkdir(ROOT, b"links", 0o755, C).unwrap();
    for i in 1..lfs_core::fs::LINK_MAX {
        fs.link(f.ino, d.ino, format!("l{i}").as_bytes()).unwrap();
    }
    assert_eq!(fs.getattr(f.ino).unwrap().nlink, lfs_core::fs::LINK_MAX);
    assert!(matches!(
        fs.link(f.ino, d.ino, b"one-too-many"),
        Err(FsError::TooManyLinks)
    ));
    let fs = remount(fs, &dev);
    assert_eq!(fs.getattr(f.ino).unwrap().nlink, lfs_core::fs::LINK_MAX);
    unmount_and_fsck(fs, &dev);
}

/// Linux's rules for privileges (set-ID bits, `security.capability`) on write, truncate and
/// chown: the engine applies the parts that do not depend on the caller, and
/// `kill_privileges` the rest when its caller says the writer lacks CAP_FSETID.
#[test]
fn privileges_go_on_write_truncate_and_chown() {
    let dev = fresh(64 << 20);
    let fs = mount(&dev);
    let f = fs.create(ROOT, b"f", 0o644, C).unwrap().ino;
    let cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let set = |s: SetAttr| fs.setattr(f, &s).unwrap().perm;
    let mode = |m: u32| {
        set(SetAttr {
            mode: Some(m),
            ..Default::default()
        })
    };
    let has_cap = || fs.getxattr(f, b"security.capability").is_ok();
    // A write keeps set-ID bits (the engine cannot see CAP_FSETID) but drops the capability.
    mode(0o6777);
    fs.setxattr(f, b"security.capability", cap, 0).unwrap();
    fs.write(f, 0, b"x").unwrap();
    assert_eq!(fs.getattr(f).unwrap().perm, 0o6777);
    assert!(!has_cap());
    // So does a truncate; other attributes stay.
    fs.setxattr(f, b"security.capability", cap, 0).unwrap();
    fs.setxattr(f, b"user.k", b"v", 0).unwrap();
    set(SetAttr {
        size: Some(0),
        ..Default::default()
    });
    assert!(!has_cap());
    assert_eq!(fs.getxattr(f, b"user.k").unwrap(), b"v");
    // kill_privileges: set-user-ID always; set-group-ID with group execute, or for a caller
    // outside the file's group.
    for (before, caller_gid, after) in [
        (0o6777, 0, 0o777),
        (0o6767, 0, 0o2767),
        (0o6767, 5, 0o767),
        (0o0755, 5, 0o755),
    ] {
        mode(before);
        fs.setxattr(f, b"security.capability", cap, 0).unwrap();
        let changed = fs.kill_privileges(f, Some(caller_gid)).unwrap();
        assert_eq!(changed, before != after, "{before:o} by gid {caller_gid}");
        assert_eq!(
            fs.getattr(f).unwrap().perm,
            after,
            "{before:o} by gid {caller_gid}"
        );
        assert!(!has_cap());
    }
    // A caller with CAP_FSETID (no group given) loses only the capability.
    mode(0o6777);
    fs.setxattr(f, b"security.capability", cap, 0).unwrap();
    assert!(!fs.kill_privileges(f, None).unwrap());
    assert_eq!(fs.getattr(f).unwrap().perm, 0o6777);
    assert!(!has_cap());
    // A truncate by such a caller kills them with the truncate; a failed one does not.
    mode(0o6777);
    let too_big = SetAttr {
        size: Some(u64::MAX),
        kill_privileges: Some(5),
        ..Default::default()
    };
    assert!(fs.setattr(f, &too_big).is_err());
    assert_eq!(fs.getattr(f).unwrap().perm, 0o6777);
    let truncate = SetAttr {
        size: Some(1),
        kill_privileges: Some(5),
        ..Default::default()
    };
    assert_eq!(set(truncate), 0o777);
    // chown, even to the same owner or with neither given: as a change of owner.
    for s in [
        SetAttr {
            uid: Some(0),
            ..Default::default()
        },
        SetAttr {
            chown: true,
            ..Default::default()
        },
    ] {
        mode(0o6777);
        fs.setxattr(f, b"security.capability", cap, 0).unwrap();
        assert_eq!(set(s), 0o777);
        assert!(!has_cap());
    }
    // A chmod keeps the capability; a directory keeps its set-group-ID.
    fs.setxattr(f, b"security.capability", cap, 0).unwrap();
    mode(0o755);
    assert!(has_cap());
    let d = fs.mkdir(ROOT, b"d", 0o2775, C).unwrap().ino;
    fs.kill_privileges(d, Some(5)).unwrap();
    assert_eq!(fs.getattr(d).unwrap().perm, 0o2775);
    let fs = remount(fs, &dev);
    assert_eq!(fs.getattr(f).unwrap().perm, 0o755);
    assert!(fs.getxattr(f, b"security.capability").is_ok());
    unmount_and_fsck(fs, &dev);
}

/// posix_fallocate's promise on a log: space granted to a range stays for the writes into
/// it, however full other files make the disk (once per block); a truncate gives it back.
/// And a full disk refuses quickly: a second refusal without anything deleted does no
/// cleaning, flushing or checkpointing (no checkpoint storm).
#[test]
fn fallocated_space_is_kept_for_its_range_and_a_full_disk_refuses_cheaply() {
    let dev = fresh(32 << 20);
    let fs = mount(&dev);
    // As lfs-fuse with its writeback cache: writes from the cache may use this, and use it
    // all here, before the preallocated file is written.
    fs.set_cache_reserve(2 << 20);
    let pre = fs.create(ROOT, b"pre", 0o644, C).unwrap().ino;
    let keep = fs.create(ROOT, b"keep", 0o644, C).unwrap().ino;
    fs.fallocate(pre, 0, 4 << 20, 0).unwrap();
    // The granted space is the file's, in st_blocks as on ext4 (xfstests generic/568).
    assert_eq!(fs.getattr(pre).unwrap().blocks, (4 << 20) / 512);
    fs.fallocate(keep, 0, 1 << 20, lfs_core::fs::FALLOC_FL_KEEP_SIZE)
        .unwrap();
    // Fill the rest of the disk until it refuses.
    let hog = fs.create(ROOT, b"hog", 0o644, C).unwrap().ino;
    let chunk = vec![0x5au8; 64 << 10];
    let mut off = 0u64;
    for cached in [false, true] {
        loop {
            let r = if cached {
                fs.write_cached(hog, off, &chunk)
            } else {
                fs.write(hog, off, &chunk)
            };
            match r {
                Ok(n) => off += n as u64,
                Err(FsError::NoSpace) => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(off > 8 << 20, "disk full after only {off} bytes");
    // Refused again at once: nothing was freed, so no checkpoint and no cleaning pass.
    let before = fs.stats();
    for _ in 0..100 {
        assert!(matches!(fs.write(hog, off, &chunk), Err(FsError::NoSpace)));
    }
    let after = fs.stats();
    assert_eq!(after.checkpoints, before.checkpoints, "checkpoint storm");
    assert_eq!(
        after.blocks_appended, before.blocks_appended,
        "rewrites on a full disk"
    );
    // The preallocated ranges take their writes, in any order.
    let data: Vec<u8> = (0..(4u32 << 20)).map(|k| (k % 251) as u8).collect();
    for piece in (0..64).rev() {
        let at = piece * (64 << 10);
        fs.write(pre, at as u64, &data[at..at + (64 << 10)])
            .unwrap();
    }
    fs.write(keep, 0, &data[..1 << 20]).unwrap();
    assert_eq!(fs.read(pre, 0, 4 << 20).unwrap(), data);
    // Written, the range's blocks are the file's data now, no more and no fewer.
    let blocks = fs.getattr(pre).unwrap().blocks;
    assert!(
        ((4 << 20) / 512..=(4 << 20) / 512 + 8 * 8).contains(&blocks),
        "{blocks}"
    );
    // Space freed by a delete makes writing possible again at once.
    fs.unlink(ROOT, b"hog").unwrap();
    fs.write(pre, 4 << 20, &chunk).unwrap();
    let fs = remount(fs, &dev);
    assert_eq!(fs.read(pre, 0, 4 << 20).unwrap(), data);
    unmount_and_fsck(fs, &dev);
}

#[test]
fn the_inode_cache_keeps_to_its_budget_and_forgets_nothing() {
    let dev = fresh(64 << 20);
    let opts = || MountOptions {
        inode_cache: 40,
        ..Default::default()
    };
    let fs = Fs::mount(dev.clone(), opts()).unwrap();
    let mut files = Vec::new();
    for d in 0..5 {
        let dir = fs
            .mkdir(ROOT, format!("d{d}").as_bytes(), 0o755, C)
            .unwrap();
        for f in 0..60 {
            let a = fs
                .create(dir.ino, format!("f{f}").as_bytes(), 0o644, C)
                .unwrap();
            fs.write(a.ino, 0, format!("{d}/{f}").as_bytes()).unwrap();
            files.push((dir.ino, format!("f{f}"), a.ino, format!("{d}/{f}")));
        }
    }
    // Unwritten changes keep their inodes in memory, whatever the budget.
    assert!(fs.stats().cached_inodes > 40);
    fs.unmount().unwrap();
    // Written, they may go: on a read-only mount (no atime to write) every operation ends
    // within the budget.
    let ro = Fs::mount(
        dev.clone(),
        MountOptions {
            read_only: true,
            ..opts()
        },
    )
    .unwrap();
    for (dir, name, ino, data) in &files {
        let a = ro.lookup(*dir, name.as_bytes()).unwrap();
        assert_eq!(a.ino, *ino);
        assert_eq!(ro.read(a.ino, 0, 100).unwrap(), data.as_bytes());
        assert!(
            ro.stats().cached_inodes <= 40,
            "{}",
            ro.stats().cached_inodes
        );
    }
    ro.unmount().unwrap();
    // Changes made after an inode was dropped and read again are kept.
    let fs = Fs::mount(dev.clone(), opts()).unwrap();
    for (dir, name, _, _) in files.iter().step_by(3) {
        fs.lookup(*dir, name.as_bytes()).unwrap();
    }
    for (_, _, ino, data) in files.iter().step_by(7) {
        fs.write(*ino, data.len() as u64, b"+").unwrap();
    }
    let fs = {
        fs.unmount().unwrap();
        assert_eq!(lfs_core::fsck::findings(dev.clone()).unwrap(), vec![]);
        Fs::mount(dev.clone(), opts()).unwrap()
    };
    for (i, (dir, name, ino, data)) in files.iter().enumerate() {
        let a = fs.lookup(*dir, name.as_bytes()).unwrap();
        let want = if i % 7 == 0 {
            format!("{data}+")
        } else {
            data.clone()
        };
        assert_eq!(
            (a.ino, fs.read(*ino, 0, 100).unwrap()),
            (*ino, want.into_bytes())
        );
    }
    fs.unmount().unwrap();
}
