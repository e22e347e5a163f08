//! Scale and limit tests: a sparse file past 4 GiB, a directory of 100 000 entries, and a
//! filesystem filled to ENOSPC. Every test ends with a remount and a check.
#![allow(clippy::unwrap_used)]

use lfs_core::device::{Device, FileDevice, MemDevice};
use lfs_core::format::Ino;
use lfs_core::fs::SetAttr;
use lfs_core::{mkfs, Fs, FsError, MkfsOptions, MountOptions};
use std::sync::Arc;

use lfs_tests::engine::{remount, unmount_and_fsck, C, ROOT};

#[test]
fn sparse_file_past_4_gib_and_at_1_tib() {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new(64 << 20));
    mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), MountOptions::default()).unwrap();
    let f = fs.create(ROOT, b"sparse", 0o644, C).unwrap();
    let marks: [(u64, &[u8]); 4] = [
        (0, b"start"),
        ((4 << 30) + 4093, b"across-4GiB"),
        ((1 << 40) - 7, b"one-TiB"),
        (5 << 40, b"five-TiB"),
    ];
    for (off, data) in marks {
        fs.write(f.ino, off, data).unwrap();
    }
    let fs = remount(fs, &dev);
    let a = fs.getattr(f.ino).unwrap();
    assert_eq!(a.size, (5 << 40) + 8);
    assert!(
        a.blocks < 100 * 8,
        "sparse file must not allocate its holes ({} sectors)",
        a.blocks
    );
    for (off, data) in marks {
        assert_eq!(
            fs.read(f.ino, off, data.len() as u32).unwrap(),
            data,
            "at {off}"
        );
    }
    assert_eq!(
        fs.read(f.ino, 3 << 30, 4096).unwrap(),
        vec![0u8; 4096],
        "holes read as zeros"
    );
    assert!(matches!(
        fs.write(f.ino, 1 << 44, b"x"),
        Err(FsError::FileTooBig)
    ));
    fs.setattr(
        f.ino,
        &SetAttr {
            size: Some(4 << 30),
            ..Default::default()
        },
    )
    .unwrap();
    let fs = remount(fs, &dev);
    assert_eq!(fs.getattr(f.ino).unwrap().size, 4 << 30);
    assert_eq!(fs.read(f.ino, 0, 5).unwrap(), b"start");
    assert_eq!(fs.read(f.ino, (4 << 30) - 3, 100).unwrap(), b"\0\0\0");
    unmount_and_fsck(fs, &dev);
}

#[test]
fn directory_of_100_000_entries() {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new(1 << 30));
    mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), MountOptions::default()).unwrap();
    let d = fs.mkdir(ROOT, b"big", 0o755, C).unwrap();
    let n = 100_000u64;
    for i in 0..n {
        fs.mknod(d.ino, format!("entry-{i:06}").as_bytes(), 0o100644, 0, C)
            .unwrap();
    }
    let fs = remount(fs, &dev);
    // Lookups stay fast (indexed) and right, including misses.
    for i in (0..n).step_by(997) {
        fs.lookup(d.ino, format!("entry-{i:06}").as_bytes())
            .unwrap();
    }
    assert!(matches!(
        fs.lookup(d.ino, b"entry-100000"),
        Err(FsError::NotFound)
    ));
    // readdir in pages returns every entry exactly once, while we delete behind the cursor.
    let mut seen = std::collections::HashSet::new();
    let mut cookie = 0;
    loop {
        let page = fs.readdir(d.ino, cookie, 1000).unwrap();
        if page.is_empty() {
            break;
        }
        for e in &page {
            if e.name != b"." && e.name != b".." {
                assert!(
                    seen.insert(e.name.clone()),
                    "duplicate {:?}",
                    String::from_utf8_lossy(&e.name)
                );
                if seen.len() % 3 == 0 {
                    fs.unlink(d.ino, &e.name).unwrap();
                }
            }
            cookie = e.cookie;
        }
    }
    assert_eq!(seen.len() as u64, n);
    let fs = remount(fs, &dev);
    let left = fs.readdir(d.ino, 0, usize::MAX).unwrap().len() as u64 - 2;
    assert_eq!(left, n - n / 3);
    unmount_and_fsck(fs, &dev);
}

#[test]
fn fill_to_enospc_then_delete_and_continue() {
    // A file-backed device, as a user would have.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.img");
    let dev: Arc<dyn Device> = Arc::new(FileDevice::create(&path, 48 << 20).unwrap());
    mkfs(
        dev.clone(),
        &MkfsOptions {
            seg_bytes: 256 << 10,
            ..Default::default()
        },
    )
    .unwrap();
    let fs = Fs::mount(dev.clone(), MountOptions::default()).unwrap();
    let chunk: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 241) as u8).collect();
    let mut written: Vec<(Ino, usize)> = Vec::new(); // (ino, chunks)
    let mut hit = None;
    'fill: for f in 0..1000 {
        let a = fs.create(ROOT, format!("f{f}").as_bytes(), 0o644, C);
        let a = match a {
            Ok(a) => a,
            Err(e) => {
                hit = Some(e);
                break;
            }
        };
        written.push((a.ino, 0));
        for c in 0..8 {
            match fs.write(a.ino, c * chunk.len() as u64, &chunk) {
                Ok(_) => written.last_mut().unwrap().1 += 1,
                Err(e) => {
                    hit = Some(e);
                    break 'fill;
                }
            }
        }
    }
    assert!(
        matches!(hit, Some(FsError::NoSpace)),
        "expected ENOSPC, got {hit:?}"
    );
    let st = fs.statfs().unwrap();
    assert!(
        st.blocks_avail < 256,
        "df says {} blocks free on a full disk",
        st.blocks_avail
    );
    // Everything that was accepted is there, also after a remount.
    let check = |fs: &Fs, written: &[(Ino, usize)]| {
        for &(ino, n) in written {
            let data = fs.read(ino, 0, (n * chunk.len()) as u32 + 1).unwrap();
            assert_eq!(data.len(), n * chunk.len());
            assert!(
                data.chunks(chunk.len()).all(|c| c == chunk.as_slice()),
                "inode {ino} damaged"
            );
        }
    };
    check(&fs, &written);
    let fs = remount(fs, &dev);
    check(&fs, &written);
    // Deleting works on the full disk, and whole dead segments come back.
    for f in 0..written.len() / 2 {
        fs.unlink(ROOT, format!("f{f}").as_bytes()).unwrap();
    }
    fs.checkpoint().unwrap();
    let keep = &written[written.len() / 2..];
    let g = fs.create(ROOT, b"after", 0o644, C).unwrap();
    for c in 0..8 {
        fs.write(g.ino, c * chunk.len() as u64, &chunk).unwrap();
    }
    let fs = remount(fs, &dev);
    check(&fs, keep);
    check(&fs, &[(g.ino, 8)]);
    unmount_and_fsck(fs, &dev);
}
