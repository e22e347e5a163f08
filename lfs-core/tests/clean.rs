//! The cleaner's mechanism: liveness from summaries, M segments into N, every file kept,
//! cleaning under concurrent writes, and ENOSPC that foreground cleaning turns back into room.
//! Every test ends with fsck.
#![allow(clippy::unwrap_used)]

use lfs_core::device::{Device, MemDevice};
use lfs_core::format::Ino;
use lfs_core::format::{BlockAddr, SegNo};
use lfs_core::fs::{Creds, SegmentView, SetAttr, TimeOrNow, VictimPicker};
use lfs_core::{mkfs, Fs, FsError, MkfsOptions, MountOptions};
use std::collections::BTreeMap;
use std::sync::Arc;

const ROOT: lfs_core::format::Ino = lfs_core::format::ROOT_INO;
const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};

/// Least utilized first (the policies proper live in lfs-cleaner).
#[derive(Debug)]
struct LeastLive;

impl VictimPicker for LeastLive {
    fn pick(&self, segs: &[SegmentView], _now: u64, max: usize) -> Vec<SegNo> {
        let mut v: Vec<&SegmentView> = segs.iter().filter(|s| s.utilization() < 1.0).collect();
        v.sort_by_key(|s| s.live_bytes);
        v.into_iter().take(max).map(|s| s.segment).collect()
    }
}

fn fresh(bytes: u64, seg: u64) -> Arc<dyn Device> {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new(bytes));
    mkfs(
        dev.clone(),
        &MkfsOptions {
            seg_bytes: seg,
            ..Default::default()
        },
    )
    .unwrap();
    dev
}

fn content(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 31 + seed * 7) % 251) as u8)
        .collect()
}

fn check_all(fs: &Fs, files: &BTreeMap<Ino, Vec<u8>>) {
    for (&ino, want) in files {
        let got = fs.read(ino, 0, want.len() as u32 + 10).unwrap();
        assert!(
            got == *want,
            "inode {ino}: {} bytes, want {}",
            got.len(),
            want.len()
        );
    }
}

fn unmount_and_fsck(fs: Fs, dev: &Arc<dyn Device>) {
    fs.unmount().unwrap();
    assert_eq!(lfs_core::fsck::findings(dev.clone()).unwrap(), vec![]);
}

/// A fragmented filesystem: files of every shape (small, indirect-sized, with xattrs,
/// directories of many entries), half of them overwritten or deleted a few times.
fn fragment(fs: &Fs) -> BTreeMap<Ino, Vec<u8>> {
    let mut files = BTreeMap::new();
    let d = fs.mkdir(ROOT, b"dir", 0o755, C).unwrap().ino;
    for i in 0..300u64 {
        let len = match i % 10 {
            0 => 70_000, // past the direct pointers: indirect blocks
            1 => 0,
            _ => 1000 + (i as usize * 97) % 9000,
        };
        let parent = if i % 3 == 0 { d } else { ROOT };
        let f = fs
            .create(parent, format!("f{i}").as_bytes(), 0o644, C)
            .unwrap()
            .ino;
        let data = content(i, len);
        fs.write(f, 0, &data).unwrap();
        if i % 7 == 0 {
            fs.setxattr(f, b"user.tag", format!("v{i}").as_bytes(), 0)
                .unwrap();
        }
        files.insert(f, data);
    }
    fs.checkpoint().unwrap();
    for round in 0..3u64 {
        for (n, (&ino, data)) in files.iter_mut().enumerate() {
            if n % 2 == 0 && !data.is_empty() {
                *data = content(round * 1000 + ino.get(), data.len());
                fs.write(ino, 0, data).unwrap();
            }
        }
        fs.checkpoint().unwrap();
    }
    for i in (0..300u64).step_by(5) {
        let parent = if i % 3 == 0 { d } else { ROOT };
        let a = fs.lookup(parent, format!("f{i}").as_bytes()).unwrap();
        fs.unlink(parent, format!("f{i}").as_bytes()).unwrap();
        files.remove(&a.ino);
    }
    fs.checkpoint().unwrap();
    files
}

