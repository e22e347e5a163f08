//! The corruption sweep: a small populated image, damaged one block at a time — a flipped
//! bit, random bytes or zeros, in every kind of on-disk structure — and then mounted (read
//! only and read-write), walked (every directory, attribute, file, link and xattr), written
//! to, unmounted and checked with fsck. Nothing may panic or hang; errors must say what is
//! wrong. Beyond that, per kind of block hit:
//!
//! - a live block of any kind (every block in a unit is covered by its unit's checksum):
//!   fsck reports damage;
//! - a checkpoint region: mount falls back to the other region and sees every file as it
//!   was; fsck names the region;
//! - the backup superblock, a dead block (an overwritten copy) or a block outside any
//!   unit: mount works and every file reads back as it was; the superblocks are reported
//!   when hit;
//! - a block of the log after the checkpoint: mount works (roll-forward stops at the damage,
//!   as at a torn write).
//!
//! `LFS_CORRUPT_CASES=N` sets the number of cases per kind and image (default 12; the
//! documented long run uses 400, see docs/RELIABILITY.md), `LFS_CORRUPT_SEED` the seed.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use lfs_core::device::Device;
use lfs_core::format::inode::FileKind;
use lfs_core::format::summary::BlockKind;
use lfs_core::format::superblock::Superblock;
use lfs_core::format::{BLOCK_BYTES, BLOCK_SIZE};
use lfs_core::fs::Creds;
use lfs_core::fsck::Finding;
use lfs_core::fsck::{fsck, FsckOptions, Mode};
use lfs_core::{Fs, MountOptions};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};
/// A case that takes longer than this is a hang.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    SuperPrimary,
    SuperBackup,
    CheckpointA,
    CheckpointB,
    Summary,
    InodeBlock,
    Imap,
    Usage,
    DirData,
    FileData,
    Indirect,
    Xattr,
    Dead,
    Free,
    /// A block of a unit after the checkpoint (what roll-forward replays).
    Tail,
}

