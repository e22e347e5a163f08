//! The crash-state explorer (our CrashMonkey): run a workload on the crash-recording device,
//! and at every persistence point (every write and every flush) build the images a power
//! cut could leave — the durable prefix, the writes in flight in order, torn, and in subsets —
//! then mount each and check it:
//!
//! - fsck-lfs -n (the library: `lfs_core::fsck`) finds no damage — crash residue (a log to
//!   roll forward, orphans, a torn checkpoint region) is allowed — and a mount succeeds;
//! - the tree is exactly the one some flush left, and no older than the last fsync that
//!   returned before the crash point. Every fsync here makes the whole filesystem durable
//!   (docs/RECOVERY.md), so this is stronger than "the fsync'd file has its content": it also
//!   says renames and link counts were recovered whole;
//! - for a sample of states, fsck-lfs -p (a read-write mount, which rolls forward and writes
//!   checkpoints, then a fresh check) exits 0, and a second mount sees the same tree.
//!
//! Workloads in the manner of CrashMonkey's ACE: every sequence of one operation, a seeded
//! sample of sequences of two and three, each operation followed by fsync, fdatasync, a
//! directory fsync or nothing; and long random workloads.
//!
//! Bounded by default. The big set:
//!   LFS_CRASH_FULL=1 cargo test --release -p lfs-tests --test crash -- --nocapture
//! prints "N crash states, N recovered, 0 violations".
#![allow(clippy::unwrap_used)]

use lfs_core::device::{CrashDevice, CrashStateOptions, Device, MemDevice};
use lfs_core::format::inode::FileKind;
use lfs_core::format::Ino;
use lfs_core::fs::SetAttr;
use lfs_core::fsck::{fsck, FsckOptions, FsckReport, Mode};
use lfs_core::{mkfs, Fs, FsError, MkfsOptions, MountOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;

use lfs_tests::engine::{C, ROOT};
const IMAGE_BYTES: u64 = 4 << 20;
const SEG_BYTES: u64 = 64 << 10;

/// What a path looks like, times left out (reads change atime; times are not the point).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File {
        perm: u32,
        nlink: u32,
        content: Vec<u8>,
        xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    },
    Dir {
        perm: u32,
        nlink: u32,
        xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    },
    Symlink(Vec<u8>),
}

type Tree = BTreeMap<String, Entry>;

fn xattrs(fs: &Fs, ino: Ino) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, FsError> {
    fs.listxattr(ino)?
        .into_iter()
        .map(|k| {
            let v = fs.getxattr(ino, &k)?;
            Ok((k, v))
        })
        .collect()
}

/// The whole tree; an error names the path that could not be read (a dangling entry, say).
fn tree(fs: &Fs) -> Result<Tree, String> {
    walk(fs).map_err(|(p, e)| format!("reading {p}: {e}"))
}

