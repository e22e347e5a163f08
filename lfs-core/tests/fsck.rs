//! fsck: each test damages one structure of a small filesystem and asserts the exact
//! finding, then (where a repair exists) repairs it and checks the result is clean. Damage is
//! done the way a bug would leave it — the structure re-encoded with valid checksums and the
//! unit holding it re-sealed — so only fsck's cross-checks can tell; bit rot (checksums
//! broken) has its own test.
#![allow(clippy::unwrap_used)]

use lfs_core::device::{Device, MemDevice};
use lfs_core::format::dir::{decode_dir_block, encode_dir_block};
use lfs_core::format::inode::{decode_inode_block, encode_inode_block, FileKind};
use lfs_core::format::summary::{data_crc, BlockKind, Summary};
use lfs_core::format::superblock::Superblock;
use lfs_core::format::table::{
    decode_imap_block, decode_usage_block, encode_imap_block, encode_usage_block,
};
use lfs_core::format::Ino;
use lfs_core::format::{BlockAddr, BLOCK_SIZE};
use lfs_core::fs::Creds;
use lfs_core::fsck::{fsck, FsckOptions, FsckReport, Mode};
use lfs_core::fsck::{Finding, Owner};
use lfs_core::{mkfs, Fs, MkfsOptions, MountOptions};
use std::sync::Arc;

const ROOT: lfs_core::format::Ino = lfs_core::format::ROOT_INO;
const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};

/// Inode numbers of the test tree: /a (file, 20 KB, xattr), /d/, /d/b (file), /d/e/,
/// /d/link (hard link to /a), /big (600 KB: indirect blocks).
struct Tree {
    a: Ino,
    d: Ino,
    b: Ino,
    e: Ino,
    big: Ino,
}

fn build() -> (Vec<u8>, Tree) {
    let dev = Arc::new(MemDevice::new(32 << 20));
    let d: Arc<dyn Device> = dev.clone();
    mkfs(
        d.clone(),
        &MkfsOptions {
            seg_bytes: 256 << 10,
            ..Default::default()
        },
    )
    .unwrap();
    let fs = Fs::mount(d, MountOptions::default()).unwrap();
    let a = fs.create(ROOT, b"a", 0o644, C).unwrap().ino;
    fs.write(a, 0, &[7u8; 20_000]).unwrap();
    fs.setxattr(a, b"user.k", b"v", 0).unwrap();
    let dd = fs.mkdir(ROOT, b"d", 0o755, C).unwrap().ino;
    let b = fs.create(dd, b"b", 0o644, C).unwrap().ino;
    fs.write(b, 0, b"bee").unwrap();
    let e = fs.mkdir(dd, b"e", 0o755, C).unwrap().ino;
    fs.link(a, dd, b"link").unwrap();
    let big = fs.create(ROOT, b"big", 0o644, C).unwrap().ino;
    fs.write(big, 0, &vec![3u8; 600_000]).unwrap();
    fs.unmount().unwrap();
    let img = dev.image();
    let t = Tree {
        a,
        d: dd,
        b,
        e,
        big,
    };
    (img, t)
}

fn run(img: &[u8], mode: Mode) -> (FsckReport, Vec<u8>) {
    let dev = Arc::new(MemDevice::from_image(img.to_vec()));
    let r = fsck(dev.clone(), FsckOptions { mode, force: true }).unwrap();
    (r, dev.image())
}

fn sb_of(img: &[u8]) -> Superblock {
    Superblock::decode(&img[..BLOCK_SIZE]).unwrap()
}

fn block(img: &mut [u8], addr: BlockAddr) -> &mut [u8] {
    let o = addr.byte_offset() as usize;
    &mut img[o..o + BLOCK_SIZE]
}

