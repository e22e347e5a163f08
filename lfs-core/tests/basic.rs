//! End-to-end use of the engine on an in-memory device; every test ends with a remount.
#![allow(clippy::unwrap_used)]

use lfs_core::device::{Device, MemDevice};
use lfs_core::fs::{Creds, SetAttr, RENAME_EXCHANGE, RENAME_NOREPLACE};
use lfs_core::{mkfs, Fs, FsError, MkfsOptions, MountOptions};
use std::sync::Arc;

const ROOT: u64 = 1;
const C: Creds = Creds { uid: 0, gid: 0 };

fn fresh(bytes: u64) -> Arc<dyn Device> {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new(bytes));
    mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    dev
}

fn mount(dev: &Arc<dyn Device>) -> Fs {
    Fs::mount(dev.clone(), MountOptions::default()).unwrap()
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
    assert_eq!(fs.verify().unwrap(), Vec::<String>::new());
    fs.unmount().unwrap();
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
    assert_eq!(fs.verify().unwrap(), Vec::<String>::new());
    fs.unmount().unwrap();
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
    assert_eq!(fs.verify().unwrap(), Vec::<String>::new());
    fs.unmount().unwrap();
}