fn walk(fs: &Fs) -> Result<Tree, (String, FsError)> {
    let mut out = Tree::new();
    let mut stack = vec![(ROOT, String::new())];
    while let Some((dir, path)) = stack.pop() {
        let at = |e| (format!("{path}/"), e);
        let a = fs.getattr(dir).map_err(at)?;
        let x = xattrs(fs, dir).map_err(at)?;
        out.insert(
            format!("{path}/"),
            Entry::Dir {
                perm: a.perm,
                nlink: a.nlink,
                xattrs: x,
            },
        );
        for e in fs.readdir(dir, 0, usize::MAX).map_err(at)? {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
            match e.kind {
                FileKind::Directory => stack.push((e.ino, p)),
                FileKind::Symlink => {
                    let t = fs.readlink(e.ino).map_err(|e| (p.clone(), e))?;
                    out.insert(p, Entry::Symlink(t));
                }
                _ => {
                    let f = || -> Result<Entry, FsError> {
                        let a = fs.getattr(e.ino)?;
                        Ok(Entry::File {
                            perm: a.perm,
                            nlink: a.nlink,
                            content: fs.read(e.ino, 0, a.size as u32)?,
                            xattrs: xattrs(fs, e.ino)?,
                        })
                    };
                    let entry = f().map_err(|e| (p.clone(), e))?;
                    out.insert(p, entry);
                }
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    /// Fifty files at once: more inodes than one inode block holds, so one flush group
    /// carries several inode blocks, and a torn group would show some files and not others.
    CreateMany,
    Write,
    Append,
    Overwrite,
    Truncate,
    Link,
    Unlink,
    Rename,
    Mkdir,
    Rmdir,
    Setxattr,
    /// A cleaning pass: target 0 cleans the Full segments holding dead blocks, target 1
    /// every Full segment. It ends with checkpoints, so what came before is durable after it.
    Clean,
}
const OPS: [Op; 13] = [
    Op::Create,
    Op::CreateMany,
    Op::Write,
    Op::Append,
    Op::Overwrite,
    Op::Truncate,
    Op::Link,
    Op::Unlink,
    Op::Rename,
    Op::Mkdir,
    Op::Rmdir,
    Op::Setxattr,
    Op::Clean,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    Fsync,
    Fdatasync,
    DirFsync,
    Nothing,
}
const PERSISTS: [Persist; 4] = [
    Persist::Fsync,
    Persist::Fdatasync,
    Persist::DirFsync,
    Persist::Nothing,
];

/// One workload step: an operation on target 0 or 1, then a persistence call.
type Step = (Op, u8, Persist);

fn all_steps() -> Vec<Step> {
    let mut v = Vec::new();
    for op in OPS {
        for t in 0..2 {
            for p in PERSISTS {
                v.push((op, t, p));
            }
        }
    }
    v
}

fn resolve(fs: &Fs, path: &str) -> Option<Ino> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .try_fold(ROOT, |dir, c| {
            fs.lookup(dir, c.as_bytes()).ok().map(|a| a.ino)
        })
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The starting tree: two files, a directory holding one, an empty directory.
fn populate(fs: &Fs) {
    let a = fs.create(ROOT, b"a", 0o644, C).unwrap();
    fs.write(a.ino, 0, &pattern(8192, 1)).unwrap();
    let d = fs.mkdir(ROOT, b"d", 0o755, C).unwrap();
    let b = fs.create(d.ino, b"b", 0o600, C).unwrap();
    fs.write(b.ino, 0, &pattern(5000, 2)).unwrap();
    fs.mkdir(ROOT, b"e", 0o755, C).unwrap();
}

/// Run one step; failures (ENOENT after an unlink, ENOTEMPTY, ...) are part of the workload.
/// Returns the inode to persist and the directory it is in. A step made of several system
/// calls (CreateMany) calls `between` after each but the last: those states are as legal
/// for a crash to show as the step's end (each create is an operation of its own, and a
/// checkpoint that foreground cleaning takes mid-step makes one durable).
fn run_step(fs: &Fs, (op, t, _): Step, between: &mut dyn FnMut(&Fs)) -> (Option<Ino>, Option<Ino>) {
    let target = ["a", "d/b"][t as usize];
    let (dir, name) = split(target);
    let dir_ino = resolve(fs, dir);
    let ino = resolve(fs, target);
    let _ = (|| -> Result<(), FsError> {
        match op {
            Op::Create => {
                let parent = dir_ino.ok_or(FsError::NotFound)?;
                fs.create(parent, format!("new{t}").as_bytes(), 0o640, C)?;
            }
            Op::CreateMany => {
                let e = resolve(fs, "e").ok_or(FsError::NotFound)?;
                for i in 0..50 {
                    fs.create(e, format!("m{t}-{i}").as_bytes(), 0o644, C)?;
                    if i < 49 {
                        between(fs);
                    }
                }
            }
            Op::Write => {
                // 12 blocks: with 16-block segments the flush group spans several units.
                fs.write(ino.ok_or(FsError::NotFound)?, 16384, &pattern(48 << 10, 3))?;
            }
            Op::Append => {
                let i = ino.ok_or(FsError::NotFound)?;
                let size = fs.getattr(i)?.size;
                fs.write(i, size, &pattern(100, 4))?;
            }
            Op::Overwrite => {
                fs.write(ino.ok_or(FsError::NotFound)?, 1000, &pattern(3000, 5))?;
            }
            Op::Truncate => {
                let set = SetAttr {
                    size: Some(2000),
                    ..Default::default()
                };
                fs.setattr(ino.ok_or(FsError::NotFound)?, &set)?;
            }
            Op::Link => {
                let e = resolve(fs, "e").ok_or(FsError::NotFound)?;
                fs.link(ino.ok_or(FsError::NotFound)?, e, format!("l{t}").as_bytes())?;
            }
            Op::Unlink => fs.unlink(dir_ino.ok_or(FsError::NotFound)?, name.as_bytes())?,
            Op::Rename => {
                // t = 0: over an existing file in another directory; t = 1: to a new name.
                let (to_dir, to_name) = if t == 0 { ("d", "b") } else { ("e", "moved") };
                let to = resolve(fs, to_dir).ok_or(FsError::NotFound)?;
                let from = dir_ino.ok_or(FsError::NotFound)?;
                fs.rename(from, name.as_bytes(), to, to_name.as_bytes(), 0)?;
            }
            Op::Mkdir => {
                let e = resolve(fs, "e").ok_or(FsError::NotFound)?;
                fs.mkdir(e, format!("sub{t}").as_bytes(), 0o700, C)?;
            }
            Op::Rmdir => {
                if t == 0 {
                    fs.rmdir(ROOT, b"e")?;
                } else {
                    let e = resolve(fs, "e").ok_or(FsError::NotFound)?;
                    fs.rmdir(e, b"sub1")?;
                }
            }
            Op::Setxattr => {
                fs.setxattr(
                    ino.ok_or(FsError::NotFound)?,
                    b"user.k",
                    &pattern(100, 6),
                    0,
                )?;
            }
            Op::Clean => {
                let victims: Vec<_> = fs
                    .segment_views()
                    .iter()
                    .filter(|v| t == 1 || v.utilization() < 1.0)
                    .map(|v| v.segment)
                    .collect();
                fs.clean(&victims).expect("a cleaning pass failed");
            }
        }
        Ok(())
    })();
    // After a rename or unlink the target may be gone: persist what is there now.
    (resolve(fs, target).or(ino), resolve(fs, dir).or(dir_ino))
}

fn persist(fs: &Fs, p: Persist, ino: Option<Ino>, dir: Option<Ino>) -> bool {
    let r = match (p, ino, dir) {
        (Persist::Fsync, Some(i), _) => fs.fsync(i, false),
        (Persist::Fdatasync, Some(i), _) => fs.fsync(i, true),
        (Persist::DirFsync, _, Some(d)) => fs.fsyncdir(d),
        (Persist::Fsync | Persist::Fdatasync, None, Some(d)) => fs.fsyncdir(d),
        _ => return false,
    };
    r.is_ok()
}

#[derive(Default, Debug)]
struct Tally {
    workloads: u64,
    states: u64,
    recovered: u64,
    violations: Vec<String>,
}

/// The image after `populate`, cleanly unmounted.
fn base_image() -> Vec<u8> {
    let mem = Arc::new(MemDevice::new(IMAGE_BYTES));
    let dev: Arc<dyn Device> = mem.clone();
    let opts = MkfsOptions {
        seg_bytes: SEG_BYTES,
        ..Default::default()
    };
    mkfs(dev.clone(), &opts).unwrap();
    let fs = Fs::mount(dev, MountOptions::default()).unwrap();
    populate(&fs);
    fs.unmount().unwrap();
    mem.image()
}

/// The base image, then filled with 6 KiB files until writes fail, every other file
/// deleted: every segment half dead and no clean segment to spare, so the log reuses what a
/// cleaning pass frees right away — the case where reusing a segment before a durable
/// checkpoint records it clean would destroy what the previous checkpoint points at.
fn nearly_full_image() -> Vec<u8> {
    let mem = Arc::new(MemDevice::from_image(base_image()));
    let fs = Fs::mount(mem.clone() as Arc<dyn Device>, MountOptions::default()).unwrap();
    let fill = fs.mkdir(ROOT, b"fill", 0o755, C).unwrap().ino;
    let mut n = 0;
    while let Ok(a) = fs.create(fill, format!("f{n}").as_bytes(), 0o644, C) {
        if fs.write(a.ino, 0, &pattern(6000, n as u8)).is_err() {
            break;
        }
        n += 1;
    }
    for i in (0..n).step_by(2) {
        fs.unlink(fill, format!("f{i}").as_bytes()).unwrap();
    }
    fs.unmount().unwrap();
    mem.image()
}

fn mount_image(image: Vec<u8>, read_only: bool) -> Result<Fs, FsError> {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_image(image));
    Fs::mount(
        dev,
        MountOptions {
            read_only,
            ..Default::default()
        },
    )
}

/// Run `steps` on a crash-recording copy of `base`, then judge every crash state.
fn explore(base: &[u8], steps: &[Step], opts: &CrashStateOptions, tally: &mut Tally) {
    let name = format!("{steps:?}");
    let dev = Arc::new(CrashDevice::from_image(base.to_vec()));
    // Trees in order, each with the op index from which a crash must show it or a later
    // one: the base (durable before anything), then every fsync that returned, then the
    // unmount checkpoint. Trees in between (the end of every step, the middle of a
    // multi-call step) may be shown but are not owed: usize::MAX.
    let mut durable: Vec<(usize, Tree)> = Vec::new();
    {
        // A tiny inode cache: inodes leave memory between steps and are read back.
        let small = MountOptions {
            inode_cache: 2,
            ..Default::default()
        };
        let fs = Fs::mount(dev.clone() as Arc<dyn Device>, small).unwrap();
        durable.push((0, tree(&fs).unwrap()));
        for &s in steps {
            let (ino, dir) = run_step(&fs, s, &mut |fs| {
                durable.push((usize::MAX, tree(fs).unwrap()));
            });
            if persist(&fs, s.2, ino, dir) || s.0 == Op::Clean {
                durable.push((dev.op_count(), tree(&fs).unwrap()));
            } else {
                durable.push((usize::MAX, tree(&fs).unwrap()));
            }
        }
        let last = tree(&fs).unwrap();
        fs.unmount().unwrap();
        durable.push((dev.op_count(), last));
    }
    tally.workloads += 1;
    for at in dev.persistence_points() {
        // Trees a crash at `at` may show: the newest one made durable by then, or a later one.
        let first = durable.iter().rposition(|(op, _)| *op <= at).unwrap_or(0);
        let allowed = &durable[first..];
        let seed = tally.states;
        let _ = dev.for_each_crash_state(at, opts, seed, |state| -> Result<(), ()> {
            tally.states += 1;
            let deep = tally.states.is_multiple_of(7);
            match judge(&state.image, allowed, deep) {
                Ok(()) => tally.recovered += 1,
                Err(e) => tally
                    .violations
                    .push(format!("{name}: {}: {e}", state.description)),
            }
            Ok(())
        });
    }
}

fn fsck_image(image: Vec<u8>, mode: Mode) -> Result<FsckReport, String> {
    fsck(
        Arc::new(MemDevice::from_image(image)),
        FsckOptions { mode, force: true },
    )
    .map_err(|e| format!("fsck failed: {e}"))
}

fn judge(image: &[u8], allowed: &[(usize, Tree)], deep: bool) -> Result<(), String> {
    // fsck -n: a crash is not an error; any damage is a violation.
    let r = fsck_image(image.to_vec(), Mode::Check)?;
    if r.exit_code != 0 || r.damage().next().is_some() {
        return Err(format!("fsck -n: exit {}: {:?}", r.exit_code, r.findings));
    }
    let fs = mount_image(image.to_vec(), true).map_err(|e| format!("mount failed: {e}"))?;
    let got = tree(&fs)?;
    fs.unmount().map_err(|e| e.to_string())?;
    let Some(k) = allowed.iter().position(|(_, t)| *t == got) else {
        let want = &allowed[0].1;
        let diff: Vec<String> = got
            .iter()
            .filter(|(p, e)| want.get(*p) != Some(e))
            .map(|(p, _)| format!("{p} differs or is extra"))
            .chain(
                want.keys()
                    .filter(|p| !got.contains_key(*p))
                    .map(|p| format!("{p} missing")),
            )
            .collect();
        return Err(format!(
            "recovered tree is none of the {} allowed; against the oldest allowed: {diff:?}",
            allowed.len()
        ));
    };
    if deep {
        // fsck -p recovers through a read-write mount (roll-forward, orphans, checkpoints)
        // and checks the result afresh; the next mount must see the same tree.
        let mem = Arc::new(MemDevice::from_image(image.to_vec()));
        let r = fsck(
            mem.clone(),
            FsckOptions {
                mode: Mode::Preen,
                force: true,
            },
        )
        .map_err(|e| format!("fsck -p failed: {e}"))?;
        if r.exit_code != 0 || !r.remaining.is_empty() {
            return Err(format!("fsck -p: exit {}: {:?}", r.exit_code, r.findings));
        }
        let fs = mount_image(mem.image(), true).map_err(|e| format!("remount: {e}"))?;
        if tree(&fs)? != allowed[k].1 {
            return Err("tree changed across the recovery checkpoint".into());
        }
    }
    Ok(())
}

fn report(t: &Tally, what: &str) {
    println!(
        "crash explorer ({what}): {} workloads, {} crash states, {} recovered, {} violations",
        t.workloads,
        t.states,
        t.recovered,
        t.violations.len()
    );
    for v in t.violations.iter().take(10) {
        println!("  {v}");
    }
    assert!(t.violations.is_empty(), "{} violations", t.violations.len());
    assert_eq!(t.states, t.recovered);
}

fn full() -> bool {
    std::env::var_os("LFS_CRASH_FULL").is_some()
}

#[test]
fn every_single_operation() {
    let base = base_image();
    let mut t = Tally::default();
    let opts = CrashStateOptions {
        max_subsets: 4,
        max_torn: 2,
    };
    for s in all_steps() {
        explore(&base, &[s], &opts, &mut t);
    }
    report(&t, "one operation");
}

#[test]
fn sequences_of_two_and_three() {
    let base = base_image();
    let steps = all_steps();
    let mut t = Tally::default();
    let mut rng = SmallRng::seed_from_u64(42);
    let opts = CrashStateOptions {
        max_subsets: 4,
        max_torn: 2,
    };
    let (twos, threes) = if full() { (3000, 3000) } else { (40, 25) };
    for i in 0..twos + threes {
        let len = if i < twos { 2 } else { 3 };
        let w: Vec<Step> = (0..len)
            .map(|_| steps[rng.gen_range(0..steps.len())])
            .collect();
        explore(&base, &w, &opts, &mut t);
    }
    report(&t, "two and three operations");
}

#[test]
fn cleaning_a_nearly_full_disk() {
    let base = nearly_full_image();
    let mut t = Tally::default();
    let opts = CrashStateOptions {
        max_subsets: 4,
        max_torn: 2,
    };
    let then = [
        (Op::Overwrite, 0, Persist::Fsync),
        (Op::CreateMany, 0, Persist::Fsync),
        (Op::Clean, 0, Persist::Nothing),
        (Op::Write, 1, Persist::Fsync),
    ];
    for first in [
        (Op::Clean, 0, Persist::Nothing),
        (Op::Clean, 1, Persist::Nothing),
    ] {
        for next in then {
            explore(&base, &[first, next], &opts, &mut t);
        }
    }
    report(&t, "cleaning a nearly full disk");
}

#[test]
fn long_random_workloads() {
    let base = base_image();
    let steps = all_steps();
    let mut t = Tally::default();
    let opts = CrashStateOptions::default();
    let (n, len) = if full() { (200, 40) } else { (4, 16) };
    for seed in 0..n {
        let mut rng = SmallRng::seed_from_u64(1000 + seed);
        let w: Vec<Step> = (0..len)
            .map(|_| steps[rng.gen_range(0..steps.len())])
            .collect();
        explore(&base, &w, &opts, &mut t);
    }
    report(&t, "long random workloads");
}