#[test]
fn m_segments_into_n_keeps_every_file() {
    let dev = fresh(48 << 20, 128 << 10);
    let fs = Fs::mount(dev.clone(), MountOptions::default()).unwrap();
    let files = fragment(&fs);
    let before = fs.segment_views();
    let victims: Vec<SegNo> = before
        .iter()
        .filter(|s| s.utilization() < 0.8)
        .map(|s| s.segment)
        .collect();
    let live: u64 = before
        .iter()
        .filter(|s| victims.contains(&s.segment))
        .map(|s| s.live_bytes)
        .sum();
    assert!(victims.len() >= 8, "too few victims: {before:?}");
    let clean0 = fs.stats().clean_segments;
    let r = fs.clean(&victims).unwrap();
    assert_eq!(r.segments.len(), victims.len());
    // Victims that died on their own during the pass are freed but not read.
    assert!(r.live_bytes <= live && r.live_bytes > live / 2, "{r:?}");
    // M in, N out: the moved live data needs far fewer segments than it came from.
    let seg_bytes = fs.superblock().seg_bytes();
    let n = r.blocks_written * 4096 / seg_bytes + 1;
    assert!(
        n * 2 <= victims.len() as u64,
        "{} segments into {n}: {r:?}",
        victims.len()
    );
    let clean1 = fs.stats().clean_segments;
    assert!(
        // N output segments, plus the log's partly written head.
        clean1 + n + 2 >= clean0 + victims.len() as u64,
        "clean segments {clean0} -> {clean1}, {} victims into {n}: {r:?} {:?}",
        victims.len(),
        fs.usage_table()
            .iter()
            .filter(|(s, _)| victims.contains(s))
            .collect::<Vec<_>>()
    );
    for s in &victims {
        let v = fs.segment_views();
        assert!(
            v.iter().all(|x| x.segment != *s || x.live_bytes > 0),
            "victim {s} still Full and empty"
        );
    }
    check_all(&fs, &files);
    assert_eq!(fs.verify().unwrap(), Vec::<String>::new());
    // Cleaning again finds everything it just wrote live and frees the victims too.
    let again: Vec<SegNo> = fs.segment_views().iter().map(|s| s.segment).collect();
    let r2 = fs.clean(&again).unwrap();
    assert_eq!(r2.freed, again.len() as u64, "{r2:?}");
    check_all(&fs, &files);
    let fs = {
        fs.unmount().unwrap();
        Fs::mount(dev.clone(), MountOptions::default()).unwrap()
    };
    check_all(&fs, &files);
    let mut tagged = 0;
    for i in (0..300u64).step_by(7).filter(|i| i % 5 != 0) {
        let parent = if i % 3 == 0 {
            fs.lookup(ROOT, b"dir").unwrap().ino
        } else {
            ROOT
        };
        let f = fs.lookup(parent, format!("f{i}").as_bytes()).unwrap().ino;
        assert_eq!(
            fs.getxattr(f, b"user.tag").unwrap(),
            format!("v{i}").as_bytes()
        );
        tagged += 1;
    }
    assert!(tagged > 30);
    let d = fs.lookup(ROOT, b"dir").unwrap().ino;
    // f0, f3, ..., f297 minus every fifth: 100 names less the 20 deleted, plus . and ..
    assert_eq!(fs.readdir(d, 0, 1000).unwrap().len(), 2 + 100 - 20);
    unmount_and_fsck(fs, &dev);
}

/// A pass writes what it moves file by file, the least recently modified files first: cold
/// data gathers with cold data (whatever the inode numbers), and a file's blocks stay
/// together so a later pass rewrites one tree node per file.
#[test]
fn a_pass_writes_cold_files_first_each_file_together() {
    let dev = fresh(16 << 20, 128 << 10);
    let fs = Fs::mount(dev.clone(), MountOptions::default()).unwrap();
    let data = content(5, 6 * 4096);
    // `newer` gets the lower inode number; `older` was modified long before it.
    let mut inos = Vec::new();
    for (name, sec) in [("newer", 2_000_000), ("older", 1_000_000)] {
        let f = fs.create(ROOT, name.as_bytes(), 0o644, C).unwrap().ino;
        fs.write(f, 0, &data).unwrap();
        let at = lfs_core::format::inode::Timespec { sec, nsec: 0 };
        fs.setattr(
            f,
            &SetAttr {
                mtime: Some(TimeOrNow::At(at)),
                ..Default::default()
            },
        )
        .unwrap();
        inos.push(f);
    }
    let (newer, older) = (inos[0], inos[1]);
    assert!(newer < older);
    // Push the log head past them, so their segments are Full.
    let filler = fs.create(ROOT, b"filler", 0o644, C).unwrap().ino;
    fs.write(filler, 0, &content(9, 80 * 4096)).unwrap();
    fs.checkpoint().unwrap();
    let sb = fs.superblock().clone();
    let addrs = |ino: Ino| -> Vec<BlockAddr> {
        let info = fs.inode_info(ino).unwrap();
        assert_eq!(info.blocks.len(), 6);
        info.blocks.iter().map(|b| b.0).collect()
    };
    let mut victims: Vec<SegNo> = addrs(newer)
        .into_iter()
        .chain(addrs(older))
        .filter_map(|a| sb.seg_of(a))
        .collect();
    victims.sort_unstable();
    victims.dedup();
    let before = (addrs(newer), addrs(older));
    let r = fs.clean(&victims).unwrap();
    assert_eq!(r.segments, victims, "{r:?}");
    let (n, o) = (addrs(newer), addrs(older));
    assert!(n != before.0 && o != before.1, "not moved: {before:?}");
    // The older file's blocks all come before the newer file's.
    assert!(
        o.iter().max() < n.iter().min(),
        "older at {o:?}, newer at {n:?}"
    );
    let mut expect = BTreeMap::new();
    expect.insert(newer, data.clone());
    expect.insert(older, data);
    check_all(&fs, &expect);
    unmount_and_fsck(fs, &dev);
}