/// Rewrite block `addr` through `f`, then re-seal the unit holding it (its payload checksum).
fn patch(img: &mut [u8], addr: BlockAddr, f: impl FnOnce(&mut [u8])) {
    f(block(img, addr));
    let sb = sb_of(img);
    let seg = sb.seg_of(addr).unwrap();
    let start = sb.seg_addr(seg);
    let mut off = 0u64;
    loop {
        let mut s = Summary::decode(block(img, start + off)).expect("block is in a unit");
        let n = s.entries.len() as u64;
        if addr > start + off && addr <= start + off + n {
            let p0 = (start + off + 1).byte_offset() as usize;
            s.data_crc = data_crc(img[p0..p0 + n as usize * BLOCK_SIZE].chunks(BLOCK_SIZE));
            block(img, start + off).copy_from_slice(&s.encode());
            return;
        }
        off += 1 + n;
    }
}

/// Change the summary entry of block `addr` through `f`, re-sealing the summary.
fn patch_entry(
    img: &mut [u8],
    addr: BlockAddr,
    f: impl FnOnce(&mut lfs_core::format::summary::SummaryEntry),
) {
    let sb = sb_of(img);
    let start = sb.seg_addr(sb.seg_of(addr).unwrap());
    let mut off = 0u64;
    loop {
        let mut s = Summary::decode(block(img, start + off)).unwrap();
        let n = s.entries.len() as u64;
        if addr > start + off && addr <= start + off + n {
            f(&mut s.entries[(addr - start - off - 1) as usize]);
            block(img, start + off).copy_from_slice(&s.encode());
            return;
        }
        off += 1 + n;
    }
}

fn with_fs<T>(img: &[u8], f: impl FnOnce(&Fs) -> T) -> T {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_image(img.to_vec()));
    let fs = Fs::mount(
        dev,
        MountOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    f(&fs)
}

/// Rewrite inode `ino` in place through `f`.
fn patch_inode(img: &mut [u8], ino: Ino, f: impl FnOnce(&mut lfs_core::format::inode::DiskInode)) {
    let e = with_fs(img, |fs| fs.imap_entry(ino).unwrap());
    patch(img, e.addr, |b| {
        let mut slots = decode_inode_block(b).unwrap();
        f(&mut slots[e.slot as usize]);
        b.copy_from_slice(&encode_inode_block(&slots));
    });
}

/// Rewrite the entry `name` of directory `dir` (its first block) through `f`.
fn patch_dirent(
    img: &mut [u8],
    dir: Ino,
    name: &[u8],
    f: impl FnOnce(&mut lfs_core::format::dir::DirEntry),
) {
    let addr = with_fs(img, |fs| fs.inode_info(dir).unwrap().blocks[0].0);
    patch(img, addr, |b| {
        let mut slots = decode_dir_block(b).unwrap();
        let e = slots.iter_mut().flatten().find(|e| e.name == name).unwrap();
        f(e);
        b.copy_from_slice(&encode_dir_block(&slots).unwrap());
    });
}

fn assert_clean(img: &[u8]) {
    let (r, after) = run(img, Mode::Check);
    assert_eq!(r.findings, vec![], "{:#?}", r.findings);
    assert_eq!(r.exit_code, 0);
    assert_eq!(after, img, "fsck -n wrote to the image");
}

/// -y repairs, exit 1, and a fresh check finds nothing; the files are still there.
fn assert_repaired(img: &[u8], mode: Mode) -> Vec<u8> {
    let (r, fixed) = run(img, mode);
    assert_eq!(r.remaining, vec![], "{:#?}", r);
    assert_eq!(r.exit_code, 1, "{r:#?}");
    assert_clean(&fixed);
    with_fs(&fixed, |fs| {
        assert_eq!(
            fs.read(fs.lookup(ROOT, b"a").unwrap().ino, 0, 5).unwrap(),
            [7u8; 5]
        );
    });
    fixed
}

#[test]
fn a_clean_image_has_no_findings_and_is_skipped_without_force() {
    let (img, _) = build();
    assert_clean(&img);
    let dev = Arc::new(MemDevice::from_image(img.clone()));
    let r = fsck(
        dev,
        FsckOptions {
            mode: Mode::Check,
            force: false,
        },
    )
    .unwrap();
    assert!(!r.checked && r.clean_unmount && r.exit_code == 0, "{r:?}");
}