impl Kind {
    /// Blocks the filesystem needs (all covered by their unit's checksum).
    fn live(self) -> bool {
        matches!(
            self,
            Kind::Summary
                | Kind::InodeBlock
                | Kind::Imap
                | Kind::Usage
                | Kind::DirData
                | Kind::FileData
                | Kind::Indirect
                | Kind::Xattr
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    BitFlip,
    Random,
    Zeros,
}

/// A filesystem with something of everything: small and large files, a file reaching the
/// second and third indirect trees, a directory of several blocks, a symlink, a hard link,
/// xattrs (one large), and dead blocks (overwritten and deleted data).
fn populate(fs: &Fs) {
    for i in 0..40u32 {
        let a = fs
            .create(ROOT, format!("s{i}").as_bytes(), 0o644, C)
            .unwrap();
        let data: Vec<u8> = (0..i * 300).map(|k| (k * 31 + i) as u8).collect();
        fs.write(a.ino, 0, &data).unwrap();
    }
    let d = fs.mkdir(ROOT, b"many", 0o755, C).unwrap().ino;
    for i in 0..300u32 {
        let name = format!("entry-with-a-longish-name-{i:04}");
        fs.create(d, name.as_bytes(), 0o600, C).unwrap();
    }
    let big = fs.create(ROOT, b"big", 0o644, C).unwrap().ino;
    let data: Vec<u8> = (0..700_000u32).map(|k| (k % 253) as u8).collect();
    fs.write(big, 0, &data).unwrap();
    fs.checkpoint().unwrap();
    fs.write(big, 100_000, &[9u8; 50_000]).unwrap();
    let sparse = fs.create(d, b"sparse", 0o644, C).unwrap().ino;
    fs.write(sparse, 3 << 20, b"second tree").unwrap();
    fs.write(sparse, 1_100 << 20, b"third tree").unwrap();
    fs.symlink(ROOT, b"ln", b"s1", C).unwrap();
    let s2 = fs.lookup(ROOT, b"s2").unwrap().ino;
    fs.link(s2, d, b"hard").unwrap();
    let s3 = fs.lookup(ROOT, b"s3").unwrap().ino;
    fs.setxattr(s3, b"user.small", b"v", 0).unwrap();
    fs.setxattr(s3, b"user.large", &[5u8; 3000], 0).unwrap();
    fs.mkdir(d, b"sub", 0o700, C).unwrap();
    for i in 0..10u32 {
        let n = format!("gone{i}");
        let g = fs.create(ROOT, n.as_bytes(), 0o644, C).unwrap().ino;
        fs.write(g, 0, &[1u8; 9000]).unwrap();
        fs.unlink(ROOT, n.as_bytes()).unwrap();
    }
}

/// Two images: cleanly unmounted, and crashed after an fsync (a log tail to roll forward).
fn images() -> Vec<(&'static str, Vec<u8>)> {
    let dev = formatted(16 << 20);
    let d: Arc<dyn Device> = dev.clone();
    let fs = Fs::mount(d.clone(), MountOptions::default()).unwrap();
    populate(&fs);
    fs.unmount().unwrap();
    let clean = dev.image();
    let fs = Fs::mount(d, MountOptions::default()).unwrap();
    let late = fs.create(ROOT, b"late", 0o644, C).unwrap().ino;
    fs.write(late, 0, &[0x6c; 30_000]).unwrap();
    fs.unlink(ROOT, b"s5").unwrap();
    fs.fsync(late, false).unwrap();
    fs.fsyncdir(ROOT).unwrap();
    let crashed = dev.image();
    drop(fs);
    vec![("clean", clean), ("crashed", crashed)]
}

/// Every block of the image by kind (blocks of no interest left out).
fn classify(img: &[u8]) -> BTreeMap<Kind, Vec<u64>> {
    let sb = Superblock::decode(&img[..BLOCK_SIZE]).unwrap();
    let mut kinds: BTreeMap<Kind, Vec<u64>> = BTreeMap::new();
    kinds.insert(Kind::SuperPrimary, vec![0]);
    kinds.insert(Kind::SuperBackup, vec![sb.backup_addr().get()]);
    // The written part of each checkpoint region.
    for (k, base) in [(Kind::CheckpointA, sb.cp_a), (Kind::CheckpointB, sb.cp_b)] {
        let base = base.get();
        let used = (base..base + sb.cp_blocks as u64)
            .filter(|&a| block(img, a).iter().any(|&b| b != 0))
            .collect();
        kinds.insert(k, used);
    }
    let fs = Fs::mount(dev_of(img), ro()).unwrap();
    let mut live: HashMap<u64, Kind> = HashMap::new();
    let (imap, usage) = fs.table_addrs();
    live.extend(
        imap.iter()
            .filter(|a| !a.is_none())
            .map(|a| (a.get(), Kind::Imap)),
    );
    live.extend(
        usage
            .iter()
            .filter(|a| !a.is_none())
            .map(|a| (a.get(), Kind::Usage)),
    );
    let mut todo = vec![ROOT];
    let mut seen = HashSet::new();
    while let Some(ino) = todo.pop() {
        if !seen.insert(ino) {
            continue;
        }
        let info = fs.inode_info(ino).unwrap();
        live.insert(info.entry.addr.get(), Kind::InodeBlock);
        if !info.inode.xattr.is_none() {
            live.insert(info.inode.xattr.get(), Kind::Xattr);
        }
        let is_dir = fs.getattr(ino).unwrap().kind == FileKind::Directory;
        for (a, e) in info.blocks {
            let k = match e.kind {
                BlockKind::Data if is_dir => Kind::DirData,
                BlockKind::Data => Kind::FileData,
                BlockKind::Indirect => Kind::Indirect,
                BlockKind::Xattr => Kind::Xattr,
                _ => continue,
            };
            live.insert(a.get(), k);
        }
        if is_dir {
            let mut cookie = 0;
            while let Some(last) = fs.readdir(ino, cookie, 512).unwrap().last().cloned() {
                for e in fs.readdir(ino, cookie, 512).unwrap() {
                    if e.name != b"." && e.name != b".." {
                        todo.push(e.ino);
                    }
                }
                cookie = last.cookie;
            }
        }
    }
    // Units from this sequence number on are the log after the checkpoint.
    let rf = fs.mount_report().roll_forward.clone().unwrap_or_default();
    let tail_from = rf.head.2 - rf.units - rf.discarded;
    for seg in sb.segments() {
        let base = sb.seg_addr(seg).get();
        for u in fs.scan_segment(seg).units {
            if u.summary.seq >= tail_from {
                let n = u.summary.entries.len() as u64 + 1;
                let first = base + u.offset as u64;
                kinds
                    .entry(Kind::Tail)
                    .or_default()
                    .extend(first..first + n);
                continue;
            }
            let first = base + u.offset as u64 + 1;
            let payload: Vec<u64> = (first..first + u.summary.entries.len() as u64).collect();
            let any_live = payload.iter().any(|a| live.contains_key(a));
            let summary_kind = if any_live { Kind::Summary } else { Kind::Dead };
            kinds.entry(summary_kind).or_default().push(first - 1);
            for a in payload {
                let k = live.get(&a).copied().unwrap_or(Kind::Dead);
                kinds.entry(k).or_default().push(a);
            }
        }
    }
    let in_units: HashSet<u64> = kinds
        .iter()
        .filter(|(k, _)| k.live() || matches!(k, Kind::Dead | Kind::Tail))
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    // Blocks outside any unit: a sample of the segments (most are empty).
    let free: Vec<u64> = sb
        .segments()
        .flat_map(|s| {
            let b = sb.seg_addr(s).get();
            [b, b + 1, b + sb.seg_blocks as u64 - 1]
        })
        .filter(|a| !in_units.contains(a))
        .collect();
    kinds.insert(Kind::Free, free);
    fs.unmount().unwrap();
    kinds
}

fn block(img: &[u8], addr: u64) -> &[u8] {
    let o = (addr * BLOCK_BYTES) as usize;
    &img[o..o + BLOCK_SIZE]
}

/// What one damaged image did.
#[derive(Debug)]
struct Outcome {
    mount: Result<Tree, String>,
    findings: Result<Vec<Finding>, String>,
}

/// Mount it (read-only, then read-write with a write and an unmount), walk it, fsck it.
fn exercise(img: Vec<u8>, rw: bool) -> Outcome {
    let mount = match Fs::mount(dev_of(&img), ro()) {
        Ok(fs) => {
            let t = walk(&fs);
            drop(fs);
            Ok(t)
        }
        Err(e) => Err(e.to_string()),
    };
    if rw {
        if let Ok(fs) = Fs::mount(dev_of(&img), MountOptions::default()) {
            walk(&fs);
            if let Ok(a) = fs.create(ROOT, b"new-after-damage", 0o644, C) {
                let _ = fs.write(a.ino, 0, &[3u8; 20_000]);
                let _ = fs.fsync(a.ino, false);
            }
            let _ = fs.unmount();
        }
    }
    let findings = fsck(
        dev_of(&img),
        FsckOptions {
            mode: Mode::Check,
            force: true,
        },
    )
    .map(|r| r.findings)
    .map_err(|e| e.to_string());
    Outcome { mount, findings }
}

#[test]
fn corruption_sweep() {
    let cases = env_u64("LFS_CORRUPT_CASES", 12);
    let seed = env_u64("LFS_CORRUPT_SEED", 0x5eed_c0ff_ee00_0001);
    let mut failures = Vec::new();
    let mut tried = 0u64;
    let mut by_kind: BTreeMap<Kind, (u64, u64, u64)> = BTreeMap::new();
    for (name, img) in images() {
        let reference = {
            let fs = Fs::mount(dev_of(&img), ro()).unwrap();
            walk(&fs)
        };
        assert!(reference.errors.is_empty(), "{:?}", reference.errors);
        assert!(reference.nodes.len() > 300, "the walk sees the tree");
        let kinds = classify(&img);
        for (&kind, addrs) in &kinds {
            assert!(
                !addrs.is_empty() || kind == Kind::Free || (kind == Kind::Tail && name == "clean"),
                "{name}: no block of kind {kind:?} to damage"
            );
            let mut rng = Rng(seed ^ (kind as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for i in 0..cases {
                if addrs.is_empty() {
                    break;
                }
                let addr = addrs[rng.below(addrs.len() as u64) as usize];
                let damage = [Damage::BitFlip, Damage::Random, Damage::Zeros][(i % 3) as usize];
                let mut bad = img.clone();
                let o = (addr * BLOCK_BYTES) as usize;
                let b = &mut bad[o..o + BLOCK_SIZE];
                match damage {
                    Damage::BitFlip => {
                        let bit = rng.below(BLOCK_SIZE as u64 * 8);
                        b[(bit / 8) as usize] ^= 1 << (bit % 8);
                    }
                    Damage::Random => b.iter_mut().for_each(|x| *x = rng.next() as u8),
                    Damage::Zeros => b.fill(0),
                }
                if bad[o..o + BLOCK_SIZE] == img[o..o + BLOCK_SIZE] {
                    continue;
                }
                tried += 1;
                let case = format!("{name} image, {kind:?} block {addr}, {damage:?}");
                let rw = i % 2 == 1;
                let out = match guarded(&case, CASE_TIMEOUT, move || exercise(bad, rw)) {
                    Ok(o) => o,
                    Err(e) => {
                        failures.push(e);
                        continue;
                    }
                };
                let stat = by_kind.entry(kind).or_default();
                stat.0 += 1;
                stat.1 += out.mount.is_ok() as u64;
                let findings = match &out.findings {
                    Ok(f) => f.clone(),
                    Err(e) => {
                        // fsck could not run: only an unreadable device excuses that.
                        failures.push(format!("{case}: fsck failed: {e}"));
                        continue;
                    }
                };
                let damage_found = findings.iter().any(|f| f.is_damage());
                stat.2 += damage_found as u64;
                if let Err(e) = &out.mount {
                    if e.trim().is_empty() {
                        failures.push(format!("{case}: mount failed with an empty message"));
                    }
                }
                check_case(kind, &case, &out, &findings, &reference, &mut failures);
            }
        }
    }
    eprintln!("corruption sweep: {tried} damaged images (kind: tried, mounted, fsck found damage)");
    for (k, (t, m, d)) in &by_kind {
        eprintln!("  {k:?}: {t}, {m}, {d}");
    }
    assert!(tried > 100, "the sweep damaged only {tried} images");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The per-kind expectations of the module comment.
fn check_case(
    kind: Kind,
    case: &str,
    out: &Outcome,
    findings: &[Finding],
    reference: &Tree,
    failures: &mut Vec<String>,
) {
    let same = |failures: &mut Vec<String>| match &out.mount {
        Ok(t) if t == reference => {}
        Ok(t) => failures.push(format!(
            "{case}: the tree changed (errors: {:?})",
            t.errors.iter().take(3).collect::<Vec<_>>()
        )),
        Err(e) => failures.push(format!("{case}: mount failed: {e}")),
    };
    match kind {
        k if k.live() => {
            if !findings.iter().any(|f| f.is_damage()) {
                failures.push(format!("{case}: fsck found no damage ({findings:?})"));
            }
            // A damaged table block of the newest checkpoint: mount falls back to the other
            // region's checkpoint and rolls forward to the same state (when the two do not
            // share the block).
            if matches!(k, Kind::Imap | Kind::Usage) && out.mount.is_ok() {
                same(failures);
            }
        }
        Kind::CheckpointA | Kind::CheckpointB => {
            same(failures);
            let region = if kind == Kind::CheckpointA { 'A' } else { 'B' };
            let named = findings.iter().any(
                |f| matches!(f, Finding::CheckpointRegionInvalid { region: r, .. } if *r == region),
            );
            if !named {
                failures.push(format!(
                    "{case}: fsck did not name region {region}: {findings:?}"
                ));
            }
        }
        Kind::SuperPrimary | Kind::SuperBackup => {
            if kind == Kind::SuperBackup {
                same(failures);
            }
            let named = findings
                .iter()
                .any(|f| matches!(f, Finding::SuperblockInvalid { .. }));
            if !named {
                failures.push(format!(
                    "{case}: fsck did not report the superblock: {findings:?}"
                ));
            }
        }
        // Damage in the log after the checkpoint ends roll-forward there, exactly as a write
        // the crash tore would: neither mount nor fsck can tell the two apart (a known limit
        // of the format, docs/RELIABILITY.md). It must still mount.
        Kind::Tail => {
            if let Err(e) = &out.mount {
                failures.push(format!("{case}: mount failed: {e}"));
            }
        }
        // Dead and free blocks hold nothing the filesystem needs.
        _ => same(failures),
    }
}