#[test]
fn cleaning_while_others_write() {
    let dev = fresh(48 << 20, 128 << 10);
    let fs = Arc::new(Fs::mount(dev.clone(), MountOptions::default()).unwrap());
    let files = fragment(&fs);
    let writers: Vec<_> = (0..2u64)
        .map(|t| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                let mut mine = BTreeMap::new();
                for i in 0..200u64 {
                    let f = fs
                        .create(ROOT, format!("w{t}-{i}").as_bytes(), 0o644, C)
                        .unwrap()
                        .ino;
                    let data = content(t * 10_000 + i, 3000 + (i as usize % 5) * 4096);
                    fs.write(f, 0, &data).unwrap();
                    if i % 3 == 0 {
                        let data2 = content(i, data.len());
                        fs.write(f, 0, &data2).unwrap();
                        mine.insert(f, data2);
                    } else {
                        mine.insert(f, data);
                    }
                }
                mine
            })
        })
        .collect();
    let mut freed = 0;
    for _ in 0..20 {
        let v = LeastLive.pick(&fs.segment_views(), 0, 4);
        freed += fs.clean(&v).unwrap().freed;
    }
    let mut all = files;
    for w in writers {
        all.extend(w.join().unwrap());
    }
    assert!(freed > 0);
    check_all(&fs, &all);
    let Ok(fs) = Arc::try_unwrap(fs) else {
        panic!("writers still hold the filesystem")
    };
    unmount_and_fsck(fs, &dev);
}

#[test]
fn enospc_then_foreground_cleaning_makes_room() {
    let dev = fresh(24 << 20, 128 << 10);
    // Fill the disk without a cleaner.
    let fs = Fs::mount(dev.clone(), MountOptions::default()).unwrap();
    let mut files = BTreeMap::new();
    let mut i = 0u64;
    loop {
        let f = match fs.create(ROOT, format!("f{i}").as_bytes(), 0o644, C) {
            Ok(a) => a.ino,
            Err(FsError::NoSpace) => {
                break;
            }
            Err(e) => panic!("{e}"),
        };
        let data = content(i, 6000);
        match fs.write(f, 0, &data) {
            Ok(_) => {
                files.insert(i, (f, data));
            }
            Err(FsError::NoSpace) => {
                fs.unlink(ROOT, format!("f{i}").as_bytes()).unwrap();
                break;
            }
            Err(e) => panic!("{e}"),
        }
        i += 1;
    }
    // Delete every other file: half of every segment is dead, no segment is empty.
    for n in (0..i).step_by(2) {
        if files.remove(&n).is_some() {
            fs.unlink(ROOT, format!("f{n}").as_bytes()).unwrap();
        }
    }
    fs.checkpoint().unwrap();
    let big = content(99, 4 << 20);
    let g = fs.create(ROOT, b"big", 0o644, C).unwrap().ino;
    let r = (0..big.len())
        .step_by(65536)
        .try_for_each(|o| fs.write(g, o as u64, &big[o..o + 65536]).map(|_| ()));
    assert!(
        matches!(r, Err(FsError::NoSpace)),
        "no cleaner: ENOSPC expected, got {r:?}"
    );
    fs.unlink(ROOT, b"big").unwrap();
    fs.unmount().unwrap();
    assert_eq!(lfs_core::fsck::findings(dev.clone()).unwrap(), vec![]);

    // The same disk with a cleaner: the writer's ENOSPC becomes a cleaning pass.
    let opts = MountOptions {
        cleaner: Some(Arc::new(LeastLive)),
        ..Default::default()
    };
    let fs = Fs::mount(dev.clone(), opts).unwrap();
    let g = fs.create(ROOT, b"big", 0o644, C).unwrap().ino;
    for o in (0..big.len()).step_by(65536) {
        if let Err(e) = fs.write(g, o as u64, &big[o..o + 65536]) {
            panic!(
                "at {o}: {e}: {:?} {:?}",
                fs.stats(),
                fs.segment_views()
                    .iter()
                    .map(|v| v.live_bytes / 1024)
                    .collect::<Vec<_>>()
            );
        }
    }
    fs.fsync(g, false).unwrap();
    assert!(fs.stats().cleaner_segments > 0);
    assert_eq!(fs.read(g, 0, big.len() as u32).unwrap(), big);
    for (f, data) in files.values() {
        assert_eq!(fs.read(*f, 0, 10_000).unwrap(), *data);
    }
    unmount_and_fsck(fs, &dev);
}