#[test]
fn skewed_usage_count() {
    let (mut img, t) = build();
    let sb = sb_of(&img);
    let (usage_addr, seg) = with_fs(&img, |fs| {
        let a0 = fs.inode_info(t.a).unwrap().blocks[0].0;
        (fs.table_addrs().1[0], sb.seg_of(a0).unwrap())
    });
    let mut stored = 0;
    patch(&mut img, usage_addr, |b| {
        let mut es = decode_usage_block(b, 0, sb.seg_bytes()).unwrap();
        es[seg.index()].live_bytes += 4096;
        stored = es[seg.index()].live_bytes as u64;
        b.copy_from_slice(&encode_usage_block(0, &es));
    });
    let (r, after) = run(&img, Mode::Check);
    assert_eq!(
        r.findings,
        vec![Finding::UsageMismatch {
            segment: seg,
            stored,
            recomputed: stored - 4096
        }]
    );
    assert_eq!((r.exit_code, after == img), (4, true));
    assert_repaired(&img, Mode::Preen);
}

#[test]
fn wrong_link_count_is_preened() {
    let (mut img, t) = build();
    patch_inode(&mut img, t.b, |i| i.nlink = 2);
    let (r, _) = run(&img, Mode::Check);
    assert_eq!(
        r.findings,
        vec![Finding::LinkCount {
            ino: t.b,
            stored: 2,
            counted: 1
        }]
    );
    assert_repaired(&img, Mode::Preen);
}

#[test]
fn dangling_entry_and_the_inode_it_lost() {
    let (mut img, t) = build();
    patch_dirent(&mut img, t.d, b"b", |e| e.ino = Ino(999));
    let (r, _) = run(&img, Mode::Check);
    assert_eq!(
        r.findings,
        vec![
            Finding::DanglingEntry {
                dir: t.d,
                name: "b".into(),
                ino: Ino(999)
            },
            Finding::Unreachable {
                ino: t.b,
                kind: FileKind::Regular,
                nlink: 1
            }
        ]
    );
    // Preen does not remove names or reconnect inodes: it stops and says so.
    let (p, untouched) = run(&img, Mode::Preen);
    assert_eq!((p.exit_code, untouched == img), (4, true));
    let fixed = assert_repaired(&img, Mode::Yes);
    with_fs(&fixed, |fs| {
        let lf = fs.lookup(ROOT, b"lost+found").unwrap().ino;
        let b = fs.lookup(lf, format!("#{}", t.b).as_bytes()).unwrap();
        assert_eq!((b.ino, b.nlink), (t.b, 1));
        assert_eq!(fs.read(t.b, 0, 10).unwrap(), b"bee");
        assert!(fs.lookup(t.d, b"b").is_err());
    });
}

#[test]
fn entry_of_the_wrong_kind() {
    let (mut img, t) = build();
    patch_dirent(&mut img, t.d, b"b", |e| e.kind = FileKind::Symlink);
    let (r, _) = run(&img, Mode::Check);
    assert_eq!(
        r.findings,
        vec![Finding::EntryKindMismatch {
            dir: t.d,
            name: "b".into(),
            ino: t.b,
            entry: FileKind::Symlink,
            inode: FileKind::Regular
        }]
    );
    assert_repaired(&img, Mode::Yes);
}

#[test]
fn directory_with_the_wrong_parent() {
    let (mut img, t) = build();
    patch_inode(&mut img, t.e, |i| i.parent = ROOT);
    let (r, _) = run(&img, Mode::Check);
    assert_eq!(
        r.findings,
        vec![Finding::WrongParent {
            dir: t.e,
            recorded: ROOT,
            actual: t.d
        }]
    );
    assert_repaired(&img, Mode::Preen);
}

#[test]
fn inode_map_pointing_at_the_wrong_slot() {
    let (mut img, t) = build();
    let imap_addr = with_fs(&img, |fs| fs.table_addrs().0[0]);
    patch(&mut img, imap_addr, |b| {
        let mut es = decode_imap_block(b, 0).unwrap();
        es[t.b.index()].slot ^= 1;
        b.copy_from_slice(&encode_imap_block(0, &es));
    });
    let (r, _) = run(&img, Mode::Check);
    assert!(
        matches!(r.findings.first(), Some(Finding::InodeUnreadable { ino, .. }) if *ino == t.b),
        "{:#?}",
        r.findings
    );
    // Not repairable: fsck -y leaves it and says so.
    let (y, _) = run(&img, Mode::Yes);
    assert_eq!(y.exit_code & 4, 4, "{y:#?}");
}

#[test]
fn block_claimed_by_two_files() {
    let (mut img, t) = build();
    let a0 = with_fs(&img, |fs| fs.inode_info(t.a).unwrap().blocks[0].0);
    patch_inode(&mut img, t.b, |i| i.direct[0] = a0);
    let (r, _) = run(&img, Mode::Check);
    assert!(
        r.findings.contains(&Finding::BlockClaimedTwice {
            addr: a0,
            first: Owner::Data { ino: t.a, index: 0 },
            second: Owner::Data { ino: t.b, index: 0 }
        }),
        "{:#?}",
        r.findings
    );
    assert_eq!(run(&img, Mode::Yes).0.exit_code & 4, 4);
}

#[test]
fn summary_entry_naming_another_owner() {
    let (mut img, t) = build();
    let (addr, want) = with_fs(&img, |fs| {
        let info = fs.inode_info(t.big).unwrap();
        *info
            .blocks
            .iter()
            .find(|(_, e)| e.kind == BlockKind::Data && e.index == 3)
            .unwrap()
    });
    patch_entry(&mut img, addr, |e| e.index = 4);
    let (r, _) = run(&img, Mode::Check);
    let mut got = want;
    got.index = 4;
    assert_eq!(
        r.findings,
        vec![Finding::SummaryMismatch {
            owner: Owner::Data {
                ino: t.big,
                index: 3
            },
            addr,
            summary: format!("{got:?}")
        }]
    );
}

#[test]
fn bit_rot_in_a_unit_leaves_live_blocks_undescribed() {
    let (mut img, t) = build();
    let addr = with_fs(&img, |fs| fs.inode_info(t.big).unwrap().blocks[5].0);
    block(&mut img, addr)[100] ^= 0x40;
    let (r, _) = run(&img, Mode::Check);
    assert!(
        r.findings.contains(&Finding::BlockUnsummarized {
            owner: Owner::Data {
                ino: t.big,
                index: 5
            },
            addr
        }),
        "{:#?}",
        r.findings
    );
    assert!(r
        .findings
        .iter()
        .all(|f| matches!(f, Finding::BlockUnsummarized { .. })));
}

#[test]
fn damaged_superblock_copies_are_rewritten() {
    let (mut img, _) = build();
    block(&mut img, BlockAddr(0))[40] ^= 1;
    let (r, _) = run(&img, Mode::Check);
    assert!(
        matches!(
            r.findings.as_slice(),
            [Finding::SuperblockInvalid {
                copy: "primary",
                ..
            }]
        ),
        "{:#?}",
        r.findings
    );
    assert_repaired(&img, Mode::Preen);

    let (mut img, _) = build();
    let last = sb_of(&img).backup_addr();
    block(&mut img, last)[40] ^= 1;
    let (r, _) = run(&img, Mode::Check);
    assert!(
        matches!(
            r.findings.as_slice(),
            [Finding::SuperblockInvalid { copy: "backup", .. }]
        ),
        "{:#?}",
        r.findings
    );
    assert_repaired(&img, Mode::Yes);
}

#[test]
fn a_torn_checkpoint_region_is_crash_residue() {
    let (mut img, _) = build();
    let sb = sb_of(&img);
    // Damage whichever region holds the newest checkpoint: the other one is used and the
    // log after it is rolled forward.
    let gen = |img: &[u8], at: BlockAddr| {
        let o = at.byte_offset() as usize;
        lfs_core::format::checkpoint::Checkpoint::decode(
            &img[o..o + sb.cp_blocks as usize * BLOCK_SIZE],
            &sb,
        )
        .map(|c| c.generation)
        .unwrap_or(0)
    };
    let (newest, name) = if gen(&img, sb.cp_a) > gen(&img, sb.cp_b) {
        (sb.cp_a, 'A')
    } else {
        (sb.cp_b, 'B')
    };
    block(&mut img, newest)[64] ^= 1;
    let (r, after) = run(&img, Mode::Check);
    assert!(
        matches!(r.findings.first(), Some(Finding::CheckpointRegionInvalid { region, .. }) if *region == name),
        "{:#?}",
        r.findings
    );
    assert!(
        r.findings.iter().all(|f| !f.is_damage()),
        "{:#?}",
        r.findings
    );
    assert_eq!((r.exit_code, after == img), (0, true));
    let (y, fixed) = run(&img, Mode::Yes);
    assert_eq!(y.exit_code, 0, "{y:#?}");
    assert_clean(&fixed);
}

/// Bit rot in the newest checkpoint's inode map: mount falls back to the other region's
/// checkpoint and rolls forward; fsck calls it damage (no crash leaves a durable checkpoint
/// whose tables do not decode), -p leaves it, -y rewrites the tables.
#[test]
fn damaged_checkpoint_tables_fall_back_to_the_other_region() {
    let (mut img, t) = build();
    let (imap, _) = with_fs(&img, |fs| fs.table_addrs());
    let addr = imap.iter().copied().find(|a| !a.is_none()).unwrap();
    block(&mut img, addr)[100] ^= 4;
    let (r, after) = run(&img, Mode::Check);
    assert!(
        matches!(
            r.findings.first(),
            Some(Finding::CheckpointTablesDamaged { .. })
        ),
        "{:#?}",
        r.findings
    );
    assert_eq!((r.exit_code, after == img), (4, true));
    with_fs(&img, |fs| {
        assert_eq!(fs.read(t.big, 0, 4).unwrap(), [3u8; 4]);
        assert_eq!(fs.lookup(t.d, b"b").unwrap().ino, t.b);
    });
    let (p, _) = run(&img, Mode::Preen);
    assert_eq!(p.exit_code, 4, "{p:#?}");
    assert_repaired(&img, Mode::Yes);
}

#[test]
fn a_crash_is_not_an_error() {
    let dev = Arc::new(MemDevice::new(32 << 20));
    let d: Arc<dyn Device> = dev.clone();
    mkfs(d.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(d, MountOptions::default()).unwrap();
    let f = fs.create(ROOT, b"kept", 0o644, C).unwrap().ino;
    fs.write(f, 0, b"fsync'd").unwrap();
    let g = fs.create(ROOT, b"open-unlinked", 0o644, C).unwrap().ino;
    fs.open(g).unwrap();
    fs.write(g, 0, &[1u8; 9000]).unwrap();
    fs.unlink(ROOT, b"open-unlinked").unwrap();
    fs.fsync(f, false).unwrap();
    // The power cut: the image as the device holds it now.
    let img = dev.image();
    drop(fs);
    let (r, after) = run(&img, Mode::Check);
    assert!(
        matches!(r.findings.as_slice(), [Finding::RollForward { .. }, Finding::Orphan { ino }] if *ino == g),
        "{:#?}",
        r.findings
    );
    assert_eq!((r.exit_code, after == img), (0, true));
    let (y, fixed) = run(&img, Mode::Preen);
    assert_eq!((y.exit_code, y.repaired.len()), (0, 2), "{y:#?}");
    assert_clean(&fixed);
    with_fs(&fixed, |fs| {
        assert_eq!(fs.read(f, 0, 100).unwrap(), b"fsync'd");
        assert!(fs.imap_entry(g).is_some_and(|e| !e.allocated()));
    });
}

#[test]
fn no_checkpoint_at_all_is_unmountable() {
    let (mut img, _) = build();
    let sb = sb_of(&img);
    for at in [sb.cp_a, sb.cp_b] {
        block(&mut img, at).fill(0);
    }
    let (r, _) = run(&img, Mode::Yes);
    assert!(
        matches!(r.findings.as_slice(), [Finding::Unmountable { .. }]),
        "{:#?}",
        r.findings
    );
    assert_eq!(r.exit_code, 4);
}

#[test]
fn something_else_is_an_operational_error() {
    let dev = Arc::new(MemDevice::from_image(vec![0x5a; 1 << 20]));
    assert!(fsck(
        dev,
        FsckOptions {
            mode: Mode::Check,
            force: true
        }
    )
    .is_err());
}
